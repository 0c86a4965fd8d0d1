package proxy

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// sysConn is a TCP connection whose reads and writes are made with
// syscall.RawSyscall, without telling the Go scheduler, and wait for the
// socket in the runtime's network poller as net.Conn's do.
//
// Why: the sockets are non-blocking, so a read or write never blocks, but
// on loopback a write also runs the receiving end's TCP stack and wakes
// it, which takes 10–20 µs on a small VM. net.Conn marks each such call as
// a system call; the runtime's monitor (sysmon) then finds the processor
// "stuck in a system call", hands it to another thread and wakes one, and
// keeps polling every 20 µs. Under the proxy benchmark that was 12% of
// the proxy's CPU time (perf: runtime.sysmon, its nanosleep and the
// thread wake-ups) for no gain: there is no other work that the thread
// could not do after the call.
type sysConn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The call in flight each way, read by rc's callbacks, which are made
	// once so that a call allocates nothing. net.Conn allows one Read and
	// one Write at a time; rc holds the socket's read or write lock during
	// its callback.
	rbuf, wbuf    []byte
	rn, wn        int
	rerr, werr    error
	readFn, wrtFn func(fd uintptr) bool

	// The call of writeAwaitRead in flight: what to write, how much was,
	// and whether the callback has written (so its next call is a
	// wake-up).
	abuf    []byte
	an      int
	aerr    error
	written bool
	awaitFn func(fd uintptr) bool
}

// newSysConn wraps c, or returns it as it is if it is not TCP.
func newSysConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	s := &sysConn{TCPConn: tc, rc: rc}
	s.readFn = s.read
	s.wrtFn = s.write
	s.awaitFn = s.writeThenWait
	return s
}

// Read implements net.Conn.
func (s *sysConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.readFn)
	n, rerr := s.rn, s.rerr
	s.rbuf = nil
	if err != nil {
		return n, err // a deadline, or the connection closed
	}
	return n, rerr
}

func (s *sysConn) read(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false // wait until readable
		case errno != 0:
			s.rerr = &net.OpError{Op: "read", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errno}
		case n == 0:
			s.rerr = io.EOF
		default:
			s.rn = int(n)
		}
		return true
	}
}

// Write implements net.Conn.
func (s *sysConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.wrtFn)
	n, werr := s.wn, s.werr
	s.wbuf = nil
	if err != nil {
		return n, err
	}
	return n, werr
}

func (s *sysConn) write(fd uintptr) bool {
	n, err, done := s.writeFD(fd, s.wbuf[s.wn:])
	s.wn += n
	s.werr = err
	return done
}

// writeFD writes p to fd until it is all written, the socket's buffer is
// full (done is false: wait until writable), or a write fails.
func (s *sysConn) writeFD(fd uintptr, p []byte) (written int, err error, done bool) {
	for written < len(p) {
		rest := p[written:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch errno {
		case 0:
			written += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return written, nil, false
		default:
			return written, &net.OpError{Op: "write", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errno}, true
		}
	}
	return written, nil, true
}

// writeAwaitRead writes p, as Write does, and then waits until the
// connection is readable, so that the Read that follows finds the reply
// instead of failing with EAGAIN and waiting then. It is for a request
// and its response on a connection that has nothing unread: the
// workload's side of the proxy, which writes a request and reads its
// response on one goroutine, and never calls Write concurrently.
//
// Why: the runtime's poller forgets, when a Read starts, that the socket
// became readable earlier (its edge-triggered readiness is reset), so a
// Read must try the socket before it may wait, and right after a request
// the socket is nearly always empty. Here the wait starts (and the
// readiness is reset) before the request is written, so no reply can
// come before it, and one read a request is saved: under bench/proxy,
// 3.6 reads a request became 2.7, and a read that finds nothing costs
// about 1.3 µs on the benchmark's VM.
//
// If the wait fails (a deadline, the connection closed), writeAwaitRead
// still reports the write as done: the next Read reports the failure, as
// it would have without the wait.
func (s *sysConn) writeAwaitRead(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.abuf, s.an, s.aerr, s.written = p, 0, nil, false
	s.rc.Read(s.awaitFn) // an error (deadline, closed) before the write leaves an = 0: Write below reports it
	n, err := s.an, s.aerr
	s.abuf = nil
	if err != nil || n == len(p) {
		return n, err
	}
	// Not written, or not all of it (the socket buffer was full): the
	// rest as Write writes it, and the next Read reads first.
	m, err := s.Write(p[n:])
	return n + m, err
}

func (s *sysConn) writeThenWait(fd uintptr) bool {
	if s.written {
		return true // woken up: readable, or a spurious wake-up the Read that follows tells apart
	}
	s.written = true
	n, err, done := s.writeFD(fd, s.abuf)
	s.an, s.aerr = n, err
	return err != nil || !done // all written: wait until readable
}
