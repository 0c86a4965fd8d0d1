package server

import (
	"net/http"
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
		if spec.CheckHostHeader(r.Host) != nil {
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
		r.Body = http.MaxBytesReader(w, r.Body, maxWireBody)
		next.ServeHTTP(w, r)
	})
}
