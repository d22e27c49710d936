package config_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// secretMarker marks the seeds' secret values. A value at a secret position
// that contains it must never come back in an error.
const secretMarker = "S3CRET"

// connectionSeeds are files the fuzzer starts from: valid ones, every kind
// of broken one, and secret values in each place a confused operator might
// paste one.
var connectionSeeds = []string{
	`{"connections": [{"name": "xero", "provider": "xero"}]}`,
	`{"connections": [{"name": "graph", "provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "scopes": ["https://graph.microsoft.com/.default", "offline_access"], "clientId": "00000000-0000-0000-0000-000000000001"}]}`,
	`{"connections": [{"name": "ilevel", "grant": "client_credentials", "tokenUrl": "https://id.example.com/token", "clientAuth": "body", "scopes": ["api"], "params": {"audience": "x"}, "secrets": {"clientSecret": "ilevel-shared"}, "refreshBefore": "10m", "defaultLifetime": "1h", "allowedCallers": ["11111111-2222-3333-4444-555555555555"]}]}`,
	`{"$comment": ["a", "b"], "connections": [{"name": "l", "tokenUrl": "http://127.0.0.1:8080/token", "clientAuth": "basic", "rotating": true, "reuseGrace": "5m", "idleExpiry": "60d"}]}`,
	`{"connections": [{"name": "m", "tokenUrl": "https://login.example.com/{tenant}/token", "clientAuth": "body", "tenant": "72F988BF-86F1-41AF-91AB-2D7CD011DB47"}]}`,
	"\uFEFF" + `{"connections": [{"name": "s", "provider": "salesforce", "tokenUrl": "https://contoso.my.salesforce.com/services/oauth2/token", "defaultLifetime": "30m"}]}`,
	// Broken files.
	``,
	`{"connections": [`,
	`{"connections": [{"name": "xero", "provider": "xero"},]}`,
	`{"connections": {"name": "xero"}}`,
	`{"connections": [{"name": 5, "provider": ["xero"], "rotating": "yes", "scopes": "api", "params": ["a"], "allowedCallers": "x"}]}`,
	`{"connections": [{"name": "xero", "provider": "xero", "colour": "blue"}], "version": 2}`,
	`{"connections": [{"name": "dup", "provider": "xero"}, {"name": "dup", "provider": "google"}]}`,
	`{"connections": [{"name": "c", "provider": "xer0"}, {"name": "d", "provider": "entra"}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "http://id.example.com/token", "clientAuth": "body"}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "refreshBefore": "5 minutes", "defaultLifetime": "30s", "idleExpiry": "401d", "reuseGrace": "-1m"}]}`,
	`{"connections": [{"name": "a", "provider": "xero", "secrets": {"refreshToken": "shared-rt"}}, {"name": "b", "provider": "xero", "secrets": {"refreshToken": "Shared-RT", "accessToken": "a-access-token"}}]}`,
	`{"connections": [{"name": "c", "provider": "microsoft"}, {"name": "Bad_Name", "provider": "microsoft", "tenant": "not a tenant"}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "grant": "client_credentials", "rotating": true, "reuseGrace": "1m", "idleExpiry": "1d", "secrets": {"refreshToken": "c-rt"}}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "clientId": "abc", "secrets": {"clientId": "c-id"}}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "http://[::1%25eth0]:8080/token", "clientAuth": "basic"}]}`,
	`null`,
	`[]`,
	"{\"connections\": [{\"name\": \"c\xff\", \"provider\": \"xero\"}]}",
	// Secret values where they do not belong.
	`{"connections": [{"name": "c", "provider": "xero", "client_secret": "S3CRET/value+1="}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "refreshToken": "S3CRET-rt/2", "accessToken": {"v": "S3CRET-at/3"}}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "secrets": {"clientSecret": "S3CRET/not+a=name", "client_secret": "S3CRET/x"}}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "params": {"client_secret": "S3CRET/p1", "audience": 7, "resource": "S3CRET/p2"}}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "https://id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "ftp://id:S3CRET-pw@id.example.com/token", "clientAuth": "body"}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "https://id:S3CRET%zz@id.example.com/token", "clientAuth": "body"}]}`,
	`{"connections": [{"name": "c", "tokenUrl": "https://id:S3CRET-pw@login.example.com/{tenant}/token", "clientAuth": "body"}]}`,
	`{"connections": [{"name": "c", "provider": "xero", "tokenUrl": "https://id:S3CRET-pw@id.example.com/token", "tenant": "common"}]}`,
	`{"connections": [{"name": "c", "provider": "xero"}], "clientSecret": "S3CRET/top"}`,
}

func FuzzParseConnections(f *testing.F) {
	for _, s := range connectionSeeds {
		f.Add([]byte(s))
	}
	if data, err := os.ReadFile("../../../examples/every-kind.json"); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conns, err := config.ParseConnections(data)
		if err == nil {
			checkConnections(t, conns)
			return
		}
		if conns != nil {
			t.Errorf("ParseConnections returned %d connections along with an error", len(conns))
		}
		checkValidationError(t, data, err)
	})
}

var (
	connectionNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	secretNameRE     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]{0,126}$`)
	lowerGUIDRE      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

var reservedParams = []string{
	"assertion", "client_assertion", "client_assertion_type", "client_id", "client_secret", "code",
	"code_verifier", "grant_type", "password", "redirect_uri", "refresh_token", "scope", "username",
}

// checkConnections asserts the documented rules on a parsed file, and that
// the oauth grant would send a request for every connection.
func checkConnections(t *testing.T, conns []broker.Connection) {
	t.Helper()
	if len(conns) == 0 {
		t.Fatal("a file without connections was accepted")
	}
	presets := map[string]bool{}
	for _, p := range config.Presets() {
		presets[p.Name] = true
	}
	names := map[string]bool{}
	// written collects the secrets a refresh writes, to check that no two
	// writers share one (Key Vault names are case-insensitive).
	type use struct{ conn, role string }
	written := map[string]use{}
	read := map[string]use{}
	for i, c := range conns {
		where := fmt.Sprintf("connections[%d] (%q)", i, c.Name)
		if !connectionNameRE.MatchString(c.Name) {
			t.Errorf("%s: name accepted that is not 1-63 of a-z0-9- starting with a letter", where)
		}
		if names[c.Name] {
			t.Errorf("%s: duplicate name accepted", where)
		}
		names[c.Name] = true
		if !presets[c.Provider] {
			t.Errorf("%s: provider %q is not a preset", where, c.Provider)
		}
		refresh := c.Grant == broker.GrantRefreshToken
		if !refresh && c.Grant != broker.GrantClientCredentials {
			t.Errorf("%s: grant %q", where, c.Grant)
		}
		if c.AuthStyle != broker.AuthBasic && c.AuthStyle != broker.AuthBody {
			t.Errorf("%s: clientAuth %q", where, c.AuthStyle)
		}
		checkTokenURL(t, where, c.TokenURL)
		for j, s := range c.Scopes {
			if s == "" || strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '"' || r == '\\' }) >= 0 {
				t.Errorf("%s: scopes[%d] %q is not an RFC 6749 scope-token", where, j, s)
			}
		}
		for k := range c.Params {
			if k == "" || strings.ContainsFunc(k, func(r rune) bool { return r <= ' ' || r == 0x7f }) ||
				slices.Contains(reservedParams, strings.ToLower(k)) {
				t.Errorf("%s: params key %q accepted", where, k)
			}
		}
		if c.ClientID != "" && (len(c.ClientID) > 1024 || strings.ContainsFunc(c.ClientID, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
			t.Errorf("%s: clientId %q accepted", where, c.ClientID)
		}
		for role, name := range map[string]string{
			"clientId": c.Secrets.ClientID, "clientSecret": c.Secrets.ClientSecret,
			"refreshToken": c.Secrets.RefreshToken, "accessToken": c.Secrets.AccessToken,
		} {
			if !secretNameRE.MatchString(name) {
				t.Errorf("%s: secrets.%s %q is not a Key Vault secret name", where, role, name)
			}
		}
		if !refresh && (c.Rotating || c.ReuseGrace != 0 || c.IdleExpiry != 0) {
			t.Errorf("%s: client_credentials with rotating %v, reuseGrace %v, idleExpiry %v", where, c.Rotating, c.ReuseGrace, c.IdleExpiry)
		}
		if c.ReuseGrace > 0 && !c.Rotating {
			t.Errorf("%s: reuseGrace %v without rotation", where, c.ReuseGrace)
		}
		durations := []struct {
			name    string
			d       time.Duration
			lo, hi  time.Duration
			nonZero bool
		}{
			{"reuseGrace", c.ReuseGrace, 0, 24 * time.Hour, false},
			{"refreshBefore", c.RefreshBefore, 0, 24 * time.Hour, false},
			{"defaultLifetime", c.DefaultLifetime, time.Minute, 24 * time.Hour, true},
			{"idleExpiry", c.IdleExpiry, 0, 400 * 24 * time.Hour, false},
		}
		for _, d := range durations {
			if d.d < d.lo || d.d > d.hi || (d.nonZero && d.d <= 0) {
				t.Errorf("%s: %s %v outside [%v, %v]", where, d.name, d.d, d.lo, d.hi)
			}
		}
		if c.AllowedCallers != nil && len(c.AllowedCallers) == 0 {
			t.Errorf("%s: empty allowedCallers accepted (it would read as nobody, yet allow everybody)", where)
		}
		seen := map[string]bool{}
		for j, id := range c.AllowedCallers {
			if !lowerGUIDRE.MatchString(id) || seen[id] {
				t.Errorf("%s: allowedCallers[%d] %q is not a unique lower-case GUID", where, j, id)
			}
			seen[id] = true
		}

		uses := map[string]string{"clientSecret": c.Secrets.ClientSecret, "accessToken": c.Secrets.AccessToken}
		if c.ClientID == "" {
			uses["clientId"] = c.Secrets.ClientID
		}
		if refresh {
			uses["refreshToken"] = c.Secrets.RefreshToken
		}
		for _, role := range slices.Sorted(maps.Keys(uses)) {
			key := strings.ToLower(uses[role])
			u := use{c.Name, role}
			if prev, ok := written[key]; ok {
				t.Errorf("%s: secret %q of %s is also written as %s of %q", where, uses[role], role, prev.role, prev.conn)
			}
			if role == "refreshToken" || role == "accessToken" {
				if prev, ok := read[key]; ok {
					t.Errorf("%s: secret %q written as %s is also read as %s of %q", where, uses[role], role, prev.role, prev.conn)
				}
				written[key] = u
			} else {
				read[key] = u
			}
		}

		checkGrantAccepts(t, where, c)
	}
}

// checkTokenURL asserts DESIGN.md's rule (https, or http on loopback) and
// that the grant's own check agrees.
func checkTokenURL(t *testing.T, where, raw string) {
	t.Helper()
	if err := oauth.CheckTokenURL(raw); err != nil {
		t.Errorf("%s: tokenUrl %q accepted by config but refused by oauth: %v", where, raw, err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Errorf("%s: tokenUrl %q does not parse: %v", where, raw, err)
		return
	}
	switch {
	case u.User != nil || u.Fragment != "" || u.Host == "" || strings.Contains(raw, "{tenant}"):
		t.Errorf("%s: tokenUrl %q has credentials, a fragment, no host or a placeholder", where, raw)
	case u.Scheme == "https":
	case u.Scheme == "http":
		host := u.Hostname()
		addr, err := netip.ParseAddr(host)
		if !strings.EqualFold(host, "localhost") && (err != nil || !addr.IsLoopback()) {
			t.Errorf("%s: http tokenUrl %q on a host that is not loopback", where, raw)
		}
	default:
		t.Errorf("%s: tokenUrl %q is not https", where, raw)
	}
}

// checkGrantAccepts sends one token request for c through the oauth client,
// answered in memory: a connection the file accepts must never fail as
// ErrInvalidConnection at its first refresh.
func checkGrantAccepts(t *testing.T, where string, c broker.Connection) {
	t.Helper()
	sent := 0
	transport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent++
		return &http.Response{
			StatusCode: http.StatusOK, Request: r,
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(`{"access_token":"at","token_type":"Bearer","expires_in":3600}`)),
		}, nil
	})
	client := oauth.New(oauth.Options{Transport: transport, MaxAttempts: 1, Backoff: time.Millisecond, Timeout: 5 * time.Second})
	cred := broker.Credentials{ClientID: "id", ClientSecret: "cs", RefreshToken: "rt"}
	if _, err := client.Token(context.Background(), &c, cred); err != nil {
		t.Errorf("%s: accepted by config, but the grant refuses it: %v", where, err)
	}
	if sent != 1 {
		t.Errorf("%s: %d requests sent, want 1", where, sent)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// checkValidationError asserts the shape of a failure: a *ValidationError
// whose every line says where the problem is, and which never repeats a
// secret value found at a secret position of data.
func checkValidationError(t *testing.T, data []byte, err error) {
	t.Helper()
	var ve *config.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %T is not a *config.ValidationError: %v", err, err)
	}
	if len(ve.Problems) == 0 {
		t.Fatal("ValidationError without problems")
	}
	text := err.Error()
	lines := strings.Split(text, "\n")
	if len(lines) != len(ve.Problems) {
		t.Errorf("Error() has %d lines for %d problems", len(lines), len(ve.Problems))
	}
	count := connectionCount(data)
	for i, p := range ve.Problems {
		line := p.String()
		if i < len(lines) && lines[i] != line {
			t.Errorf("line %d of Error() is not problem %d's String()", i, i)
		}
		if strings.TrimSpace(p.Message) == "" {
			t.Errorf("problem %d has no message: %q", i, line)
		}
		if !utf8Valid(line) {
			t.Errorf("problem %d is not valid UTF-8", i)
		}
		switch {
		case p.Index >= 0:
			if count >= 0 && p.Index >= count {
				t.Errorf("problem %d names connections[%d] of %d", i, p.Index, count)
			}
			if !strings.HasPrefix(line, fmt.Sprintf("connections[%d]", p.Index)) {
				t.Errorf("problem %d does not start with its connection: %q", i, line)
			}
			if p.Connection != "" && !strings.Contains(line, fmt.Sprintf("(%q)", p.Connection)) {
				t.Errorf("problem %d does not name connection %q: %q", i, p.Connection, line)
			}
		case p.Index == -1:
			if p.Connection != "" || !strings.HasPrefix(line, "connections file") {
				t.Errorf("file problem %d: %q", i, line)
			}
			if p.Line > 0 && (p.Column < 1 || !strings.Contains(line, "line "+strconv.Itoa(p.Line)+", column "+strconv.Itoa(p.Column))) {
				t.Errorf("syntax problem %d without a position: %q", i, line)
			}
		default:
			t.Errorf("problem %d has index %d", i, p.Index)
		}
		if p.Field != "" && !strings.Contains(line, fmt.Sprintf("field %q", p.Field)) {
			t.Errorf("problem %d does not name field %q: %q", i, p.Field, line)
		}
	}
	for _, s := range secretValues(data) {
		if strings.Contains(text, s) || strings.Contains(text, strings.Trim(strconv.Quote(s), `"`)) {
			t.Errorf("the error repeats a secret value found at a secret position (%d chars):\n%s", len(s), strings.ReplaceAll(text, s, "<LEAKED>"))
		}
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// connectionCount is the length of the file's connections array, or -1.
func connectionCount(data []byte) int {
	var top struct {
		Connections []json.RawMessage `json:"connections"`
	}
	if json.Unmarshal(bytes.TrimPrefix(data, []byte("\uFEFF")), &top) != nil {
		return -1
	}
	return len(top.Connections)
}

// secretValues returns the marked strings at positions where the parser
// promises never to repeat a value: the values of unknown fields (at the
// top and in connections), of params and of secrets (names that are not
// valid secret names), and the password of a tokenUrl. A marked string
// that also appears where values are echoed (a name, say) is left out.
func secretValues(data []byte) []string {
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil
	}
	var secret, echoed []string
	known := []string{
		"name", "provider", "grant", "tokenUrl", "tenant", "clientAuth", "scopes", "params",
		"clientId", "secrets", "rotating", "reuseGrace", "refreshBefore", "defaultLifetime",
		"idleExpiry", "allowedCallers", "$comment",
	}
	for k, raw := range top {
		echoed = append(echoed, k)
		if k != "connections" && k != "$comment" {
			secret = append(secret, stringsIn(raw)...)
		}
	}
	var items []json.RawMessage
	_ = json.Unmarshal(top["connections"], &items)
	for _, item := range items {
		var fields map[string]json.RawMessage
		if json.Unmarshal(item, &fields) != nil {
			echoed = append(echoed, stringsIn(item)...)
			continue
		}
		for k, raw := range fields {
			echoed = append(echoed, k)
			switch {
			case !slices.Contains(known, k):
				secret = append(secret, stringsIn(raw)...)
			case k == "params" || k == "secrets":
				var m map[string]json.RawMessage
				if json.Unmarshal(raw, &m) != nil {
					echoed = append(echoed, stringsIn(raw)...)
					continue
				}
				for mk, mv := range m {
					echoed = append(echoed, mk)
					for _, s := range stringsIn(mv) {
						if k == "secrets" && secretNameRE.MatchString(s) {
							echoed = append(echoed, s) // a name, and names are shown
						} else {
							secret = append(secret, s)
						}
					}
				}
			case k == "tokenUrl":
				var s string
				if json.Unmarshal(raw, &s) == nil {
					if pw := urlPassword(s); pw != "" {
						secret = append(secret, pw)
					}
					echoed = append(echoed, withoutPassword(s))
				}
			default:
				echoed = append(echoed, stringsIn(raw)...)
			}
		}
	}
	var out []string
	for _, s := range secret {
		if len(s) < len(secretMarker)+2 || !strings.Contains(s, secretMarker) {
			continue
		}
		if slices.ContainsFunc(echoed, func(e string) bool { return strings.Contains(e, s) }) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// stringsIn returns every string inside a JSON value.
func stringsIn(raw json.RawMessage) []string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			for k, e := range v {
				out = append(out, k)
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

// urlPassword finds the password of a URL's userinfo lexically, so that it
// is found in URLs that net/url refuses too.
func urlPassword(s string) string {
	_, rest, ok := strings.Cut(s, "//")
	if !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return ""
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return ""
	}
	return pw
}

func withoutPassword(s string) string {
	if pw := urlPassword(s); pw != "" {
		return strings.Replace(s, pw, "", 1)
	}
	return s
}
