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
		"web:.x",
		"Example.com", // one part that is a host but not a repository
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

func TestCheckImageRefSyntax(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if len(long) != maxHostLen {
		t.Fatalf("the long host is %d bytes", len(long))
	}
	good := []string{
		"a_b/web:1",     // a first part with no dot, port or bracket is a path
		"example.com",   // one part is a repository, whatever it looks like
		long + "/web:1", // a host name of exactly 253 bytes
		"[::1]/web", "reg.example:65535/web:1", "reg.example:1/web",
	}
	for _, ref := range good {
		if err := checkImageRefSyntax(ref); err != nil {
			t.Errorf("checkImageRefSyntax(%q) = %v; want it accepted", ref, err)
		}
	}
	bad := []string{
		"we b:1", "web\x7f:1", "web\x80:1",
		long + "e/web:1",    // 254 bytes
		"[::1]x/web:1",      // text after the bracket
		"[::1:5000/web:1",   // unclosed
		"[127.0.0.1]/web:1", // IPv4 in brackets
		"[::1]:/web:1",      // empty port
		"reg.example:080/x", // leading zero
		"reg.example:65536/x", "reg.example:-1/x", "reg.example:/x",
		"@sha256:" + strings.Repeat("a", 64),
		"web@sha256:" + strings.Repeat("a", 31),
		"web:" + strings.Repeat("t", 129),
		"web:.x",
		"Example.com", // one part that is a host but not a repository
	}
	for _, ref := range bad {
		if err := checkImageRefSyntax(ref); err == nil {
			t.Errorf("checkImageRefSyntax(%q) passed; want an error", ref)
		}
	}
}

func TestCheckStrictJSONDepthAndPaths(t *testing.T) {
	nest := func(open, close string, n int) string {
		return `{"x":` + strings.Repeat(open, n) + "1" + strings.Repeat(close, n) + `}`
	}
	// The body is depth 0, so "x" may hold MaxJSONDepth-1 levels.
	for _, kind := range [][2]string{{"[", "]"}, {`{"k":`, "}"}} {
		if err := CheckStrictJSON([]byte(nest(kind[0], kind[1], MaxJSONDepth-1)), nil); err != nil {
			t.Errorf("%d levels of %s: %v", MaxJSONDepth-1, kind[0], err)
		}
		err := CheckStrictJSON([]byte(nest(kind[0], kind[1], MaxJSONDepth)), nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "x" {
			t.Errorf("%d levels of %s: %v; want an error on x", MaxJSONDepth, kind[0], err)
		}
	}
	for body, field := range map[string]string{
		`{"x":[{"a":1,"a":2}]}`:         "x[0].a",
		`{"x":[{"a":1},{"b":1,"b":2}]}`: "x[1].b",
		`{"x":{"y":{"z":1,"z":1}}}`:     "x.y.z",
		`[1,[2,{"q":1,"q":2}]]`:         "[1][1].q",
		`{"a":1} 2`:                     "body",
		`{"a":`:                         "body",
		`{"a" 1}`:                       "body",
	} {
		err := CheckStrictJSON([]byte(body), nil)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("CheckStrictJSON(%s) = %v; want an error on %q", body, err, field)
		}
	}
	if err := CheckStrictJSON([]byte(`{"Image_Ref":1}`), []string{"image_ref"}); err == nil || !strings.Contains(err.Error(), `"image_ref"`) {
		t.Errorf("a key in another case: %v; want it named with the right spelling", err)
	}
	if err := CheckStrictJSON([]byte(`{"image_ref":1,"other":{"image_ref":1}}`), []string{"image_ref", "other"}); err != nil {
		t.Errorf("known keys are checked at the top level only: %v", err)
	}
}

func TestCheckHostHeader(t *testing.T) {
	for _, h := range []string{"", "example.com", "example.com.", "example.com:8000", "example.com.:8000", "10.0.0.1", "10.0.0.1:1", "[::1]", "[::1]:65535", "localhost"} {
		if err := CheckHostHeader(h); err != nil {
			t.Errorf("CheckHostHeader(%q) = %v; want it accepted", h, err)
		}
	}
	for _, h := range []string{"[::1", "[::1]x", "[zz]:80", "a b", "a\x01b", "ex_ample.com", "x:0", "x:99999999999999999999", "x:", "::1", "a..b", "-a.com", ".", "x:80:80"} {
		err := CheckHostHeader(h)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "Host" {
			t.Errorf("CheckHostHeader(%q) = %v; want an error on Host", h, err)
		}
	}
}
