package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// Proxy serves HTTP for the workloads in its Table.
type Proxy struct {
	base  string // lower case, no leading dot
	table *Table
	rp    *httputil.ReverseProxy
	log   *slog.Logger
}

// New returns a proxy for hosts under baseDomain (such as "localhost" or
// "deployments.example.com").
func New(baseDomain string, table *Table, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{base: strings.ToLower(strings.Trim(baseDomain, ".")), table: table, log: log}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// ServeHTTP put the backend in In.URL; Out is its clone.
			pr.SetXForwarded()
		},
		Transport:    newTransport(),
		BufferPool:   bufferPool{},
		ErrorHandler: p.backendError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

// newTransport keeps connections to workloads alive and pooled, so a busy
// route costs no new TCP handshake per request.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil, // never send workload traffic through an environment proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// Handler serves one public HTTP port (80 or 443). A workload that maps
// only one of the two is reached on the other too: on :80 without TLS
// configured, and on :443 because :80 then redirects to it.
func (p *Proxy) Handler(publicPort uint16) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(w, r, publicPort)
	})
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, publicPort uint16) {
	id, ok := p.workloadID(r.Host)
	if !ok {
		http.Error(w, "404 no workload is served at "+r.Host+"\n", http.StatusNotFound)
		return
	}
	if r.TLS != nil && r.TLS.ServerName != "" {
		// A client may reuse a connection made for one workload to reach
		// another the wildcard also covers (HTTP/2 coalescing). 421 makes
		// it open a connection of the right name, so each workload's
		// traffic stays on connections made for it.
		if sni, _ := p.workloadID(r.TLS.ServerName); sni != id {
			http.Error(w, "421 this connection was opened for "+r.TLS.ServerName+", not "+r.Host+"\n", http.StatusMisdirectedRequest)
			return
		}
	}
	route, ok := p.table.Lookup(id)
	if !ok {
		http.Error(w, "404 no workload "+id+" on this cluster\n", http.StatusNotFound)
		return
	}
	target, ok := route.HTTP[publicPort]
	if !ok {
		target, ok = route.HTTP[otherHTTPPort(publicPort)]
	}
	if !ok {
		http.Error(w, "404 workload "+id+" does not expose this port over HTTP\n", http.StatusNotFound)
		return
	}
	if !route.Ready {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "503 workload "+id+" is starting\n", http.StatusServiceUnavailable)
		return
	}
	r.URL.Scheme = "http"
	r.URL.Host = target
	p.rp.ServeHTTP(w, r)
}

// otherHTTPPort pairs 80 with 443: one stands in for the other.
func otherHTTPPort(port uint16) uint16 {
	switch port {
	case 80:
		return 443
	case 443:
		return 80
	}
	return 0
}

// workloadID extracts <id> from "<id>.<base>[:port]". Only one label is
// accepted, so "a.b.<base>" never matches workload "a.b".
func (p *Proxy) workloadID(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	if len(host) <= len(p.base)+1 || host[len(host)-len(p.base)-1] != '.' ||
		!strings.EqualFold(host[len(host)-len(p.base):], p.base) {
		return "", false
	}
	id := strings.ToLower(host[:len(host)-len(p.base)-1])
	if id == "" || strings.IndexByte(id, '.') >= 0 {
		return "", false
	}
	return id, true
}

func (p *Proxy) backendError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, http.ErrAbortHandler) || r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.log.Debug("proxy: backend failed", "host", r.Host, "backend", r.URL.Host, "err", err)
	http.Error(w, "502 workload is not answering\n", http.StatusBadGateway)
}

// bufferPool lends copy buffers to the reverse proxy, so streaming a body
// does not allocate 32 KiB per request.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
