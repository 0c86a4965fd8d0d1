// Package guest is hypercore's microVM guest agent and the host's client
// for it: one protocol for every VMM.
//
// The agent is the hypercore binary itself, started by the guest kernel as
// /init. It loads the kernel modules the initramfs carries, waits for the
// host to send the workload's configuration, mounts the image's read-only
// ext4 disk under a writable tmpfs overlay, configures eth0, runs the
// workload's process, and then serves the host until the process ends,
// when it powers the VM off.
//
// # Transport
//
// Host and agent share one reliable byte stream: a virtio-serial port on
// QEMU (vhost-vsock is often missing), and later a vsock connection on
// Firecracker or Cloud Hypervisor, whose "hybrid vsock" is a host Unix
// socket on which the host writes "CONNECT <port>\n" first (DialHybridVsock).
// Nothing in the protocol depends on which: only the stream is needed.
// Agent.Serve serves a virtio-serial port; Agent.ServeListener serves the
// connections of a listener, as a guest vsock port gives them.
//
// Two more virtio-serial ports are one-way and end in host files that QEMU
// itself writes: the workload's output (so logs survive the VM and need no
// process of ours on the host) and a status journal of JSON lines (so the
// workload's exit code survives a daemon that was not connected when it
// exited). A VMM without serial ports would carry both over the stream.
//
// # Framing
//
// Frames are internal/wire frames. The payload of every frame except Hello
// starts with a 4-byte big-endian channel number: the host opens a channel
// per request (Open, with a JSON Request), so many execs, attaches and calls
// share the one stream. On a channel the host sends Stdin, CloseStdin,
// Resize and Close; the agent answers Stdout, Stderr, and ends with exactly
// one Exit or Error.
//
// # Flow control
//
// Data frames (Stdin one way, Stdout and Stderr the other) are
// flow-controlled per channel, as SSH channels and HTTP/2 streams are: each
// end starts every channel with a window of windowSize bytes for the other,
// each data frame uses its length plus dataFrameCost of it, and the
// receiver grants more with a Window frame (a 4-byte increment) as its
// consumer takes data. A sender whose window is used up waits; control
// frames (Resize, CloseStdin, Close, Exit, Error, Window) never do, so a
// stalled channel can always be resized, closed or ended. A peer that sends
// beyond its window has its channel ended with ErrFlowControl, since the
// host must not buffer without limit for a guest it does not trust. Flow
// control came with version 2 of the protocol (helloMagic); an agent of
// version 1 does not answer a version-2 Hello, so the handshake times out.
//
// # Resynchronising
//
// A virtio-serial port outlives the host connection: when a daemon is
// killed mid-frame, the next one may find half a frame in the stream. So
// every connection starts with Hello carrying a fresh random nonce; the
// agent drops every session of the previous connection and echoes the
// nonce, and the host discards bytes until it has read that exact echo.
// The agent likewise scans for a Hello whenever it reads a malformed frame.
package guest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// Frame types the agent protocol adds to wire's (which it reuses for the
// data of a session: Stdin, Stdout, Stderr, Resize, Exit, Error, CloseStdin).
const (
	// Hello starts a connection: helloMagic followed by a 16-byte nonce,
	// with no channel number. The agent echoes it.
	Hello wire.Type = 16
	// Open starts channel N with a JSON Request.
	Open wire.Type = 17
	// Close abandons channel N: the agent ends the session, killing an
	// exec's process.
	Close wire.Type = 18
	// Window grants the sender of channel N more room for data: a 4-byte
	// big-endian count of bytes, sent either way.
	Window wire.Type = 19
)

// helloMagic starts every Hello payload, so a scan for a Hello cannot
// match the first bytes of some other frame. Its number is the protocol's
// version: ends of different versions never see each other's Hello, rather
// than misread each other's frames (version 2 added flow control).
var helloMagic = []byte("hypercore-agent/2")

const nonceLen = 16

// Port names of the VM's virtio-serial ports. The agent finds its ports by
// these names in /sys/class/virtio-ports.
const (
	PortAgent  = "hypercore.agent"
	PortLog    = "hypercore.log"
	PortStatus = "hypercore.status"
)

// Op names what a Request asks for.
type Op string

// The requests the agent serves.
const (
	// OpConfigure hands the agent the workload (Request.Config) and starts
	// it; it is answered once the process runs. Only the first one counts:
	// a second answers ErrConfigured.
	OpConfigure Op = "configure"
	// OpExec runs Request.Process beside the workload, with its stdio on
	// the channel.
	OpExec Op = "exec"
	// OpAttach connects the channel to the workload's main process: its
	// output from now on, and input and resizes to it.
	OpAttach Op = "attach"
	// OpSignal sends Request.Signal to the workload's main process.
	OpSignal Op = "signal"
	// OpShutdown ends the workload (SIGTERM, then SIGKILL after
	// Request.GraceMillis) and powers the VM off.
	OpShutdown Op = "shutdown"
	// OpPing answers Exit 0 once the agent serves requests.
	OpPing Op = "ping"
)

// Request is the JSON body of an Open frame.
type Request struct {
	Op          Op       `json:"op"`
	Config      *Config  `json:"config,omitempty"`
	Process     *Process `json:"process,omitempty"`
	Signal      int      `json:"signal,omitempty"`
	GraceMillis int64    `json:"grace_ms,omitempty"`
}

// Config is everything the guest needs to run the workload. It travels only
// over the agent stream: env and secrets never appear on the kernel command
// line or in the VMM's argv, where any user of the host could read them.
type Config struct {
	Hostname string  `json:"hostname"`
	Network  Network `json:"network"`
	// Process is the workload's main process.
	Process Process `json:"process"`
	// Files are written into the root before the process starts, such as
	// /etc/hosts, /etc/hostname and /etc/resolv.conf.
	Files map[string]string `json:"files,omitempty"`
	// OverlayMiB caps the tmpfs that holds the workload's writes; 0 lets
	// the kernel's default (half of memory) apply.
	OverlayMiB int `json:"overlay_mib,omitempty"`
	// Volumes are disks to mount in the root: named volumes (volumes.go).
	Volumes []Volume `json:"volumes,omitempty"`
}

// Volume is a named volume's disk: an ext4 file system on the virtio-blk
// disk whose serial is Serial, whose data directory is mounted at Target.
type Volume struct {
	Serial string `json:"serial"`
	Target string `json:"target"`
}

// Network is eth0's configuration. Zero means no network.
type Network struct {
	// Address is "10.77.0.5/16".
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
}

// Process is a process to run inside the guest's root.
type Process struct {
	Args    []string `json:"args"`
	Env     []string `json:"env,omitempty"`
	WorkDir string   `json:"workdir,omitempty"`
	UID     uint32   `json:"uid"`
	GID     uint32   `json:"gid"`
	Groups  []uint32 `json:"groups,omitempty"`
	Tty     bool     `json:"tty,omitempty"`
	Rows    uint16   `json:"rows,omitempty"`
	Cols    uint16   `json:"cols,omitempty"`
	// StopSignal asks the workload to end gracefully (the image's
	// StopSignal); 0 is SIGTERM.
	StopSignal int `json:"stop_signal,omitempty"`
}

// Event is one line of the status journal.
type Event struct {
	// State is "running" or "exited".
	State    string    `json:"state"`
	Pid      int       `json:"pid,omitempty"`
	ExitCode int       `json:"exit_code"`
	Time     time.Time `json:"time"`
	// Error says why the workload could not start, when it could not.
	Error string `json:"error,omitempty"`
}

// ErrConfigured is the answer to a second OpConfigure: the workload of
// this VM was configured already (by a daemon before a restart, say).
var ErrConfigured = errors.New("guest agent: workload already configured")

func newNonce() []byte {
	n := make([]byte, nonceLen)
	_, _ = rand.Read(n)
	return n
}

func helloPayload(nonce []byte) []byte {
	return append(append([]byte{}, helloMagic...), nonce...)
}

// helloFrame is the exact bytes of a Hello frame with nonce, the pattern
// a resynchronising reader looks for.
func helloFrame(nonce []byte) []byte {
	p := helloPayload(nonce)
	var b bytes.Buffer
	b.WriteByte(byte(Hello))
	_ = binary.Write(&b, binary.BigEndian, uint32(len(p)))
	b.Write(p)
	return b.Bytes()
}

// scanFor reads r until it has consumed pattern, or fails; it is a plain
// substring search over the stream, using a KMP table so a partial match
// never skips a real start.
func scanFor(r *bufio.Reader, pattern []byte) error {
	fail := make([]int, len(pattern))
	for i, k := 1, 0; i < len(pattern); i++ {
		for k > 0 && pattern[i] != pattern[k] {
			k = fail[k-1]
		}
		if pattern[i] == pattern[k] {
			k++
		}
		fail[i] = k
	}
	k := 0
	for k < len(pattern) {
		c, err := r.ReadByte()
		if err != nil {
			return err
		}
		for k > 0 && c != pattern[k] {
			k = fail[k-1]
		}
		if c == pattern[k] {
			k++
		}
	}
	return nil
}

// helloHeader is a Hello frame's type, length and magic: what the agent
// scans for, since the nonce that follows is the host's to choose.
func helloHeader() []byte {
	return helloFrame(make([]byte, nonceLen))[:5+len(helloMagic)]
}

// putChan prefixes payload with channel number id.
func putChan(id uint32, payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, id)
	copy(b[4:], payload)
	return b
}

// splitChan splits a channel frame's payload into its channel and data.
func splitChan(p []byte) (uint32, []byte, error) {
	if len(p) < 4 {
		return 0, nil, fmt.Errorf("guest agent: frame of %d bytes has no channel number", len(p))
	}
	return binary.BigEndian.Uint32(p), p[4:], nil
}
