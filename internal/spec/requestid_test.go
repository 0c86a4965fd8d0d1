package spec

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRequestID(t *testing.T) {
	for _, ok := range []string{"", "a", "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70", "job:42.retry_1", strings.Repeat("k", MaxRequestIDLen)} {
		if got, err := ParseRequestID(ok); err != nil || got != ok {
			t.Errorf("ParseRequestID(%q) = %q, %v; want it accepted", ok, got, err)
		}
	}
	for _, bad := range []string{strings.Repeat("k", MaxRequestIDLen+1), "a b", "a/b", "../x", "x\x00", "é", "a\nb"} {
		_, err := ParseRequestID(bad)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != RequestIDField {
			t.Errorf("ParseRequestID(%q) = %v; want a FieldError naming %s", bad, err, RequestIDField)
		}
	}
}
