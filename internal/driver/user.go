package driver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// User is who a workload's process runs as.
type User struct {
	UID, GID uint32
	Groups   []uint32 // supplementary groups, from the image's /etc/group
	Home     string
}

// maxIDFile bounds how much of an image's /etc/passwd or /etc/group is read.
const maxIDFile = 4 << 20

// ResolveUser turns an image's User ("", "uid", "name", "uid:gid",
// "name:group"...) into ids, reading /etc/passwd and /etc/group of rootfs
// without ever leaving it (symlinks resolve inside it). Names must exist
// there; numeric ids need not, as with Docker.
func ResolveUser(rootfs, user string) (User, error) {
	u := User{Home: "/"}
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	if userPart == "" {
		userPart = "0"
	}
	passwd, err := readInRoot(rootfs, "/etc/passwd")
	if err != nil {
		return u, err
	}
	groups, err := readInRoot(rootfs, "/etc/group")
	if err != nil {
		return u, err
	}

	var entry []string // the user's passwd fields, if it has a line
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(n)
		entry = findLine(passwd, func(f []string) bool { return len(f) >= 6 && f[2] == userPart })
	} else {
		entry = findLine(passwd, func(f []string) bool { return len(f) >= 6 && f[0] == userPart })
		if entry == nil {
			return u, fmt.Errorf("image user %q is not in the image's /etc/passwd; use a numeric uid or add the user to the image", userPart)
		}
		if u.UID, err = parseID(entry[2]); err != nil {
			return u, fmt.Errorf("image /etc/passwd entry for %q: uid: %w", userPart, err)
		}
	}
	if entry != nil {
		if u.GID, err = parseID(entry[3]); err != nil {
			return u, fmt.Errorf("image /etc/passwd entry for %q: gid: %w", userPart, err)
		}
		if entry[5] != "" {
			u.Home = entry[5]
		}
	}

	if hasGroup && groupPart != "" {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(n)
		} else {
			g := findLine(groups, func(f []string) bool { return len(f) >= 3 && f[0] == groupPart })
			if g == nil {
				return u, fmt.Errorf("image group %q is not in the image's /etc/group; use a numeric gid or add the group to the image", groupPart)
			}
			if u.GID, err = parseID(g[2]); err != nil {
				return u, fmt.Errorf("image /etc/group entry for %q: gid: %w", groupPart, err)
			}
		}
	}

	if entry != nil {
		u.Groups = memberOf(groups, entry[0], u.GID)
	}
	return u, nil
}

// memberOf lists the gids of the groups that name the user as a member,
// without the primary gid.
func memberOf(groups []byte, name string, primary uint32) []uint32 {
	var out []uint32
	eachLine(groups, func(f []string) bool {
		if len(f) < 4 || !slices.Contains(strings.Split(f[3], ","), name) {
			return false
		}
		if gid, err := parseID(f[2]); err == nil && gid != primary && !slices.Contains(out, gid) {
			out = append(out, gid)
		}
		return false
	})
	return out
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

// findLine returns the colon-separated fields of the first line match
// accepts.
func findLine(data []byte, match func([]string) bool) []string {
	var found []string
	eachLine(data, func(f []string) bool {
		if match(f) {
			found = f
			return true
		}
		return false
	})
	return found
}

// eachLine calls fn with the fields of each non-comment line until fn
// returns true.
func eachLine(data []byte, fn func([]string) bool) {
	s := bufio.NewScanner(bytes.NewReader(data))
	s.Buffer(make([]byte, 0, 4096), maxIDFile)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if fn(strings.Split(line, ":")) {
			return
		}
	}
}

// readInRoot reads the regular file name inside root as if root were /:
// symlinks, including absolute ones and "..", resolve inside root and can
// never reach the host's files. A missing file reads as empty.
func readInRoot(root, name string) ([]byte, error) {
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open image rootfs %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	fd, err := unix.Openat2(rootFd, name, &unix.OpenHow{
		// O_NONBLOCK so a FIFO planted at the path cannot hang us.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if errors.Is(err, unix.ENOSYS) {
		return nil, fmt.Errorf("read %s in image: the kernel lacks openat2 (Linux 5.6 or newer is needed)", name)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s in image: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s in image: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s in image: not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIDFile))
	if err != nil {
		return nil, fmt.Errorf("read %s in image: %w", name, err)
	}
	return data, nil
}

// NumericUser reads "uid" or "uid:gid" without an image's /etc/passwd;
// the group is the uid's number when not given. ok is false for names.
func NumericUser(user string) (u User, ok bool) {
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	uid, err := strconv.ParseUint(userPart, 10, 32)
	if err != nil {
		return User{}, false
	}
	gid := uid
	if hasGroup {
		if gid, err = strconv.ParseUint(groupPart, 10, 32); err != nil {
			return User{}, false
		}
	}
	return User{UID: uint32(uid), GID: uint32(gid), Home: "/"}, true
}
