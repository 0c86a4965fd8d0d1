package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// workloadJSON is how REST and seed routes show a workload.
type workloadJSON struct {
	ID          string            `json:"id"`
	URL         string            `json:"url"`
	Node        string            `json:"node"`
	State       string            `json:"state"`
	Desired     string            `json:"desired"`
	Ready       bool              `json:"ready"`
	IP          string            `json:"ip,omitempty"`
	Pid         int               `json:"pid,omitempty"`
	ExitCode    int               `json:"exit_code,omitempty"`
	ImageRef    string            `json:"image_ref"`
	ImageDigest string            `json:"image_digest,omitempty"`
	Cores       float64           `json:"cores"`
	Memory      int64             `json:"memory"`
	Ports       map[string]uint16 `json:"ports,omitempty"`
	Isolation   string            `json:"isolation"`
	Error       string            `json:"error,omitempty"`
	CreatedAt   time.Time         `json:"created_at"`
}

func (s *Server) toJSON(w store.Workload) workloadJSON {
	out := workloadJSON{
		ID: w.ID, URL: s.b.URL(w.ID), Node: w.Node, State: string(w.State), Desired: string(w.Desired),
		Ready: w.Ready, IP: w.IP, Pid: w.Pid, ExitCode: w.ExitCode, ImageRef: w.Spec.Image,
		ImageDigest: w.ImageDigest, Cores: w.Spec.Cores, Memory: w.Spec.MemoryMiB,
		Isolation: string(w.Spec.Isolation), Error: w.Error, CreatedAt: w.CreatedAt,
	}
	if len(w.Spec.Ports) > 0 {
		out.Ports = portKeys(w.Spec.Ports)
	}
	return out
}

// portKeys renders ports as the request had them: {"443": 3000}.
func portKeys(ports []spec.Port) map[string]uint16 {
	m := make(map[string]uint16, len(ports))
	for _, p := range ports {
		key := strconv.Itoa(int(p.Public))
		if (p.Proto == spec.ProtoTCP) == (p.Public == 80 || p.Public == 443) {
			key = string(p.Proto) + ":" + key
		}
		m[key] = p.Target
	}
	return m
}

func (s *Server) routes(mux *http.ServeMux) {
	// Seed 000's routes.
	mux.HandleFunc("/spawn", s.handleSpawn)
	mux.HandleFunc("/stop", s.handleStopSeed)
	mux.HandleFunc("/list", s.handleList)
	mux.HandleFunc("/logs", func(w http.ResponseWriter, r *http.Request) {
		if wantMethod(w, r, http.MethodGet) {
			s.streamLogs(w, r, r.URL.Query().Get("id"))
		}
	})

	// REST.
	mux.HandleFunc("GET /v1/workloads", s.handleList)
	mux.HandleFunc("POST /v1/workloads", s.handleSpawn)
	mux.HandleFunc("GET /v1/workloads/{id}", s.withID(func(w http.ResponseWriter, r *http.Request, id string) {
		wl, err := s.b.Get(id)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.toJSON(wl))
	}))
	mux.HandleFunc("DELETE /v1/workloads/{id}", s.withID(func(w http.ResponseWriter, r *http.Request, id string) {
		if err := s.b.Remove(r.Context(), id); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"id": id, "state": "removed"})
	}))
	mux.HandleFunc("POST /v1/workloads/{id}/stop", s.withID(s.stop))
	mux.HandleFunc("GET /v1/workloads/{id}/logs", func(w http.ResponseWriter, r *http.Request) {
		s.streamLogs(w, r, r.PathValue("id"))
	})
	mux.HandleFunc("POST /v1/workloads/{id}/exec", s.withID(s.handleExec))
	mux.HandleFunc("POST /v1/workloads/{id}/attach", s.withID(s.handleAttach))
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.b.Info())
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.b.(Cluster)
		if !ok {
			writeError(w, http.StatusNotFound, "this node is not part of a cluster", "")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"nodes": c.Members()})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no API route "+r.Method+" "+r.URL.Path+"; see docs/api.md", "")
	})
}

func (s *Server) withID(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := spec.ValidateID(id); err != nil {
			s.fail(w, err)
			return
		}
		h(w, r, id)
	}
}

// spawnAnswer is seed 000's /spawn answer, {"id","url"}, plus the node.
type spawnAnswer struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Node   string `json:"node"`
	DryRun bool   `json:"dry_run,omitempty"`
}

func (s *Server) handleSpawn(w http.ResponseWriter, r *http.Request) {
	if !wantMethod(w, r, http.MethodPost) {
		return
	}
	req, err := spec.DecodeSpawnJSON(http.MaxBytesReader(w, r.Body, spec.MaxBodyBytes+1))
	if err != nil {
		s.fail(w, err)
		return
	}
	wl, err := s.b.Spawn(r.Context(), req)
	if err != nil {
		s.fail(w, err)
		return
	}
	ans := spawnAnswer{ID: wl.ID, URL: s.b.URL(wl.ID), Node: wl.Node, DryRun: req.DryRun}
	if req.DryRun {
		ans.ID, ans.URL = "", ""
	}
	writeJSON(w, http.StatusOK, ans)
}

func (s *Server) handleStopSeed(w http.ResponseWriter, r *http.Request) {
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
func (s *Server) stop(w http.ResponseWriter, r *http.Request, id string) {
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

func (s *Server) streamLogs(w http.ResponseWriter, r *http.Request, id string) {
	q := r.URL.Query()
	follow, err := spec.ParseBool("follow", q.Get("follow"))
	if err == nil {
		err = spec.ValidateID(id)
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
