package server

import (
	"errors"
	"io"
	"net/http"

	"github.com/hypercore-dev/hypercore/internal/cluster/sealed"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// SecretBackend is a Backend that keeps sealed secrets. The API serves
// /v1/secrets only when its Backend is one.
type SecretBackend interface {
	// SetSecret seals and stores value under name, replacing it.
	SetSecret(name string, value []byte) error
	// Secrets lists the secrets, names and times only.
	Secrets() []sealed.Info
	// RemoveSecret removes a secret.
	RemoveSecret(name string) error
}

// secretRoutes serves the secrets:
//   - PUT /v1/secrets/{name} with the raw value as the body;
//   - GET /v1/secrets: names and times, never values;
//   - DELETE /v1/secrets/{name}.
//
// No answer and no log line holds a value.
func (s *Server) secretRoutes(mux *http.ServeMux) {
	sb, ok := s.b.(SecretBackend)
	if !ok {
		return
	}
	mux.HandleFunc("PUT /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := spec.ValidateSecretName(name); err != nil {
			s.fail(w, err)
			return
		}
		value, err := io.ReadAll(http.MaxBytesReader(w, r.Body, spec.MaxSecretBytes+1))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, &spec.FieldError{Field: "value", Msg: "is larger than the most a secret may hold"})
			return
		}
		if err != nil {
			s.fail(w, &spec.FieldError{Field: "value", Msg: "could not be read: " + err.Error()})
			return
		}
		if err := spec.ValidateSecretValue(value); err != nil {
			s.fail(w, err)
			return
		}
		if err := sb.SetSecret(name, value); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": "set"})
	})
	mux.HandleFunc("GET /v1/secrets", func(w http.ResponseWriter, r *http.Request) {
		list := sb.Secrets()
		if list == nil {
			list = []sealed.Info{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"secrets": list})
	})
	mux.HandleFunc("DELETE /v1/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := spec.ValidateSecretName(name); err != nil {
			s.fail(w, err)
			return
		}
		if err := sb.RemoveSecret(name); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": "removed"})
	})
}
