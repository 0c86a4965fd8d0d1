// Package server is hypercore's API: Connect/gRPC from the proto, REST
// routes, and the classic /spawn API's JSON routes, all behind one bearer
// token. It is the edge: every input is validated here through
// internal/spec (specs by spec.Build, ids by spec.ParseID, once), and what
// goes on to the Backend is typed. It serves a Backend and knows nothing
// of the cluster behind it, which does not import it either.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/apitoken"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Backend is what the API serves: the cluster, as seen from the node that
// answers (a single node is a cluster of one). Its arguments are already
// valid, so it need not check them again; any node answers for every
// workload, and reaching the node that hosts one (for Stop, Logs, Exec,
// Attach...) is the Backend's job, not the API's.
//
// Errors are told apart with errors.Is: workload.ErrNotFound (or
// driver.ErrNotFound) for an unknown workload, workload.ErrNoCapacity when
// nothing has room, workload.ErrUnsupported for an isolation or feature no
// node offers, workload.ErrUnreachable when the node a call needs is down
// for now, image.ErrNotFound and image.ErrRegistry for pulls, and
// *spec.FieldError for input it refuses; anything else is an internal
// error.
type Backend interface {
	// Spawn places a workload and starts it on the chosen node; with
	// DryRun it only places it, and the answer names the node with no id.
	Spawn(ctx context.Context, req spec.SpawnRequest) (workload.Workload, error)
	// Get returns one workload: its allocation joined with what its node
	// last reported.
	Get(id spec.ID) (workload.Workload, error)
	// List returns every workload, oldest first.
	List() ([]workload.Workload, error)
	// Stop stops a workload, waiting up to timeout after SIGTERM (0: the
	// node's default), and keeps its record.
	Stop(ctx context.Context, id spec.ID, timeout time.Duration) (workload.Workload, error)
	// Start runs a stopped or exited workload again with its spec, on
	// its node; one that runs is answered as it is.
	Start(ctx context.Context, id spec.ID) (workload.Workload, error)
	// Remove kills a workload at once if it runs and deletes it.
	// (Named volumes: see VolumeBackend.)
	Remove(ctx context.Context, id spec.ID) error
	// Logs opens a workload's output, following it with opts.Follow.
	Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error)
	// Exec runs a process in a workload with cfg's IO and returns its
	// exit code.
	Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error)
	// Attach connects stdio to a workload's main process until it ends
	// or ctx does.
	Attach(ctx context.Context, id spec.ID, stdio driver.IO) error
	// Pull fetches an image into the answering node's store.
	Pull(ctx context.Context, ref string, progress func(image.Progress)) (*image.Image, error)
	// PruneImages deletes the images no workload on the answering node uses.
	PruneImages(ctx context.Context) (image.GCResult, error)
	// Info describes the answering node, APIAddr included.
	Info() nodeinfo.Info
	// Members lists the cluster's nodes, sorted by name; nil when the
	// Backend has no membership to show (GET /v1/nodes then answers 404).
	Members() []nodeinfo.Member
	// URL is the workload's public address, <id>.<base-domain>.
	URL(id spec.ID) string
	VolumeBackend
}

// VolumeBackend manages named volumes. Errors: volume.ErrNotFound,
// volume.ErrExists, volume.ErrInUse (removing one a workload mounts),
// *spec.FieldError.
type VolumeBackend interface {
	// CreateVolume makes an empty volume of sizeMiB on the answering node.
	CreateVolume(ctx context.Context, name string, sizeMiB int64) (volume.Info, error)
	// Volume returns one volume.
	Volume(name string) (volume.Info, error)
	// Volumes returns every volume, by name.
	Volumes() ([]volume.Info, error)
	// RemoveVolume deletes a volume and its data.
	RemoveVolume(ctx context.Context, name string) error
}

// Options configure the API.
type Options struct {
	// Token is the node's admin token (the api-token file): it may make
	// every call.
	Token string
	// Tokens keeps the scoped tokens; nil accepts only Token.
	Tokens TokenStore
	// FailedAuthBurst is how many failed attempts one client address may
	// make in a row before it gets 429; it earns one back a second. 0 is
	// 10.
	FailedAuthBurst int
	// Version is the daemon's version, as NodeService.Info answers it.
	Version string
	// Log gets the calls that failed inside; nil is slog.Default().
	Log *slog.Logger
}

// Server answers API calls.
type Server struct {
	b    Backend
	opts Options
	log  *slog.Logger
}

// New returns the API's http.Handler, which demands the bearer token.
func New(b Backend, opts Options) http.Handler {
	return Authenticate(Handler(b, opts), opts)
}

// Authenticate refuses every call to next that lacks opts.Token or a
// scoped token from opts.Tokens whose scope covers the call. With neither
// it refuses every call: an API set up without a token fails closed
// instead of accepting "Bearer ".
func Authenticate(next http.Handler, opts Options) http.Handler {
	return (&Server{opts: opts}).auth(next)
}

// Handler returns the API without the token check, for a caller that puts
// Authenticate in front of it itself (New is the two together). Peers do
// not reach it: they speak the cluster's own typed protocol.
func Handler(b Backend, opts Options) http.Handler {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{b: b, opts: opts, log: opts.Log}
	mux := http.NewServeMux()
	mux.Handle(hypercorev1connect.NewWorkloadServiceHandler(&workloadService{s}, connectOptions()...))
	mux.Handle(hypercorev1connect.NewNodeServiceHandler(&nodeService{s}, connectOptions()...))
	mux.Handle(hypercorev1connect.NewVolumeServiceHandler(&volumeService{s}, connectOptions()...))
	s.routes(mux)
	return boundBodies(mux)
}

// errorBody is the JSON shape of every REST and classic-route error.
type errorBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
	// Code and Message make the body a Connect error too, so Connect and
	// gRPC-web clients show the same text.
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, code int, msg, field string) {
	writeErrorCode(w, code, connectCodeOf(code), msg, field)
}

// writeErrorCode is writeError with the Connect code given, for errors
// whose code is not the one the HTTP status implies.
func writeErrorCode(w http.ResponseWriter, code int, ccode connect.Code, msg, field string) {
	writeJSON(w, code, errorBody{Error: msg, Field: field, Code: ccode.String(), Message: msg})
}

// connectCodeOf names the Connect code of an HTTP status, as the Connect
// protocol's table does.
func connectCodeOf(status int) connect.Code {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return connect.CodeInvalidArgument
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusNotFound:
		return connect.CodeNotFound
	case http.StatusConflict:
		return connect.CodeResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return connect.CodeUnavailable
	case http.StatusMethodNotAllowed, http.StatusUpgradeRequired:
		return connect.CodeUnimplemented
	}
	return connect.CodeInternal
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// classify maps an error to an HTTP status, a Connect code and the field it
// is about, so every front door reports one failure the same way.
func classify(err error) (int, connect.Code, string) {
	var fe *spec.FieldError
	switch {
	case errors.As(err, &fe):
		return http.StatusBadRequest, connect.CodeInvalidArgument, fe.Field
	case errors.Is(err, workload.ErrNotFound), errors.Is(err, driver.ErrNotFound), errors.Is(err, apitoken.ErrNotFound):
		return http.StatusNotFound, connect.CodeNotFound, ""
	case errors.Is(err, workload.ErrNoCapacity):
		return http.StatusConflict, connect.CodeResourceExhausted, ""
	case errors.Is(err, workload.ErrUnsupported):
		return http.StatusBadRequest, connect.CodeFailedPrecondition, "isolation"
	case errors.Is(err, image.ErrNotFound):
		return http.StatusBadRequest, connect.CodeInvalidArgument, "image_ref"
	case errors.Is(err, image.ErrRegistry):
		return http.StatusBadGateway, connect.CodeUnavailable, "image_ref"
	case errors.Is(err, workload.ErrUnreachable):
		return http.StatusServiceUnavailable, connect.CodeUnavailable, ""
	case errors.Is(err, context.Canceled):
		return 499, connect.CodeCanceled, ""
	case errors.Is(err, volume.ErrNotFound):
		return http.StatusNotFound, connect.CodeNotFound, "volume"
	case errors.Is(err, volume.ErrInUse):
		return http.StatusConflict, connect.CodeFailedPrecondition, "volume"
	case errors.Is(err, volume.ErrExists):
		return http.StatusConflict, connect.CodeAlreadyExists, "volume"
	case errors.Is(err, volume.ErrElsewhere):
		return http.StatusBadRequest, connect.CodeFailedPrecondition, "volumes"
	}
	return http.StatusInternalServerError, connect.CodeInternal, ""
}

// fail answers err with the status, Connect code and field classify gives
// it, so the REST body's code is the one a connect client gets.
func (s *Server) fail(w http.ResponseWriter, err error) {
	code, ccode, field := classify(err)
	if code == http.StatusInternalServerError {
		s.log.Error("api call failed", "err", err)
	}
	writeErrorCode(w, code, ccode, err.Error(), field)
}

func connectErr(err error) error {
	_, code, _ := classify(err)
	return connect.NewError(code, err)
}

// wantMethod answers 405 unless r uses one of methods.
func wantMethod(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use "+strings.Join(methods, " or "), "")
	return false
}
