package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// SpawnRequest is a validated spawn: what to run, and whether only to check
// and place it.
type SpawnRequest struct {
	Spec   Spec
	DryRun bool
	// RequestID is the client's idempotency key (ParseRequestID), or "":
	// a spawn with a key the cluster has seen answers the workload the
	// first one made instead of making another.
	RequestID string
}

// spawnJSON is the body of the classic /spawn API's POST /spawn, plus the
// fields hypercore adds (isolation, args, tty).
type spawnJSON struct {
	Cores     *float64         `json:"cores"`
	Memory    *int64           `json:"memory"`
	Disk      int64            `json:"disk"`
	ImageRef  string           `json:"image_ref"`
	Ports     map[string]int64 `json:"ports"`
	Env       []string         `json:"env"`
	DryRun    bool             `json:"dry_run"`
	Isolation string           `json:"isolation"`
	Args      []string         `json:"args"`
	Tty       bool             `json:"tty"`
	Egress    []string         `json:"egress"`
	// Secrets maps environment names to secret names.
	Secrets  map[string]string `json:"secrets"`
	Security Security          `json:"security"`

	Restart    string            `json:"restart"`
	Volumes    map[string]string `json:"volumes"`
	Entrypoint []string          `json:"entrypoint"`
	Workdir    string            `json:"workdir"`
	User       string            `json:"user"`
}

// DecodeSpawnJSON reads the classic /spawn body from r. It refuses unknown
// fields, trailing data, bodies over MaxBodyBytes and anything Build refuses.
func DecodeSpawnJSON(r io.Reader) (SpawnRequest, error) {
	var in spawnJSON
	if err := DecodeJSON(r, &in); err != nil {
		return SpawnRequest{}, err
	}
	input := Input{
		Image: in.ImageRef, Ports: in.Ports, Env: in.Env, Args: in.Args,
		Isolation: in.Isolation, Tty: in.Tty, Egress: in.Egress, Secrets: in.Secrets, DiskMiB: in.Disk,
		Security: in.Security,
		Restart:  in.Restart, Volumes: in.Volumes, Entrypoint: in.Entrypoint, Workdir: in.Workdir, User: in.User,
	}
	if in.Cores != nil {
		input.Cores = *in.Cores
		if *in.Cores == 0 {
			return SpawnRequest{}, fieldErr("cores", "must be more than 0")
		}
	}
	if in.Memory != nil {
		input.MemoryMiB = *in.Memory
		if *in.Memory == 0 {
			return SpawnRequest{}, fieldErr("memory", "must be more than 0")
		}
	}
	s, err := Build(input)
	if err != nil {
		return SpawnRequest{}, err
	}
	return SpawnRequest{Spec: s, DryRun: in.DryRun}, nil
}

// IDRequest is the body of the classic API's calls that name one workload,
// such as POST /stop.
type IDRequest struct {
	ID string `json:"id"`
}

// DecodeIDJSON reads {"id": "..."} from r and returns the checked id.
func DecodeIDJSON(r io.Reader) (ID, error) {
	var in IDRequest
	if err := DecodeJSON(r, &in); err != nil {
		return "", err
	}
	return ParseID(in.ID)
}

// DecodeJSON strictly decodes one JSON object from r into v: unknown
// fields, keys in the wrong case, a key given twice, nesting deeper than
// MaxJSONDepth, a second value and bodies over MaxBodyBytes are errors that
// name the problem.
func DecodeJSON(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return fieldErr("body", "could not be read: %v", err)
	}
	if len(data) > MaxBodyBytes {
		return fieldErr("body", "is larger than %d bytes", MaxBodyBytes)
	}
	if err := CheckStrictJSON(data, jsonKeys(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonErr(err)
	}
	if dec.More() {
		return fieldErr("body", "has data after the JSON object")
	}
	return nil
}

func jsonErr(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		if i := strings.IndexByte(field, '.'); i > 0 {
			field = field[:i]
		}
		return fieldErr(field, "has a %s where a %s is expected", typeErr.Value, typeErr.Type)
	case errors.As(err, &syntaxErr):
		return fieldErr("body", "is not valid JSON at byte %d: %v", syntaxErr.Offset, err)
	case errors.Is(err, io.EOF):
		return fieldErr("body", "is empty; send a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldErr(f, "is not a known field")
	}
	return fieldErr("body", "is not valid JSON: %v", err)
}

// HAC is a hac.toml hardware-as-code file: its [spacecore] and [hardware]
// tables. Kernel, drive and interface are hac.toml's microVM settings;
// hypercore builds those itself, so they are accepted and ignored.
type HAC struct {
	Spacecore struct {
		Name        string `toml:"name"`
		Description string `toml:"description"`
	} `toml:"spacecore"`
	Hardware struct {
		Cores     float64          `toml:"cores"`
		Memory    int64            `toml:"memory"`
		Disk      int64            `toml:"disk"`
		Ref       string           `toml:"ref"`
		Provider  string           `toml:"provider"`
		Kernel    string           `toml:"kernel"`
		Drive     string           `toml:"drive"`
		Interface string           `toml:"interface"`
		Ports     map[string]int64 `toml:"ports"`
		Env       []string         `toml:"env"`
		Args      []string         `toml:"args"`
		Egress    []string         `toml:"egress"`
		// Secrets maps environment names to secret names.
		Secrets map[string]string `toml:"secrets"`

		Restart    string            `toml:"restart"`
		Volumes    map[string]string `toml:"volumes"`
		Entrypoint []string          `toml:"entrypoint"`
		Workdir    string            `toml:"workdir"`
		User       string            `toml:"user"`
	} `toml:"hardware"`
	// Security is the [security] table: seccomp and userns, as in the
	// JSON spec's security object.
	Security struct {
		Seccomp string `toml:"seccomp"`
		UserNS  string `toml:"userns"`
	} `toml:"security"`
}

// ParseHAC reads a hac.toml file and returns the Spec it describes. Unknown
// keys are errors, so a typo does not silently fall back to a default.
func ParseHAC(data []byte) (Spec, error) {
	var h HAC
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return Spec{}, fieldErr("hac.toml", "unknown key: %s", strict.String())
		}
		return Spec{}, fieldErr("hac.toml", "%v", err)
	}
	return Build(Input{
		Image:      h.Hardware.Ref,
		Cores:      h.Hardware.Cores,
		MemoryMiB:  h.Hardware.Memory,
		DiskMiB:    h.Hardware.Disk,
		Ports:      h.Hardware.Ports,
		Env:        h.Hardware.Env,
		Secrets:    h.Hardware.Secrets,
		Args:       h.Hardware.Args,
		Egress:     h.Hardware.Egress,
		Isolation:  providerIsolation(h.Hardware.Provider),
		Security:   Security{Seccomp: h.Security.Seccomp, UserNS: h.Security.UserNS},
		Restart:    h.Hardware.Restart,
		Volumes:    h.Hardware.Volumes,
		Entrypoint: h.Hardware.Entrypoint,
		Workdir:    h.Hardware.Workdir,
		User:       h.Hardware.User,
	})
}

// providerIsolation maps hac.toml's VM providers onto isolations: every VMM
// is a microVM to the scheduler.
func providerIsolation(p string) string {
	switch strings.ToLower(p) {
	case "firecracker", "cloud-hypervisor", "cloudhypervisor", "qemu", "vm":
		return string(IsolationMicroVM)
	case "runsc":
		return string(IsolationGVisor)
	case "runc", "crun":
		return string(IsolationContainer)
	}
	return p
}
