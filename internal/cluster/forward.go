package cluster

import (
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Forward wraps the public API so that streams about a workload on another
// node (exec, attach, logs) are served by that node: the request goes on,
// over mutual TLS, to the host's /local API, Upgrade and all. Everything
// else falls through to next, which answers from the cluster state.
func (c *Cluster) Forward(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := streamTarget(r)
		if id == "" || spec.ValidateID(id) != nil {
			next.ServeHTTP(w, r)
			return
		}
		rec, err := c.raft.Get(id)
		if err != nil || rec.Node == c.cfg.NodeName {
			next.ServeHTTP(w, r)
			return
		}
		rpc, ok := c.liveRPCAddr(rec.Node)
		if !ok {
			http.Error(w, "node "+rec.Node+", which hosts "+id+", is down; its workloads move once it has been down for the failover grace", http.StatusServiceUnavailable)
			return
		}
		rp := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme, pr.Out.URL.Host = "https", rpc
				pr.Out.URL.Path = localPrefix + pr.In.URL.Path
				pr.Out.Host = rpc
				// The peer trusts the mutual TLS, not this node's token.
				pr.Out.Header.Del("Authorization")
			},
			Transport:     c.peers.client(rec.Node).Transport,
			FlushInterval: -1, // logs -f and exec output as they come
		}
		rp.ServeHTTP(w, r)
	})
}

// streamTarget is the workload id of a stream request, or "".
func streamTarget(r *http.Request) string {
	if r.URL.Path == "/logs" {
		return r.URL.Query().Get("id")
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/workloads/")
	if !ok {
		return ""
	}
	id, op, ok := strings.Cut(rest, "/")
	if !ok || (op != "exec" && op != "attach" && op != "logs") {
		return ""
	}
	return id
}
