package server

import (
	"net/http"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// workloadJSON is how REST and the classic routes show a workload.
type workloadJSON struct {
	ID      string `json:"id"`
	URL     string `json:"url"`
	Node    string `json:"node"`
	State   string `json:"state"`
	Desired string `json:"desired"`
	Ready   bool   `json:"ready"`
	IP      string `json:"ip,omitempty"`
	Pid     int    `json:"pid,omitempty"`
	// ExitCode is set once the process exited by itself (state exited).
	ExitCode    *int              `json:"exit_code,omitempty"`
	Restart     string            `json:"restart,omitempty"`
	Restarts    int               `json:"restarts"`
	Volumes     map[string]string `json:"volumes,omitempty"`
	ImageRef    string            `json:"image_ref"`
	ImageDigest string            `json:"image_digest,omitempty"`
	Cores       float64           `json:"cores"`
	Memory      int64             `json:"memory"`
	Disk        int64             `json:"disk,omitempty"`
	Ports       map[string]uint16 `json:"ports,omitempty"`
	Isolation   string            `json:"isolation"`
	Secrets     map[string]string `json:"secrets,omitempty"`
	Security    spec.Security     `json:"security"`
	Error       string            `json:"error,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
}

// toJSON shows w: the allocation's spec, node and desired state, and what
// that node last observed.
func (s *Server) toJSON(w workload.Workload) workloadJSON {
	o := w.Observed
	out := workloadJSON{
		ID: w.ID.String(), URL: s.b.URL(w.ID), Node: w.Node, State: string(o.State), Desired: string(w.Desired),
		Ready: o.Ready, IP: o.IP, Pid: o.Pid, ImageRef: w.Spec.Image,
		Restart: w.Spec.Restart, Restarts: o.Restarts, Volumes: w.Spec.Volumes,
		ImageDigest: o.ImageDigest, Cores: w.Spec.Cores, Memory: w.Spec.MemoryMiB, Disk: w.Spec.DiskMiB,
		Isolation: string(w.Spec.Isolation), Secrets: w.Spec.Secrets, Security: w.Spec.Security.OrDefaults(), Error: o.Error, CreatedAt: w.CreatedAt,
	}
	if o.State == workload.StateExited {
		code := o.ExitCode
		out.ExitCode = &code
	}
	if len(w.Spec.Ports) > 0 {
		out.Ports = spec.PortKeys(w.Spec.Ports)
	}
	return out
}

func (s *Server) routes(mux *http.ServeMux) {
	// The classic /spawn API's routes.
	mux.HandleFunc("/spawn", s.handleSpawn)
	mux.HandleFunc("/stop", s.handleStopClassic)
	mux.HandleFunc("/list", s.handleList)
	mux.HandleFunc("/logs", func(w http.ResponseWriter, r *http.Request) {
		if wantMethod(w, r, http.MethodGet) {
			s.streamLogs(w, r, r.URL.Query().Get("id"))
		}
	})

	// REST.
	mux.HandleFunc("GET /v1/workloads", s.handleList)
	mux.HandleFunc("POST /v1/workloads", s.handleSpawn)
	mux.HandleFunc("GET /v1/workloads/{id}", s.withID(func(w http.ResponseWriter, r *http.Request, id spec.ID) {
		wl, err := s.b.Get(id)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toJSON(wl))
	}))
	mux.HandleFunc("DELETE /v1/workloads/{id}", s.withID(func(w http.ResponseWriter, r *http.Request, id spec.ID) {
		if err := s.b.Remove(r.Context(), id); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": id.String(), "state": "removed"})
	}))
	mux.HandleFunc("POST /v1/workloads/{id}/stop", s.withID(s.stop))
	s.volumeRoutes(mux)
	mux.HandleFunc("POST /v1/workloads/{id}/start", s.withID(func(w http.ResponseWriter, r *http.Request, id spec.ID) {
		wl, err := s.b.Start(r.Context(), id)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toJSON(wl))
	}))
	mux.HandleFunc("GET /v1/workloads/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		s.streamLogs(w, r, r.PathValue("id"))
	})
	mux.HandleFunc("POST /v1/workloads/{id}/exec", s.withID(s.handleExec))
	mux.HandleFunc("POST /v1/workloads/{id}/attach", s.withID(s.handleAttach))
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Info())
	})
	s.secretRoutes(mux)
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		members := s.b.Members()
		if members == nil {
			writeError(w, http.StatusNotFound, "this node is not part of a cluster", "")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"nodes": members})
	})
	s.tokenRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no API route "+r.Method+" "+r.URL.Path+"; see docs/api.md", "")
	})
}

// withID parses the route's {id} once, answering 400 for one that is not a
// workload id, and hands h the checked id.
func (s *Server) withID(h func(http.ResponseWriter, *http.Request, spec.ID)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := spec.ParseID(r.PathValue("id"))
		if err != nil {
			s.fail(w, err)
			return
		}
		h(w, r, id)
	}
}

// spawnAnswer is the classic /spawn answer, {"id","url"}, plus the node.
type spawnAnswer struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Node   string `json:"node"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// IdempotencyKeyHeader carries a spawn's idempotency key on REST, the
// classic /spawn and Connect (where the request_id field may carry it
// instead): a retry with the same key answers the workload the first
// spawn made.
const IdempotencyKeyHeader = "Idempotency-Key"

func (s *Server) handleSpawn(w http.ResponseWriter, r *http.Request) {
	if !wantMethod(w, r, http.MethodPost) {
		return
	}
	req, err := spec.DecodeSpawnJSON(http.MaxBytesReader(w, r.Body, spec.MaxBodyBytes+1))
	if err == nil {
		req.RequestID, err = spec.ParseRequestID(r.Header.Get(IdempotencyKeyHeader))
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	wl, err := s.b.Spawn(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	ans := spawnAnswer{ID: wl.ID.String(), URL: s.b.URL(wl.ID), Node: wl.Node, DryRun: req.DryRun}
	if req.DryRun {
		ans.ID, ans.URL = "", ""
	}
	writeJSON(w, http.StatusOK, ans)
}

// handleStopClassic is the classic POST /stop, {"id": "..."}.
func (s *Server) handleStopClassic(w http.ResponseWriter, r *http.Request) {
	if !wantMethod(w, r, http.MethodPost) {
		return
	}
	id, err := spec.DecodeIDJSON(http.MaxBytesReader(w, r.Body, spec.MaxBodyBytes+1))
	if err != nil {
		s.fail(w, err)
		return
	}
	s.stop(w, r, id)
}

// stop takes an optional ?timeout=SECONDS, the grace period after SIGTERM.
func (s *Server) stop(w http.ResponseWriter, r *http.Request, id spec.ID) {
	timeout, err := spec.ParseStopTimeout(r.URL.Query().Get("timeout"))
	if err != nil {
		s.fail(w, err)
		return
	}
	wl, err := s.b.Stop(r.Context(), id, timeout)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.toJSON(wl))
}

// listAnswer is GET /list and GET /v1/workloads.
type listAnswer struct {
	Workloads []workloadJSON `json:"workloads"`
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	if !wantMethod(w, r, http.MethodGet) {
		return
	}
	list, err := s.b.List()
	if err != nil {
		s.fail(w, err)
		return
	}
	ans := listAnswer{Workloads: make([]workloadJSON, 0, len(list))}
	for _, wl := range list {
		ans.Workloads = append(ans.Workloads, s.toJSON(wl))
	}
	writeJSON(w, http.StatusOK, ans)
}

// streamLogs answers a log route; rawID comes from the path or, on the
// classic route, the query.
func (s *Server) streamLogs(w http.ResponseWriter, r *http.Request, rawID string) {
	q := r.URL.Query()
	var id spec.ID
	follow, err := spec.ParseBool("follow", q.Get("follow"))
	if err == nil {
		id, err = spec.ParseID(rawID)
	}
	tail := 0
	if err == nil {
		tail, err = spec.ParseTail(q.Get("tail"))
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	rc, err := s.b.Logs(r.Context(), id, driver.LogOptions{Follow: follow, Tail: tail})
	if err != nil {
		s.fail(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rcw := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rcw.Flush()
		}
		if err != nil {
			return
		}
	}
}
