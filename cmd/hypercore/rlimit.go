package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// wantOpenFiles is the open-files limit the daemon wants: each workload
// holds a pidfd, and each proxied connection two sockets, so a node with
// hundreds of workloads under load needs far more than the usual 1024 or
// 4096.
const wantOpenFiles = 1 << 20

// raiseOpenFiles raises RLIMIT_NOFILE, soft and hard, to wantOpenFiles, or
// to what the kernel allows (fs.nr_open), when it is lower. Go raises the
// soft limit to the hard one by itself; as root the daemon can raise the
// hard one too. A failure is logged, not fatal: the daemon runs, and the
// error at the limit says what to do.
func raiseOpenFiles(log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := uint64(wantOpenFiles)
	if data, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if max, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err == nil && max < want {
			want = max
		}
	}
	if lim.Cur >= want && lim.Max >= want {
		return
	}
	raised := unix.Rlimit{Cur: max(lim.Cur, want), Max: max(lim.Max, want)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
		log.Warn("could not raise the open-files limit; a node with many workloads may hit it (raise it with `ulimit -n` or LimitNOFILE= in the service unit)",
			"soft", lim.Cur, "hard", lim.Max, "want", want, "err", err)
		return
	}
	log.Debug("raised the open-files limit", "from", lim.Cur, "to", raised.Cur)
}
