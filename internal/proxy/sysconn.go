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
	for s.wn < len(s.wbuf) {
		rest := s.wbuf[s.wn:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch errno {
		case 0:
			s.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			s.werr = &net.OpError{Op: "write", Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: errno}
			return true
		}
	}
	return true
}
