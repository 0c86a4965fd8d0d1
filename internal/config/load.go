package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"

	"github.com/hypercore-dev/hypercore/internal/proxy"
)

// Sources are where Load reads settings from.
type Sources struct {
	// Flags are the parsed flags, with those of AddFlags; only flags
	// given on the command line count. Nil means none.
	Flags *pflag.FlagSet
	// Args are the command's arguments, the join addresses; when there
	// are any they replace join from the environment or the file.
	Args []string
	// Getenv reads the environment; nil means os.Getenv. A variable set
	// to "" counts as unset.
	Getenv func(string) string
}

// Load returns the daemon's settings, checked: each comes from its flag if
// given, else its HYPERCORE_<KEY> variable if set, else the --config file
// (or HYPERCORE_CONFIG) if that has it, else Default. An unknown key in
// the file is an error naming the key and the file.
func Load(src Sources) (*Config, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Default()
	c.origin = map[string]string{}

	path := strings.TrimSpace(getenv(envName(ConfigFlag)))
	if f := flag(src.Flags, ConfigFlag); f != nil {
		path = f.Value.String()
	}
	if path != "" {
		if err := c.readFile(path); err != nil {
			return nil, err
		}
	}
	for _, k := range keys() {
		env := envName(k.name)
		if v := strings.TrimSpace(getenv(env)); v != "" {
			if err := set(k.field(&c), v); err != nil {
				return nil, fmt.Errorf("%s=%w", env, err)
			}
			c.origin[k.name] = env
		}
		if k.flag == "" {
			continue
		}
		if f := flag(src.Flags, k.flag); f != nil {
			v := f.Value.String()
			if list, ok := f.Value.(pflag.SliceValue); ok { // a repeatable flag
				v = strings.Join(list.GetSlice(), ",")
			}
			if err := set(k.field(&c), v); err != nil {
				return nil, fmt.Errorf("--%s %w", k.flag, err)
			}
			c.origin[k.name] = "--" + k.flag
		}
	}
	if len(src.Args) > 0 {
		c.Join = slices.Clone(src.Args)
		c.origin["join"] = "JOIN_ADDR"
	}
	// The DNS provider's settings may be secrets, kept off the command
	// line and out of files in variables of their own.
	c.dnsEnv = proxy.DNSConfigFromEnv(c.ACMEDNS, getenv)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// flag returns the flag called name in fs if it was given, else nil.
func flag(fs *pflag.FlagSet, name string) *pflag.Flag {
	if fs == nil {
		return nil
	}
	if f := fs.Lookup(name); f != nil && f.Changed {
		return f
	}
	return nil
}

// readFile applies the TOML file at path onto c.
func (c *Config) readFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	where := "config file " + path
	values, err := decodeFile(data, where)
	if err != nil {
		return err
	}
	for _, k := range keys() {
		v, ok := values[k.name]
		if !ok {
			continue
		}
		if err := setValue(k.field(c), v); err != nil {
			return fmt.Errorf("%s: %s: %w", where, k.name, err)
		}
		c.origin[k.name] = where + ": " + k.name
	}
	return nil
}

// fileType is a struct with one field per key, of type any, for
// go-toml's strict decoding: it knows unknown keys only against a struct.
// Fields of type any take whatever TOML value is there; setValue then
// checks it with an error that names the key.
var fileType = func() reflect.Type {
	var fields []reflect.StructField
	for i, k := range keys() {
		fields = append(fields, reflect.StructField{
			Name: "K" + strconv.Itoa(i),
			Type: reflect.TypeFor[any](),
			Tag:  reflect.StructTag(`toml:"` + k.name + `"`),
		})
	}
	return reflect.StructOf(fields)
}()

// decodeFile parses a config file into its values by key; a key the file
// does not set is absent. Unknown keys are an error that names each one
// with its line. Errors start with where, which names the file.
func decodeFile(data []byte, where string) (map[string]any, error) {
	v := reflect.New(fileType)
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(v.Interface()); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return nil, unknownKeys(strict, where)
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%s: line %d column %d: %w; the file is TOML, key = value a line", where, row, col, err)
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	out := map[string]any{}
	for i, k := range keys() {
		if f := v.Elem().Field(i); !f.IsNil() {
			out[k.name] = f.Interface()
		}
	}
	return out, nil
}

// unknownKeys names every key of the file that is not a setting, with a
// hint when it is a setting spelled as its flag.
func unknownKeys(strict *toml.StrictMissingError, where string) error {
	var errs []error
	for _, e := range strict.Errors {
		name := strings.Join(e.Key(), ".")
		row, _ := e.Position()
		hint := "see docs/config.md for the keys"
		if k := lookup(strings.ReplaceAll(name, "-", "_")); k != nil {
			hint = "did you mean " + k.name + "?"
		}
		errs = append(errs, fmt.Errorf("%s: unknown key %q on line %d; %s", where, name, row, hint))
	}
	return errors.Join(errs...)
}

// setValue reads v, a value as the TOML decoder gives it, into the field
// p. A string is read as a flag's value would be; otherwise the TOML type
// must be the setting's own (a boolean, an integer, an array of strings).
func setValue(p any, v any) error {
	if s, ok := v.(string); ok {
		return set(p, s)
	}
	switch p := p.(type) {
	case *bool:
		if b, ok := v.(bool); ok {
			*p = b
			return nil
		}
		return fmt.Errorf("want true or false, not %v", v)
	case *int:
		if n, ok := v.(int64); ok && int64(int(n)) == n {
			*p = int(n)
			return nil
		}
		return fmt.Errorf("want a whole number, not %v", v)
	case *time.Duration:
		return fmt.Errorf("want a duration as a string such as \"90s\", \"10m\" or \"1h\", not %v", v)
	case *[]string:
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("want an array of strings such as [\"10.0.0.1:7946\"], not %v", v)
		}
		*p = nil
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("want an array of strings such as [\"10.0.0.1:7946\"], not %v", v)
			}
			*p = append(*p, s)
		}
		return nil
	}
	return fmt.Errorf("want a string, not %v", v)
}
