package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// FuzzWorkloadID checks host routing: an id is found only in
// "<id>.<base>[:port]" with one label, lower-cased, whatever the bytes.
func FuzzWorkloadID(f *testing.F) {
	for _, h := range []string{
		"abc.example.test", "ABC.Example.Test:8080", "abc.example.test.", "a.b.example.test", ".example.test",
		"example.test", "abc.example.test:", "[::1]:80", "abc.example.test.evil", "x\x00.example.test", "abcexample.test",
	} {
		f.Add(h)
	}
	p := New("example.test", NewTable(), nil)
	f.Fuzz(func(t *testing.T, host string) {
		id, ok := p.workloadID(host)
		if !ok {
			if id != "" {
				t.Fatalf("workloadID(%q) = %q with ok false", host, id)
			}
			return
		}
		if id == "" || strings.ContainsAny(id, ".:") || id != strings.ToLower(id) {
			t.Fatalf("workloadID(%q) = %q", host, id)
		}
		h := strings.ToLower(host)
		if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
			if _, _, ok := strings.Cut(h, "]"); !ok {
				h = h[:i]
			}
		}
		h = strings.TrimSuffix(h, ".")
		if h != id+".example.test" {
			t.Fatalf("workloadID(%q) = %q, but the host is %q", host, id, h)
		}
	})
}

// netHTTPRequest reads a request head as net/http's server does: the
// parser and the checks its server adds (one valid Host, valid header
// names and values).
func netHTTPRequest(head []byte) (*http.Request, bool) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		return nil, false
	}
	// ReadRequest drops the Host field (the server's own reader keeps it
	// for these checks), so count it in the raw header.
	_, fields, _ := bytes.Cut(head, []byte("\n"))
	mh, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(fields))).ReadMIMEHeader()
	if err != nil {
		return nil, false
	}
	hosts := mh["Host"]
	if req.ProtoAtLeast(1, 1) && len(hosts) == 0 {
		return nil, false
	}
	if len(hosts) > 1 || (len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0])) {
		return nil, false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, false
			}
		}
	}
	return req, true
}

// FuzzFastPathParse is a differential fuzz of the proxy's HTTP/1.1 fast
// path against net/http: every request head the fast path takes, net/http
// must take too and read as the same request (method, target, Host and
// every other header field), with no body. The fast path may refuse more:
// it hands those to net/http.
func FuzzFastPathParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: abc.example.test\r\n\r\n",
		"HEAD /x?y=1 HTTP/1.1\r\nHost: abc.example.test\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.example.test\r\nHost: b.example.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nhOsT: a\r\nX-A:\t v \t\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headEnd(data)
		if n < 0 {
			return
		}
		head := data[:n]
		var fr fastRequest
		if !parseRequest(head, &fr) {
			return
		}
		req, ok := netHTTPRequest(head)
		if !ok {
			t.Fatalf("the fast path takes %q, which net/http refuses", head)
		}
		method, rest, _ := strings.Cut(string(fr.line), " ")
		target, _, _ := strings.Cut(rest, " ")
		if req.Method != method || req.RequestURI != target || req.Host != string(fr.host) {
			t.Fatalf("%q: fast path reads %s %s host %q; net/http %s %s host %q", head, method, target, fr.host, req.Method, req.RequestURI, req.Host)
		}
		if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
			t.Fatalf("%q: net/http sees a body the fast path would not forward", head)
		}
		if b, _ := io.ReadAll(req.Body); len(b) > 0 {
			t.Fatalf("%q: net/http reads a body of %d bytes", head, len(b))
		}
		// Every other field, as both read it.
		fast := map[string][]string{}
		fields := fr.fields
		for len(fields) > 0 {
			line, rest, ok := nextLine(fields)
			if !ok {
				t.Fatalf("%q: the fast path's fields do not split into lines", head)
			}
			fields = rest
			name, value, _ := splitField(line)
			k := http.CanonicalHeaderKey(string(name))
			if k == "Host" {
				continue
			}
			fast[k] = append(fast[k], string(value))
		}
		for k, vv := range req.Header {
			if k == "Host" {
				continue
			}
			if strings.Join(fast[k], "\x00") != strings.Join(vv, "\x00") {
				t.Fatalf("%q: field %s is %q on the fast path, %q in net/http", head, k, fast[k], vv)
			}
			delete(fast, k)
		}
		if len(fast) > 0 {
			t.Fatalf("%q: the fast path forwards fields net/http does not see: %v", head, fast)
		}
	})
}
