// Command proxybench serves hypercore's HTTP proxy (internal/proxy) on its
// own, for bench/proxy: one route, Host <id>.<base> to a backend address,
// over HTTP and HTTPS, with the same servers the daemon uses (proxy.Server,
// proxy.HTTPSServer with a proxy.CertFile). It runs in its own process so
// that the benchmark measures the proxy alone, as it does nginx.
//
// It prints "ready" on stdout once every listener is bound, and serves
// until it gets SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hypercore-dev/hypercore/internal/proxy"
)

func main() {
	var (
		base      = flag.String("base", "localhost", "base domain")
		id        = flag.String("id", "", "workload id: requests for <id>.<base> go to -backend")
		backend   = flag.String("backend", "", "backend ip:port")
		httpAddr  = flag.String("http", "127.0.0.1:8001", "HTTP listen address")
		httpsAddr = flag.String("https", "", "HTTPS listen address; needs -cert and -key")
		certPath  = flag.String("cert", "", "PEM certificate (for -https)")
		keyPath   = flag.String("key", "", "PEM key (for -https)")
		pprofAddr = flag.String("pprof", "", "serve net/http/pprof on this address (loopback), for profiling by hand")
	)
	flag.Parse()
	if err := run(*base, *id, *backend, *httpAddr, *httpsAddr, *certPath, *keyPath, *pprofAddr); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func run(base, id, backend, httpAddr, httpsAddr, certPath, keyPath, pprofAddr string) error {
	if id == "" || backend == "" {
		return errors.New("-id and -backend are required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	table := proxy.NewTable()
	table.Set(proxy.Route{ID: id, HTTP: map[uint16]string{80: backend, 443: backend}, Ready: true})
	p := proxy.New(base, table, log)

	var servers []*http.Server
	// proxy.Serve is how the daemon serves the proxy's ports: the fast
	// path in front of net/http, TLS when srv.TLSConfig is set.
	serve := func(srv *http.Server) error {
		l, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			return err
		}
		servers = append(servers, srv)
		go func() {
			if err := proxy.Serve(srv, l); !errors.Is(err, http.ErrServerClosed) {
				log.Error("serve", "addr", srv.Addr, "err", err)
				os.Exit(1)
			}
		}()
		return nil
	}
	if err := serve(proxy.Server(httpAddr, p.Handler(80), log)); err != nil {
		return err
	}
	if httpsAddr != "" {
		cf, err := proxy.NewCertFile(certPath, keyPath, log)
		if err != nil {
			return err
		}
		if err := serve(proxy.HTTPSServer(httpsAddr, p.Handler(443), proxy.CertSources{cf}, log)); err != nil {
			return err
		}
	}
	if pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		if err := serve(&http.Server{Addr: pprofAddr, Handler: mux}); err != nil {
			return err
		}
	}
	fmt.Println("ready")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	return nil
}
