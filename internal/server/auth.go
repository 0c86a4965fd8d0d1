package server

import (
	"context"
	"crypto/subtle"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/apitoken"
)

// TokenStore keeps the API's scoped tokens: the cluster state, on every
// node alike. Token reads this node's copy, so a revocation holds here as
// soon as this node applies it.
type TokenStore interface {
	// CreateToken stores a new token's record.
	CreateToken(t apitoken.Token) error
	// RevokeToken deletes a token; apitoken.ErrNotFound if there is none.
	RevokeToken(id string) error
	// Tokens lists the records, oldest first.
	Tokens() []apitoken.Token
	// Token returns one record by id.
	Token(id string) (apitoken.Token, bool)
}

// Failed attempts are limited per client address: a bucket of
// authBurst (Options.FailedAuthBurst) failures that refills one every
// authRefill. An address whose
// bucket is empty gets 429 before its token is looked at.
const (
	authBurst     = 10
	authRefill    = time.Second
	authMaxClient = 4096 // addresses tracked at once
)

// scopeKey carries the caller's scope in a request's context.
type scopeKey struct{}

// callerScope is the scope the call was authenticated with.
func callerScope(ctx context.Context) apitoken.Scope {
	s, _ := ctx.Value(scopeKey{}).(apitoken.Scope)
	return s
}

// auth lets a call through with the admin token or a scoped token whose
// scope covers it: 401 for a token that is missing, wrong, expired or
// revoked; 403 naming the scope needed; 429 for an address that failed
// too often.
func (s *Server) auth(next http.Handler) http.Handler {
	burst := float64(s.opts.FailedAuthBurst)
	if burst <= 0 {
		burst = authBurst
	}
	lim := &failLimiter{clients: map[string]*bucket{}, burst: burst}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := clientAddr(r)
		if wait := lim.blocked(client, time.Now()); wait > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
			writeError(w, http.StatusTooManyRequests, "too many failed attempts with a wrong API token from this address; wait and try again with the right one", "")
			return
		}
		scope, why := s.authenticate(r.Header.Get("Authorization"), time.Now())
		if scope == "" {
			lim.fail(client, time.Now())
			w.Header().Set("WWW-Authenticate", `Bearer realm="hypercore"`)
			writeError(w, http.StatusUnauthorized, why+": send the header 'Authorization: Bearer <token>'; a node's admin token is the file api-token in its data dir (the CLI reads it from there, or from HYPERCORE_TOKEN or --token), and 'hypercore token create' makes scoped ones", "")
			return
		}
		if need := requiredScope(r); !scope.Allows(need) {
			writeError(w, http.StatusForbidden, "this token has scope "+string(scope)+"; "+r.Method+" "+r.URL.Path+" needs scope "+string(need)+" (make one with 'hypercore token create --scope "+string(need)+"')", "scope")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scopeKey{}, scope)))
	})
}

// authenticate returns the scope of the credentials in an Authorization
// header value, or "" and why not. The scheme is matched without regard
// to case (RFC 9110, 11.1).
func (s *Server) authenticate(header string, now time.Time) (apitoken.Scope, string) {
	scheme, cred, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", "missing API token"
	}
	cred = strings.TrimLeft(cred, " ")
	if cred == "" {
		return "", "missing API token"
	}
	if s.opts.Token != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(s.opts.Token)) == 1 {
		return apitoken.ScopeAdmin, ""
	}
	id, secret, ok := apitoken.Split(cred)
	if !ok || s.opts.Tokens == nil {
		return "", "wrong API token"
	}
	t, found := s.opts.Tokens.Token(id)
	if !found || !t.Matches(secret) {
		return "", "wrong or revoked API token"
	}
	if t.Expired(now) {
		return "", "expired API token"
	}
	return t.Scope, ""
}

// requiredScope is the scope a call needs. Reads need read; anything that
// changes workloads or images needs deploy; tokens, pruning and any route
// not named here need admin, so a new route is closed until it is placed.
func requiredScope(r *http.Request) apitoken.Scope {
	p := r.URL.Path
	switch p {
	case hypercorev1connect.WorkloadServiceGetProcedure, hypercorev1connect.WorkloadServiceListProcedure,
		hypercorev1connect.WorkloadServiceLogsProcedure, hypercorev1connect.NodeServiceInfoProcedure,
		hypercorev1connect.VolumeServiceListVolumesProcedure, hypercorev1connect.VolumeServiceGetVolumeProcedure:
		return apitoken.ScopeRead
	case hypercorev1connect.WorkloadServiceSpawnProcedure, hypercorev1connect.WorkloadServiceStopProcedure,
		hypercorev1connect.WorkloadServiceRemoveProcedure, hypercorev1connect.WorkloadServicePullProcedure,
		hypercorev1connect.WorkloadServiceStartProcedure,
		hypercorev1connect.VolumeServiceCreateVolumeProcedure, hypercorev1connect.VolumeServiceRemoveVolumeProcedure:
		return apitoken.ScopeDeploy
	}
	if strings.HasPrefix(p, connectPrefix) || p == "/v1/tokens" || strings.HasPrefix(p, "/v1/tokens/") {
		return apitoken.ScopeAdmin
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return apitoken.ScopeRead
	}
	if p == "/spawn" || p == "/stop" || p == "/v1/workloads" || strings.HasPrefix(p, "/v1/workloads/") ||
		p == "/v1/volumes" || strings.HasPrefix(p, "/v1/volumes/") {
		return apitoken.ScopeDeploy
	}
	return apitoken.ScopeAdmin
}

// clientAddr is the caller's IP, without the port, which changes with
// every connection.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// failLimiter counts failed attempts per client address.
type failLimiter struct {
	mu      sync.Mutex
	clients map[string]*bucket
	burst   float64
}

// bucket holds the failures an address may still make, as of last.
type bucket struct {
	left float64
	last time.Time
}

func (b *bucket) refill(now time.Time, burst float64) {
	b.left += float64(now.Sub(b.last)) / float64(authRefill)
	if b.left > burst {
		b.left = burst
	}
	b.last = now
}

// blocked returns how long client must wait, or 0.
func (l *failLimiter) blocked(client string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[client]
	if b == nil {
		return 0
	}
	b.refill(now, l.burst)
	if b.left >= 1 {
		return 0
	}
	return time.Duration((1 - b.left) * float64(authRefill))
}

// fail takes one failure from client's bucket.
func (l *failLimiter) fail(client string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[client]
	if b == nil {
		if len(l.clients) >= authMaxClient {
			// Forget the addresses that have recovered; if none has,
			// the newcomers share one bucket.
			for k, v := range l.clients {
				if v.refill(now, l.burst); v.left >= l.burst {
					delete(l.clients, k)
				}
			}
			if len(l.clients) >= authMaxClient {
				client = "overflow"
				b = l.clients[client]
			}
		}
		if b == nil {
			b = &bucket{left: l.burst, last: now}
			l.clients[client] = b
		}
	}
	b.refill(now, l.burst)
	if b.left > 0 {
		b.left--
	}
}
