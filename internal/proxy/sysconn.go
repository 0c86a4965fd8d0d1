package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
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

	// The loop of serveLoop: its callback, the step it calls, the
	// socket, and whether the socket had nothing more to read when it
	// was last read (see serveLoop).
	looping bool
	loopFn  func(fd uintptr) bool
	step    func() bool
	fd      uintptr
	drained bool

	// While watching, Read reads from peerFD, a descriptor of the
	// socket of its own (see watchPeer).
	watching bool
	peerFD   *os.File
}

// errWouldBlock is what Read returns inside serveLoop when the socket has
// nothing to read: serveLoop then waits, and calls its step again. It is
// a temporary net.Error, so that a tls.Conn over the sysConn, which keeps
// such an error from ending the connection, can be read again once there
// is more.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "proxy: nothing to read yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

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
	s.loopFn = s.loop
	return s
}

// Read implements net.Conn.
func (s *sysConn) Read(p []byte) (int, error) {
	switch {
	case len(p) == 0:
		return 0, nil
	case s.watching:
		return s.watchRead(p)
	case s.looping:
		return s.loopRead(p)
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
	n, err, done := s.readFD(fd, s.rbuf)
	s.rn, s.rerr = n, err
	return done // not done: wait until readable
}

// readFD reads once from fd into p. done is false when the socket has
// nothing to read (EAGAIN); at its end, err is io.EOF.
func (s *sysConn) readFD(fd uintptr, p []byte) (n int, err error, done bool) {
	for {
		r, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return 0, nil, false
		case errno != 0:
			return 0, &net.OpError{Op: "read", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errno}, true
		case r == 0:
			return 0, io.EOF, true
		}
		return int(r), nil, true
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

// serveLoop calls step until it returns true, which it may do at once.
// While step runs, Read does not wait: when the socket has nothing to
// read, Read fails with errWouldBlock, and step is to return false;
// serveLoop then waits until the socket is readable and calls step again.
// serveLoop fails when the wait does: a read deadline, or the connection
// closed.
//
// Why: a server that has answered a request reads its connection for the
// next one, and it is nearly always empty then, since the client has yet
// to read the answer. That read costs a system call a request (over
// bench/proxy, 0.75 reads a request more than nginx, and most of the
// proxy's CPU time is the kernel's). It is needed with net.Conn because
// the runtime's poller forgets, each time a Read starts, that the socket
// has become readable since the last. serveLoop is one Read that lasts
// as long as the connection, so nothing is forgotten: after a read that
// returned less than it asked for, which leaves the socket empty, any
// byte that arrives later wakes the wait, and step may wait without
// reading again. nginx reads its sockets the same way.
//
// One arrival goes unnoticed: the client's FIN (or a reset) that came
// together with the bytes of the read that left the socket empty, as
// from a client that sends its request and at once shuts its side down.
// The kernel reports the end only to the next read. peerLeft finds such
// connections among the idle ones.
//
// Only Read may be called inside step; serveLoop holds the socket's read
// lock all along. Write, deadlines and Close work as usual.
func (s *sysConn) serveLoop(step func() bool) error {
	s.step, s.looping = step, true
	err := s.rc.Read(s.loopFn)
	s.step, s.looping = nil, false
	return err
}

func (s *sysConn) loop(fd uintptr) bool {
	// Called at first and after each wait, which ends when the socket is
	// readable or has been closed or timed out, or spuriously: a read
	// tells.
	s.fd, s.drained = fd, false
	return s.step()
}

// loopRead is Read inside serveLoop.
func (s *sysConn) loopRead(p []byte) (int, error) {
	if s.drained {
		return 0, errWouldBlock
	}
	n, err, done := s.readFD(s.fd, p)
	if !done {
		s.drained = true
		return 0, errWouldBlock
	}
	// TCP returns less than asked only when it has nothing more.
	s.drained = err == nil && n < len(p)
	return n, err
}

// watchPeer makes Read, until endWatch, read from a descriptor of the
// socket of its own, which can wait for the peer while serveLoop holds
// the socket's read lock: it is for a second goroutine that reads to
// learn whether the peer leaves while step waits for something else. No
// one else may call Read until endWatch. If watchPeer fails (out of
// descriptors), Read is as before.
func (s *sysConn) watchPeer() error {
	if s.peerFD != nil {
		s.watching = true
		return s.peerFD.SetReadDeadline(time.Time{})
	}
	var dup int
	var derr error
	err := s.rc.Control(func(fd uintptr) {
		dup, derr = syscall.Dup(int(fd))
		if derr == nil {
			syscall.CloseOnExec(dup)
		}
	})
	if err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	// The duplicate shares the socket's non-blocking mode, so os.NewFile
	// registers it with the poller, and its reads wait and time out.
	s.peerFD = os.NewFile(uintptr(dup), "peer")
	s.watching = true
	return nil
}

// watchRead is Read during a watch. Its errors are those of a net.Conn:
// a *net.OpError, which a tls.Conn over the sysConn takes a timeout for
// (and is read again after), where os.File's *fs.PathError would end it.
func (s *sysConn) watchRead(p []byte) (int, error) {
	n, err := s.peerFD.Read(p)
	if err != nil && err != io.EOF {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		err = &net.OpError{Op: "read", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
	}
	return n, err
}

// stopWatch makes a Read in progress on the descriptor of watchPeer fail
// at once. It may be called from any goroutine while the watch is on.
func (s *sysConn) stopWatch() { s.peerFD.SetReadDeadline(aLongTimeAgo) }

// endWatch makes Read read the socket again, once the Read of watchPeer
// has returned. The descriptor is kept for the next watch. What that Read
// took leaves the socket in a state the loop has not seen, so the next
// Read inside serveLoop tries the socket.
func (s *sysConn) endWatch() {
	s.watching = false
	s.drained = false
}

// closePeer closes the descriptor of watchPeer, if there is one, when no
// watch is on.
func (s *sysConn) closePeer() {
	if s.peerFD != nil {
		s.peerFD.Close()
		s.peerFD = nil
	}
}

// peerLeft reports whether the peer has closed or reset the connection
// and the socket holds nothing before that end, without taking anything
// from the socket. It may be called from any goroutine.
func (s *sysConn) peerLeft() bool {
	left := false
	s.rc.Control(func(fd uintptr) {
		var b [1]byte
		for {
			n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if errno == syscall.EINTR {
				continue
			}
			left = (errno == 0 && n == 0) || (errno != 0 && errno != syscall.EAGAIN)
			return
		}
	})
	return left
}
