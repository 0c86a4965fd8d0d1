package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
)

// maxRESTAnswer bounds what the CLI reads of a REST answer.
const maxRESTAnswer = 8 << 20

// rest sends method path to the node's REST API, with body if not nil,
// and takes an answer of status want into out: decoded JSON, the raw bytes
// for a *[]byte, or nothing for nil. Any other answer is an error with the
// API's own message, or a hint when TLS is what failed.
func (c *client) rest(ctx context.Context, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		ct := "application/octet-stream" // a secret's value is raw bytes
		if json.Valid(body) {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if h := tlsHint(err.Error()); h != nil {
			return h
		}
		return fmt.Errorf("no hypercore node answers at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTAnswer))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		if h := tlsHint(string(data)); h != nil {
			return h
		}
		return fmt.Errorf("%s: %s", resp.Status, apiMessage(data))
	}
	switch o := out.(type) {
	case nil:
	case *[]byte:
		*o = data
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("unreadable answer: %w", err)
		}
	}
	return nil
}

// table is a listing on stdout: columns aligned, the header first.
type table struct{ tw *tabwriter.Writer }

// newTable starts a table on w with the given column names.
func newTable(w io.Writer, columns ...string) table {
	t := table{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	fmt.Fprintln(t.tw, strings.Join(columns, "\t"))
	return t
}

// row adds a row of cells, formatted with %v.
func (t table) row(cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
}

// flush writes the table out.
func (t table) flush() error { return t.tw.Flush() }

// printJSON prints v as indented JSON on stdout, for --json.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
