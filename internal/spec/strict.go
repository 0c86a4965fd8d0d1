package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// MaxJSONDepth bounds how deeply a request body may nest arrays and
// objects. No API body needs more than three levels; the bound keeps a
// hostile body from costing more than its size.
const MaxJSONDepth = 16

// CheckStrictJSON walks a JSON body once before it is decoded and refuses
// what encoding/json and protojson would let through silently: a key that
// appears twice in one object (the last one would win), a top-level key
// that differs from a known one only in case (encoding/json matches keys
// case-insensitively), and nesting deeper than MaxJSONDepth. known is the
// set of the top-level keys the body may carry; nil skips that check.
// Errors are *FieldError naming the key.
func CheckStrictJSON(data []byte, known []string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := strictWalker{dec: dec, known: known}
	if err := w.value(0, "", "body"); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fieldErr("body", "has data after the JSON value")
	}
	return nil
}

type strictWalker struct {
	dec   *json.Decoder
	known []string
}

// value reads one value at depth; path names it for errors ("" is the
// body), and top is the top-level key it lies under ("body" for the body).
func (w *strictWalker) value(depth int, path, top string) error {
	tok, err := w.dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fieldErr("body", "is empty or cut short; send a JSON object")
		}
		return fieldErr("body", "is not valid JSON: %v", err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= MaxJSONDepth {
		return fieldErr(top, "nests deeper than %d levels", MaxJSONDepth)
	}
	switch d {
	case '[':
		for i := 0; w.dec.More(); i++ {
			if err := w.value(depth+1, path+"["+strconv.Itoa(i)+"]", top); err != nil {
				return err
			}
		}
	case '{':
		seen := map[string]bool{}
		for w.dec.More() {
			tok, err := w.dec.Token()
			if err != nil {
				return fieldErr("body", "is not valid JSON: %v", err)
			}
			key, _ := tok.(string)
			field := key
			if path != "" {
				field = path + "." + key
			}
			if seen[key] {
				return fieldErr(field, "appears twice; send each key once")
			}
			seen[key] = true
			under := top
			if depth == 0 {
				under = key
				if w.known != nil {
					if err := checkKnownKey(key, w.known); err != nil {
						return err
					}
				}
			}
			if err := w.value(depth+1, field, under); err != nil {
				return err
			}
		}
	}
	if _, err := w.dec.Token(); err != nil { // the closing delimiter
		return fieldErr("body", "is not valid JSON: %v", err)
	}
	return nil
}

// checkKnownKey refuses a key that is not in known, saying which known key
// it matches but for case.
func checkKnownKey(key string, known []string) error {
	for _, k := range known {
		if k == key {
			return nil
		}
	}
	for _, k := range known {
		if strings.EqualFold(k, key) {
			return fieldErr(key, "is not a known field: keys are case-sensitive; write %q", k)
		}
	}
	return fieldErr(key, "is not a known field")
}

// jsonKeys lists the JSON names of a struct type's fields, the top-level
// keys CheckStrictJSON accepts for it.
func jsonKeys(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		keys = append(keys, name)
	}
	return keys
}
