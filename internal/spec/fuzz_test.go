package spec

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzDecodeSpawnJSON feeds arbitrary bodies to the /spawn decoder: it
// must never panic, accept only valid JSON, and hand on only specs that
// pass Spec.Check.
func FuzzDecodeSpawnJSON(f *testing.F) {
	for _, s := range []string{
		`{"image_ref":"nginx:1"}`,
		`{"image_ref":"nginx:1","cores":0.5,"memory":64,"ports":{"80":8080,"tcp:5432":5432},"env":["A=b"],"args":["-x"],"isolation":"gvisor","tty":true,"dry_run":true}`,
		`{"IMAGE_REF":"nginx:1"}`,
		`{"image_ref":"nginx:1","image_ref":"x:1"}`,
		`{"image_ref":"127.0.0.1:5000/../../etc:1"}`,
		`{"image_ref":"nginx","env":[[[[[]]]]]}`,
		`{"image_ref":"nginx","ports":{"80":1,"http:80":2}}`,
		`{"image_ref":"nginx","cores":1e400}`,
		`[]`, `null`, ``, `{"a":}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeSpawnJSON(strings.NewReader(string(data)))
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("error %v is %T, not a *FieldError", err, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err := req.Spec.Check(); err != nil {
			t.Fatalf("accepted %q into a spec that fails Check: %v", data, err)
		}
	})
}

// FuzzParseHAC does the same for hac.toml files.
func FuzzParseHAC(f *testing.F) {
	for _, s := range []string{
		"[hardware]\nref = \"nginx:1\"\ncores = 1\nmemory = 256\n",
		"[spacecore]\nname = \"x\"\n[hardware]\nref = \"nginx:1\"\nprovider = \"qemu\"\nmemory = 256\nports = { \"80\" = 8080 }\nenv = [\"A=b\"]\n",
		"[hardware]\nref = \"file:///etc/passwd\"\n",
		"[hardware]\nREF = \"nginx\"\n",
		"[hardware]\nref = \"nginx\"\nref = \"x\"\n",
		"a = [[[[[[[[[[1]]]]]]]]]]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseHAC(data)
		if err != nil {
			return
		}
		if err := s.Check(); err != nil {
			t.Fatalf("accepted %q into a spec that fails Check: %v", data, err)
		}
	})
}

// FuzzValidateImageRef checks that an accepted ref parses as a reference,
// has no scheme and no "." or ".." path segment, and is within the length
// limit: nothing a registry path could be walked with.
func FuzzValidateImageRef(f *testing.F) {
	for _, s := range []string{
		"nginx", "nginx:1.27", "library/nginx:latest", "localhost:5000/web:1", "[::1]:5000/web:1",
		"web@sha256:" + strings.Repeat("a", 64), "file:///etc/passwd", "127.0.0.1:5000/../../etc:1",
		"reg.example/a/./b", "reg.example:0/x", "a//b", "%2e%2e/x", "UPPER/case",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		got, err := ValidateImageRef(ref)
		if err != nil {
			return
		}
		if len(got) > 512 || strings.Contains(got, "://") {
			t.Fatalf("accepted %q", got)
		}
		if _, err := name.ParseReference(got); err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", got, err)
		}
		path := got
		if i := strings.IndexByte(path, '@'); i >= 0 {
			path = path[:i]
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, "..:") {
				t.Fatalf("accepted %q with path segment %q", got, seg)
			}
		}
	})
}
