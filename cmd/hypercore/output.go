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

// rest sends method path, with body if not nil, to the node's REST API and
// returns the answer's body. An answer other than 200 is an error that
// starts with what and carries the API's own message.
func (c *client) rest(ctx context.Context, what, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no hypercore node answers at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.Unmarshal(out, &e)
		return nil, fmt.Errorf("%s: %s: %s", what, resp.Status, e.Error)
	}
	return out, nil
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
