package spec

// MaxRequestIDLen bounds an idempotency key, which the cluster state keeps
// for a day.
const MaxRequestIDLen = 128

// RequestIDField is how errors name an idempotency key: the
// Idempotency-Key header on REST and the classic /spawn, request_id in a
// Connect spawn.
const RequestIDField = "request_id"

// ParseRequestID checks an idempotency key: 1 to MaxRequestIDLen
// characters from A-Z, a-z, 0-9 and "-_.:" (a UUID fits, as does any
// client's own counter), so it is safe in logs and in the cluster state
// as it is. "" is no key.
func ParseRequestID(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > MaxRequestIDLen {
		return "", fieldErr(RequestIDField, "%d bytes; at most %d", len(s), MaxRequestIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return "", fieldErr(RequestIDField, "character %q at %d; use letters, digits and -_.: (a UUID, say)", c, i)
		}
	}
	return s, nil
}
