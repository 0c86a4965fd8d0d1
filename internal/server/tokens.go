package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/hypercore-dev/hypercore/internal/apitoken"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// tokenJSON is a token as the API shows it: never its secret or hash.
type tokenJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Scope     string    `json:"scope"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Expired   bool      `json:"expired,omitempty"`
	// Token is the secret, in the answer to create only.
	Token string `json:"token,omitempty"`
}

func toTokenJSON(t apitoken.Token, now time.Time) tokenJSON {
	return tokenJSON{ID: t.ID, Name: t.Name, Scope: string(t.Scope), CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Expired: t.Expired(now)}
}

// tokenRequest is the body of POST /v1/tokens.
type tokenRequest struct {
	Scope string `json:"scope"`
	Name  string `json:"name"`
	// TTL is a duration ("12h") or days ("30d"); empty is forever.
	TTL string `json:"ttl"`
}

// tokenRoutes serves the admin-only token management: create, list and
// revoke.
func (s *Server) tokenRoutes(mux *http.ServeMux) {
	have := func(w http.ResponseWriter) bool {
		if s.opts.Tokens == nil {
			writeError(w, http.StatusNotFound, "this node keeps no scoped tokens", "")
			return false
		}
		return true
	}
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		if !have(w) {
			return
		}
		var in tokenRequest
		if err := spec.DecodeJSON(http.MaxBytesReader(w, r.Body, spec.MaxBodyBytes+1), &in); err != nil {
			s.fail(w, err)
			return
		}
		scope, err := apitoken.ParseScope(in.Scope)
		if err != nil {
			writeError(w, http.StatusBadRequest, "scope: "+err.Error(), "scope")
			return
		}
		ttl, err := apitoken.ParseTTL(in.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), "ttl")
			return
		}
		now := time.Now()
		t, secret, err := apitoken.New(scope, in.Name, ttl, now)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), "name")
			return
		}
		if err := s.opts.Tokens.CreateToken(t); err != nil {
			s.fail(w, err)
			return
		}
		s.log.Info("API token created", "id", t.ID, "name", t.Name, "scope", t.Scope, "expires", t.ExpiresAt)
		out := toTokenJSON(t, now)
		out.Token = secret
		writeJSON(w, http.StatusCreated, out)
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		if !have(w) {
			return
		}
		now := time.Now()
		list := s.opts.Tokens.Tokens()
		out := make([]tokenJSON, 0, len(list))
		for _, t := range list {
			out = append(out, toTokenJSON(t, now))
		}
		writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
	})
	mux.HandleFunc("DELETE /v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !have(w) {
			return
		}
		id := r.PathValue("id")
		if err := apitoken.CheckID(id); err != nil {
			writeError(w, http.StatusBadRequest, "id: "+err.Error(), "id")
			return
		}
		if err := s.opts.Tokens.RevokeToken(id); err != nil {
			if errors.Is(err, apitoken.ErrNotFound) {
				writeError(w, http.StatusNotFound, "no API token has id "+id+"; 'hypercore token list' shows them", "id")
				return
			}
			s.fail(w, err)
			return
		}
		s.log.Info("API token revoked", "id", id)
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "revoked": true})
	})
}
