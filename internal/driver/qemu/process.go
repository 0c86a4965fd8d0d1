package qemu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/guest"
)

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// mainProcess is the workload's process as the container driver would run
// it: the image's entrypoint and cmd (or the spec's args), env, workdir
// and user, resolved against the image's own /etc/passwd and /etc/group.
func mainProcess(cfg driver.Config) (guest.Process, error) {
	cmd := cfg.ImageConfig.Cmd
	if len(cfg.Spec.Args) > 0 {
		cmd = cfg.Spec.Args
	}
	args := append(append([]string{}, cfg.ImageConfig.Entrypoint...), cmd...)
	if len(args) == 0 {
		return guest.Process{}, fmt.Errorf("the image has no entrypoint or cmd; give the workload args")
	}
	uid, gid, groups, home, err := resolveUser(cfg.Rootfs, cfg.ImageConfig.User)
	if err != nil {
		return guest.Process{}, err
	}
	env := driver.MergeEnv([]string{defaultPath, "HOSTNAME=" + hostnameFor(cfg), "HOME=" + home}, cfg.ImageConfig.Env, cfg.Spec.Env)
	if cfg.Spec.Tty && !driver.HasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	wd := cfg.ImageConfig.WorkingDir
	if wd == "" {
		wd = "/"
	}
	return guest.Process{Args: args, Env: env, WorkDir: wd, UID: uid, GID: gid, Groups: groups, Tty: cfg.Spec.Tty}, nil
}

// hostnameFor is the Config's hostname or, like Docker, the start of the id.
func hostnameFor(cfg driver.Config) string {
	if cfg.Hostname != "" {
		return cfg.Hostname
	}
	h := strings.ReplaceAll(cfg.ID, "-", "")
	return h[:min(12, len(h))]
}

// etcFiles are the guest's /etc/hosts, /etc/hostname and /etc/resolv.conf.
func etcFiles(hostname, ip string) map[string]string {
	addr := ip
	if addr == "" {
		addr = "127.0.1.1"
	}
	return map[string]string{
		"/etc/hosts":       fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname),
		"/etc/hostname":    hostname + "\n",
		"/etc/resolv.conf": hostResolvConf(),
	}
}

var loopbackNameserver = regexp.MustCompile(`(?m)^\s*nameserver\s+(127\.|::1\b)`)

// hostResolvConf is the host's resolver config; a loopback stub's
// upstream list replaces it, as the guest cannot reach the host's loopback.
func hostResolvConf() string {
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	if loopbackNameserver.Match(data) {
		if up, err := os.ReadFile("/run/systemd/resolve/resolv.conf"); err == nil {
			return string(up)
		}
	}
	return string(data)
}

// resolveUser turns an image's User ("", "uid", "name", "uid:gid",
// "name:group") into ids and a home, from rootfs's /etc/passwd and
// /etc/group. Names must exist there; numeric ids need not, as with Docker.
func resolveUser(rootfs, user string) (uid, gid uint32, groups []uint32, home string, err error) {
	home = "/"
	if user == "" {
		user = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	passwd := readDB(filepath.Join(rootfs, "etc", "passwd"))
	var entry []string
	if n, perr := strconv.ParseUint(userPart, 10, 32); perr == nil {
		uid = uint32(n)
		entry = find(passwd, 2, userPart)
		if entry == nil {
			gid = uid
		}
	} else {
		entry = find(passwd, 0, userPart)
		if entry == nil {
			return 0, 0, nil, "", fmt.Errorf("user %q is not in the image's /etc/passwd", userPart)
		}
		n, _ := strconv.ParseUint(entry[2], 10, 32)
		uid = uint32(n)
	}
	if entry != nil && len(entry) >= 6 {
		n, _ := strconv.ParseUint(entry[3], 10, 32)
		gid = uint32(n)
		if entry[5] != "" {
			home = entry[5]
		}
	}
	if uid == 0 && entry == nil {
		home = "/root"
	}
	if hasGroup {
		if n, perr := strconv.ParseUint(groupPart, 10, 32); perr == nil {
			gid = uint32(n)
		} else {
			g := find(readDB(filepath.Join(rootfs, "etc", "group")), 0, groupPart)
			if g == nil {
				return 0, 0, nil, "", fmt.Errorf("group %q is not in the image's /etc/group", groupPart)
			}
			n, _ := strconv.ParseUint(g[2], 10, 32)
			gid = uint32(n)
		}
	}
	return uid, gid, []uint32{gid}, home, nil
}

// readDB reads a colon-separated database, at most 1 MiB of it, without
// following the image's symlinks out of its rootfs.
func readDB(path string) [][]string {
	if fi, err := os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		out = append(out, strings.Split(sc.Text(), ":"))
	}
	return out
}

func find(db [][]string, field int, value string) []string {
	for _, f := range db {
		if len(f) > max(field, 2) && f[field] == value {
			return f
		}
	}
	return nil
}
