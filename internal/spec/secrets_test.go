package spec

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSpecSecrets(t *testing.T) {
	in := Input{Image: "alpine:3.20", Secrets: map[string]string{"DB_PASSWORD": "db-password", "API_KEY": "api.key_1"}}
	s, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Secrets) != 2 || s.Secrets["DB_PASSWORD"] != "db-password" {
		t.Fatalf("secrets %v", s.Secrets)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("a built spec with secrets fails Check: %v", err)
	}
	if names := s.SecretNames(); len(names) != 2 || names[0] != "api.key_1" {
		t.Errorf("SecretNames %v", names)
	}
	changed := s
	changed.Secrets = map[string]string{"DB_PASSWORD": "../etc"}
	if err := changed.Check(); err == nil {
		t.Error("Check passed a spec with a bad secret name")
	}

	many := map[string]string{}
	for i := range MaxSecrets + 1 {
		many[fmt.Sprintf("K%d", i)] = "s"
	}
	for name, bad := range map[string]Input{
		"bad env name":   {Image: "alpine:3.20", Secrets: map[string]string{"1X": "s"}},
		"bad secret":     {Image: "alpine:3.20", Secrets: map[string]string{"X": "Upper"}},
		"path secret":    {Image: "alpine:3.20", Secrets: map[string]string{"X": "../x"}},
		"long secret":    {Image: "alpine:3.20", Secrets: map[string]string{"X": strings.Repeat("a", MaxSecretNameLen+1)}},
		"set by env too": {Image: "alpine:3.20", Env: []string{"X=1"}, Secrets: map[string]string{"X": "s"}},
		"gvisor":         {Image: "alpine:3.20", Isolation: "gvisor", Secrets: map[string]string{"X": "s"}},
		"too many":       {Image: "alpine:3.20", Secrets: many},
	} {
		_, err := Build(bad)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "secrets" {
			t.Errorf("%s: %v, want a FieldError on secrets", name, err)
		}
	}
	for _, v := range [][]byte{nil, make([]byte, MaxSecretBytes+1), []byte("a\x00b")} {
		if ValidateSecretValue(v) == nil {
			t.Errorf("ValidateSecretValue accepted %d bytes", len(v))
		}
	}
	if ValidateSecretValue([]byte("ok\n")) != nil {
		t.Error("ValidateSecretValue refused a plain value")
	}
	if _, _, err := ParseSecretFlag("NOEQUALS"); err == nil {
		t.Error("ParseSecretFlag accepted a flag without =")
	}
	if e, n, err := ParseSecretFlag("A=b"); err != nil || e != "A" || n != "b" {
		t.Errorf("ParseSecretFlag(A=b) = %q %q %v", e, n, err)
	}
	h, err := ParseHAC([]byte("[hardware]\nref = \"alpine:3.20\"\n[hardware.secrets]\nDB = \"db\"\n"))
	if err != nil || h.Secrets["DB"] != "db" {
		t.Errorf("hac.toml secrets: %v %v", h.Secrets, err)
	}
}
