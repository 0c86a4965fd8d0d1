package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestDecodeSpawnJSONRefusesLooseKeys(t *testing.T) {
	cases := []struct {
		name, body, field string
	}{
		{"wrong case", `{"IMAGE_REF":"nginx:1"}`, "IMAGE_REF"},
		{"unknown", `{"image_ref":"nginx:1","privileged":true}`, "privileged"},
		{"duplicate top-level key", `{"image_ref":"nginx:1","image_ref":"evil:1"}`, "image_ref"},
		{"duplicate port key", `{"image_ref":"nginx:1","ports":{"80":8080,"80":9090}}`, "ports.80"},
		{"nested too deep", `{"image_ref":"nginx:1","env":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "env"},
		{"trailing value", `{"image_ref":"nginx:1"} {}`, "body"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeSpawnJSON(strings.NewReader(c.body))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field {
				t.Fatalf("DecodeSpawnJSON(%s) = %v, want a FieldError on %q", c.body, err, c.field)
			}
		})
	}
	if _, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref":"nginx:1","ports":{"80":8080,"443":8443}}`)); err != nil {
		t.Fatalf("a valid body is refused: %v", err)
	}
}

func TestValidateImageRefIsStrict(t *testing.T) {
	bad := []string{
		"file:///etc/passwd",
		"https://registry.example/web:1",
		"127.0.0.1:5000/../../etc:1",
		"127.0.0.1:5000/a/./b:1",
		"registry.example//web:1",
		"registry.example:0/web:1",
		"registry.example:99999/web:1",
		"reg_istry.example/web:1",
		"-bad.example/web:1",
		"[::1/web:1",
		"web\x00:1",
		"web:-x",
		"web@sha256:short",
	}
	for _, ref := range bad {
		if _, err := ValidateImageRef(ref); err == nil {
			t.Errorf("ValidateImageRef(%q) passed; want an error", ref)
		}
	}
	good := []string{
		"nginx", "nginx:1.27", "library/nginx:latest", "localhost:5000/web:1",
		"127.0.0.1:5000/team/web:v1.2", "[::1]:5000/web:1", "registry.example/a_b/c-d/e.f:1",
		"web@sha256:" + strings.Repeat("a", 64),
	}
	for _, ref := range good {
		if _, err := ValidateImageRef(ref); err != nil {
			t.Errorf("ValidateImageRef(%q) = %v; want it accepted", ref, err)
		}
	}
}
