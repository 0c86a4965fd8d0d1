package server

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// maxWireBody bounds the bytes any call may send before it is decoded:
// spec.MaxBodyBytes plus room for the framing of Connect, gRPC and
// gRPC-Web envelopes. Sizes after decompression are held by the decoders
// themselves (spec.DecodeJSON, connect's ReadMaxBytes).
const maxWireBody = spec.MaxBodyBytes + 64<<10

// connectPrefix starts every Connect, gRPC and gRPC-Web route.
const connectPrefix = "/hypercore.v1."

// boundBodies caps every request body at maxWireBody and refuses a
// compressed body on the REST and classic routes, which read JSON as sent:
// only the Connect, gRPC and gRPC-Web routes decompress, and count the
// decompressed size.
func boundBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !validHost(r.Host) {
			writeError(w, http.StatusBadRequest, "the Host header is not a host name or IP address with an optional port", "Host")
			return
		}
		if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") && !strings.HasPrefix(r.URL.Path, connectPrefix) {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Encoding "+ce+" is not accepted on this route; send the JSON body uncompressed (at most 1 MiB)", "body")
			return
		}
		if r.ContentLength > maxWireBody {
			writeError(w, http.StatusRequestEntityTooLarge, "the body is larger than 1 MiB", "body")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, maxWireBody)
		}
		next.ServeHTTP(w, r)
	})
}

// validHost reports whether h is empty (HTTP/1.0) or host[:port] with a
// host name of letters, digits, '-', '_' and '.', or an IP address (IPv6 in
// brackets), and a port 1-65535. net/http lets through some Host values
// that no client sends, such as "[::1" or an overlong port.
func validHost(h string) bool {
	if h == "" {
		return true
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") || strings.Count(h, ":") == 1 {
		var err error
		if host, port, err = net.SplitHostPort(h); err != nil {
			if !strings.HasPrefix(h, "[") || !strings.HasSuffix(h, "]") {
				return false
			}
			host, port = h[1:len(h)-1], ""
		}
		if strings.HasPrefix(h, "[") && net.ParseIP(host) == nil {
			return false
		}
	}
	if port != "" || strings.HasSuffix(h, ":") {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return false
		}
	}
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}
