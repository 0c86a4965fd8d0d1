package spec

import (
	"net"
	"regexp"
	"strconv"
	"strings"
)

// pathComponent is one repository path component of the distribution
// reference grammar: lowercase alphanumerics joined by '.', '_', '__' or
// dashes. It has no room for "..", "%2e" or an empty segment.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

var (
	hostLabel = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	tagRe     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRe  = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$`)
)

// checkImageRefSyntax parses ref by the distribution reference grammar
// before anything resolves or dials it: no URL scheme, no "." or ".."
// path segments (which a registry path would carry up the tree), and a
// registry that is a valid host name or IP address with an optional port.
func checkImageRefSyntax(ref string) error {
	if strings.Contains(ref, "://") {
		return fieldErr("image_ref", "%q has a URL scheme; give registry/repository:tag without one (for example registry.example:5000/web:1)", truncate(ref, 80))
	}
	for _, c := range ref {
		if c <= ' ' || c >= 0x7f {
			return fieldErr("image_ref", "%q holds a space, control or non-ASCII character", truncate(ref, 80))
		}
	}
	rest := ref
	if repo, digest, found := strings.Cut(rest, "@"); found {
		if !digestRe.MatchString(digest) {
			return fieldErr("image_ref", "%q has a malformed digest after '@' (want algorithm:hex)", truncate(ref, 80))
		}
		rest = repo
	}
	if slash, colon := strings.LastIndexByte(rest, '/'), strings.LastIndexByte(rest, ':'); colon > slash {
		if !tagRe.MatchString(rest[colon+1:]) {
			return fieldErr("image_ref", "%q has a malformed tag %q", truncate(ref, 80), truncate(rest[colon+1:], 40))
		}
		rest = rest[:colon]
	}
	parts := strings.Split(rest, "/")
	// The first part names a registry when more follow and it looks like
	// a host: a dot, a port, an IPv6 bracket, or localhost (docker's rule).
	if first := parts[0]; len(parts) > 1 && (strings.ContainsAny(first, ".:[") || first == "localhost") {
		if err := checkRegistryHost(first); err != nil {
			return fieldErr("image_ref", "%q: registry %v", truncate(ref, 80), err)
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if !pathComponent.MatchString(p) {
			return fieldErr("image_ref", "%q: repository path segment %q is not lowercase letters and digits joined by '.', '_' or '-' (no empty, '.' or '..' segments)", truncate(ref, 80), truncate(p, 40))
		}
	}
	return nil
}

// checkRegistryHost checks host[:port] of a registry: a host name, an IPv4
// address or an IPv6 address in brackets, and a port 1-65535.
func checkRegistryHost(hp string) error {
	if inner, ok := strings.CutPrefix(hp, "["); ok {
		host, rest, closed := strings.Cut(inner, "]")
		if !closed {
			return errString("has an unclosed '['")
		}
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return errString("has no IPv6 address in brackets")
		}
		if rest == "" {
			return nil
		}
		port, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return errString("has text after ']'")
		}
		return checkPort(port)
	}
	host, port, hasPort := strings.Cut(hp, ":")
	if hasPort {
		if err := checkPort(port); err != nil {
			return err
		}
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > maxHostLen {
		return errString("name is longer than 253 characters")
	}
	for _, l := range strings.Split(host, ".") {
		if !hostLabel.MatchString(l) {
			return errString("is not a valid host name")
		}
	}
	return nil
}

// CheckHostHeader checks an HTTP Host value: empty (HTTP/1.0), or a host
// name, IPv4 address or bracketed IPv6 address, with an optional trailing
// dot and an optional port 1-65535. net/http lets through some values no
// client sends, such as "[::1" or an overlong port.
func CheckHostHeader(h string) error {
	if h == "" {
		return nil
	}
	if host, port, ok := strings.Cut(h, ":"); ok && !strings.HasPrefix(h, "[") {
		h = strings.TrimSuffix(host, ".") + ":" + port
	} else if !strings.HasPrefix(h, "[") {
		h = strings.TrimSuffix(h, ".")
	}
	if err := checkRegistryHost(h); err != nil {
		return fieldErr("Host", "%q %v", truncate(h, 80), err)
	}
	return nil
}

// maxHostLen is the longest DNS name.
const maxHostLen = 253

// checkPort checks a port number: 1-65535, no sign or leading zero.
func checkPort(p string) error {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || p[0] == '0' {
		return errString("has a port that is not 1-65535")
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }
