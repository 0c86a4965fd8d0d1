package proxy

import (
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// Timeouts and limits of the public servers. There is no read or write
// timeout on a whole request: uploads, downloads, SSE and WebSocket may
// last long, and ReverseProxy streams them through a fixed buffer, so a
// slow client holds back its backend instead of filling memory.
const (
	readHeaderTimeout = 10 * time.Second  // also bounds the TLS handshake
	idleTimeout       = 120 * time.Second // keep-alive connection with no request
	maxHeaderBytes    = 64 << 10
)

// Server returns a plain HTTP/1.1 server for one public port, with timeouts
// that keep a slow or idle client from holding resources forever. HTTP/2
// without TLS (h2c) is not offered on public ports.
func Server(addr string, h http.Handler, log *slog.Logger) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	return srv
}

// HTTPSServer returns the public HTTPS server: certificates from certs,
// HTTP/2 and HTTP/1.1 by ALPN. Serve it with ServeTLS(l, "", "").
func HTTPSServer(addr string, h http.Handler, certs CertSource, log *slog.Logger) *http.Server {
	srv := Server(addr, h, log)
	srv.Protocols.SetHTTP2(true)
	srv.TLSConfig = TLSConfig(certs)
	srv.HTTP2 = &http.HTTP2Config{
		// Go's defaults, written down: they bound what one client may
		// make the server hold (streams, and flow-control windows that
		// cap buffered request bodies).
		MaxConcurrentStreams:          250,
		MaxReceiveBufferPerConnection: 1 << 20,
		MaxReceiveBufferPerStream:     1 << 20,
	}
	return srv
}

// RedirectHTTPS answers every plain HTTP request with a 308 to the same
// host and path over HTTPS. 308 keeps the method and body, unlike 301.
// httpsAddr is the HTTPS listen address; a port other than 443 is kept in
// the new URL.
func RedirectHTTPS(httpsAddr string) http.Handler {
	_, port, _ := net.SplitHostPort(httpsAddr)
	if port == "443" {
		port = ""
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "400 HTTPS is required and the request names no host\n", http.StatusBadRequest)
			return
		}
		if port != "" {
			host = net.JoinHostPort(host, port)
		} else if strings.IndexByte(host, ':') >= 0 && host[0] != '[' {
			host = "[" + host + "]" // a bare IPv6 address
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
