package proxy

import (
	"encoding/base64"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/rfc2136"
)

// dnsSetting is one setting of a DNS provider, given as key=value in
// --acme-dns-config or as the environment variable
// HYPERCORE_ACME_DNS_<KEY> (upper case).
type dnsSetting struct {
	key      string
	required bool
	def      string // used when the setting is not given
	help     string // shown when a required setting is missing
}

// dnsProviderInfo describes a built-in DNS provider for DNS-01.
type dnsProviderInfo struct {
	name     string
	settings []dnsSetting
	// build makes the provider from complete settings: every key is known,
	// required keys are present and defaults are filled in.
	build func(settings map[string]string) (certmagic.DNSProvider, error)
}

// dnsProviders are the built-in providers. To add one, import its libdns
// package (github.com/libdns/<name>) and add an entry that maps settings
// to its Provider struct; see docs/proxy.md.
var dnsProviders = []dnsProviderInfo{
	{
		// Standard dynamic DNS updates (RFC 2136) signed with TSIG:
		// BIND, Knot, PowerDNS, Windows DNS and others.
		name: "rfc2136",
		settings: []dnsSetting{
			{key: "server", required: true, help: "the zone's primary server, host or host:port"},
			{key: "key_name", required: true, help: "name of the TSIG key, as configured on the server"},
			// Secret: better in the environment than on the command line,
			// where ps shows it to every user of the host.
			{key: "key", required: true, help: "the TSIG secret, base64"},
			{key: "key_alg", def: "hmac-sha256"},
		},
		build: newRFC2136,
	},
}

func newRFC2136(s map[string]string) (certmagic.DNSProvider, error) {
	server := s["server"]
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
	}
	if _, err := base64.StdEncoding.DecodeString(s["key"]); err != nil {
		return nil, fmt.Errorf("key: the TSIG secret must be base64, as in BIND's key file: %w", err)
	}
	alg := strings.ToLower(strings.TrimSuffix(s["key_alg"], "."))
	if !slices.Contains([]string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}, alg) {
		return nil, fmt.Errorf("key_alg %q: use hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384 or hmac-sha512", s["key_alg"])
	}
	return &rfc2136.Provider{Server: server, KeyName: s["key_name"], Key: s["key"], KeyAlg: alg}, nil
}

// DNSProviderNames lists the names --acme-dns accepts.
func DNSProviderNames() []string {
	names := make([]string, len(dnsProviders))
	for i, p := range dnsProviders {
		names[i] = p.name
	}
	return names
}

// NewDNSProvider makes the built-in provider called name from settings,
// after checking that every key is one it knows (a typo would otherwise
// be ignored) and every required key is set.
func NewDNSProvider(name string, settings map[string]string) (certmagic.DNSProvider, error) {
	i := slices.IndexFunc(dnsProviders, func(p dnsProviderInfo) bool { return p.name == name })
	if i < 0 {
		return nil, fmt.Errorf("unknown DNS provider %q; built in: %s (others can be added, see docs/proxy.md)", name, strings.Join(DNSProviderNames(), ", "))
	}
	info := dnsProviders[i]
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(dnsSettingKeys(info), k) {
			return nil, fmt.Errorf("DNS provider %s has no setting %q; it takes %s", name, k, strings.Join(dnsSettingKeys(info), ", "))
		}
	}
	full := map[string]string{}
	var missing []string
	for _, st := range info.settings {
		v, ok := settings[st.key]
		switch {
		case ok && v != "":
			full[st.key] = v
		case st.def != "":
			full[st.key] = st.def
		case st.required:
			missing = append(missing, fmt.Sprintf("%s (%s; or HYPERCORE_ACME_DNS_%s)", st.key, st.help, strings.ToUpper(st.key)))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("DNS provider %s needs settings: %s", name, strings.Join(missing, "; "))
	}
	p, err := info.build(full)
	if err != nil {
		return nil, fmt.Errorf("DNS provider %s: %w", name, err)
	}
	return p, nil
}

func dnsSettingKeys(info dnsProviderInfo) []string {
	keys := make([]string, len(info.settings))
	for i, st := range info.settings {
		keys[i] = st.key
	}
	return keys
}

// ParseDNSConfig parses "key=value,key=value" as --acme-dns-config takes
// it. A value may hold '=' (base64 padding) but not ','.
func ParseDNSConfig(s string) (map[string]string, error) {
	out := map[string]string{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value; write settings as key=value,key=value", part)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("setting %q given twice", k)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// DNSConfigFromEnv returns the settings of provider name found in the
// environment as HYPERCORE_ACME_DNS_<KEY>, so secrets stay off the
// command line. getenv is os.Getenv outside tests.
func DNSConfigFromEnv(name string, getenv func(string) string) map[string]string {
	out := map[string]string{}
	i := slices.IndexFunc(dnsProviders, func(p dnsProviderInfo) bool { return p.name == name })
	if i < 0 {
		return out
	}
	for _, st := range dnsProviders[i].settings {
		if v := getenv("HYPERCORE_ACME_DNS_" + strings.ToUpper(st.key)); v != "" {
			out[st.key] = v
		}
	}
	return out
}
