package config

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// ValidationError reports everything wrong with a connections file, not just
// the first thing: an operator fixing a file by hand should need one round.
type ValidationError struct {
	Problems []Problem
}

// Error returns one line per problem.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Problem is one thing wrong with a connections file.
type Problem struct {
	// Connection is the connection's name as written, "" when it has none
	// or the problem concerns the whole file.
	Connection string
	// Index is the connection's position in "connections", counting from
	// 0; -1 when the problem concerns the whole file.
	Index int
	// Field is the JSON path of the offending value inside the connection
	// (or the file, when Index is -1): "tokenUrl", "secrets.clientSecret",
	// "scopes[1]". Empty for the connection or the file as a whole.
	Field string
	// Message says what was found and what is allowed. It never repeats a
	// value that could be a secret.
	Message string
	// Line and Column (1-based) locate a JSON syntax error; both are zero
	// for every other problem.
	Line, Column int
}

// String renders the problem as one line: where, then what.
func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.Index >= 0:
		fmt.Fprintf(&b, "connections[%d]", p.Index)
		if p.Connection != "" {
			fmt.Fprintf(&b, " (%q)", p.Connection)
		}
	case p.Line > 0:
		fmt.Fprintf(&b, "connections file, line %d, column %d", p.Line, p.Column)
	default:
		b.WriteString("connections file")
	}
	if p.Field != "" {
		fmt.Fprintf(&b, ", field %q", p.Field)
	}
	b.WriteString(": ")
	b.WriteString(p.Message)
	return b.String()
}

// The fields of the file and of a connection, in the order they are
// documented (and checked, so problems come out in a stable order).
const commentField = "$comment"

// schemaField names the JSON Schema of the file (schema/connections.schema.json),
// for editors to complete and check it; the handler ignores its value.
const schemaField = "$schema"

var (
	topLevelFields   = []string{"connections", commentField, schemaField}
	connectionFields = []string{
		"name", "provider", "grant", "tokenUrl", "tenant", "clientAuth", "scopes", "params",
		"clientId", "signingKey", "signingAlg", "certificateThumbprint", "assertionAudience", "assertionSubject", "secrets", "rotating", "reuseGrace", "refreshBefore", "defaultLifetime",
		"idleExpiry", "keepWarm", "standby", "allowedCallers", "authorizationUrl", "authParams", "consentScopes", commentField,
	}
	secretFields = []string{"clientId", "clientSecret", "refreshToken", "accessToken", "standbyRefreshToken"}
)

// Bounds of the per-connection durations.
const (
	maxRefreshBefore   = 24 * time.Hour
	minDefaultLifetime = time.Minute
	maxDefaultLifetime = 24 * time.Hour
	maxReuseGrace      = 24 * time.Hour
	maxIdleExpiry      = 400 * day
)

// reservedConnectionNames are the names that equal a fixed segment of one
// function's route where another function's route has {connection}: a
// request for the connection would reach the other function. The Functions
// host tries the routes in the order of the function names
// (FunctionMetadataManager.LoadFunctionMetadata sorts them, ignoring case),
// first match wins, and consent-callback sorts before consent-start.
// TestReservedNamesAreTheRouteCollisions derives this list from
// functions/*/function.json.
var reservedConnectionNames = map[string]string{
	"callback": "GET /api/consent/callback is the consent-callback function, which the Functions host routes before consent-start's /api/consent/{connection}, so this connection could never start a consent",
}

const exampleFile = `{"connections": [{"name": "xero", "provider": "xero"}]}`

var (
	guidPattern   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	domainPattern = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$`)
	// hostPartPattern is one DNS label or more: an account id, an instance
	// name, a subdomain, a whole host.
	hostPartPattern = regexp.MustCompile(`^(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
)

// ParseConnections reads a connections file:
//
//	{"connections": [{"name": "xero", "provider": "xero"}, ...]}
//
// Each connection starts from its provider's preset ("generic" when it
// names none) and every field it gives overrides the preset. Anything
// wrong, however many things, is reported in one *ValidationError.
func ParseConnections(data []byte) ([]broker.Connection, error) {
	var p parser
	conns := p.parse(data)
	if len(p.problems) > 0 {
		return nil, &ValidationError{Problems: p.problems}
	}
	return conns, nil
}

type parser struct {
	problems []Problem
}

func (p *parser) fileProblem(field, format string, args ...any) {
	p.problems = append(p.problems, Problem{Index: -1, Field: field, Message: fmt.Sprintf(format, args...)})
}

func (p *parser) parse(data []byte) []broker.Connection {
	// Editors on Windows like to save JSON with a byte order mark.
	data = bytes.TrimPrefix(data, []byte("\uFEFF"))
	if len(bytes.TrimSpace(data)) == 0 {
		p.fileProblem("", "is empty; expected a JSON object such as %s", exampleFile)
		return nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			line, col := position(data, syntax.Offset)
			p.problems = append(p.problems, Problem{Index: -1, Line: line, Column: col, Message: "not valid JSON: " + syntax.Error()})
			return nil
		}
		p.fileProblem("", "found %s; expected a JSON object such as %s", describe(data), exampleFile)
		return nil
	}
	if top == nil {
		p.fileProblem("", "found null; expected a JSON object such as %s", exampleFile)
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(top)) {
		if !slices.Contains(topLevelFields, k) {
			p.fileProblem(k, "%s", unknownFieldMessage(k, topLevelFields))
		}
	}
	if raw, ok := top[commentField]; ok && !isComment(raw) {
		p.fileProblem(commentField, "found %s; must be a string or an array of strings (it is ignored)", describe(raw))
	}
	if raw, ok := top[schemaField]; ok && !isString(raw) {
		p.fileProblem(schemaField, "found %s; must be a string: the address of the file's JSON Schema (it is ignored)", describe(raw))
	}
	raw, ok := top["connections"]
	if !ok {
		p.fileProblem("connections", "missing; expected an array of connections, as in %s", exampleFile)
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || items == nil {
		p.fileProblem("connections", "found %s; must be an array of connection objects", describe(raw))
		return nil
	}
	if len(items) == 0 {
		p.fileProblem("connections", "is an empty array; at least one connection is required")
		return nil
	}

	parsed := make([]*connParser, len(items))
	for i, item := range items {
		parsed[i] = p.connection(i, item)
	}
	p.checkUniqueNames(parsed)
	p.checkSecretNames(parsed)
	p.checkStandbyLocks(parsed)
	// Cross-connection problems were found last; list them with the rest
	// of their connection's.
	slices.SortStableFunc(p.problems, func(a, b Problem) int { return cmp.Compare(a.Index, b.Index) })

	conns := make([]broker.Connection, len(parsed))
	for i, c := range parsed {
		conns[i] = c.conn
	}
	return conns
}

// connParser checks and resolves one connection.
type connParser struct {
	p      *parser
	index  int
	fields map[string]json.RawMessage
	// conn is the connection as resolved so far. Its Name is set only when
	// the name is valid.
	conn broker.Connection
	// preset is the connection's provider preset; presetKnown is false
	// when the named provider does not exist, and checks that depend on
	// the preset are skipped then rather than piled on.
	preset      Preset
	presetKnown bool
	// written is the name as written, for messages.
	written string
	// secretOK says, per secrets field, whether c.conn.Secrets holds a
	// valid name for it (the default or a valid override).
	secretOK map[string]bool
	// duplicate is set when an earlier connection has the same name; its
	// secrets then collide with that one's, which says nothing new.
	duplicate bool
}

func (c *connParser) problem(field, format string, args ...any) {
	c.p.problems = append(c.p.problems, Problem{
		Connection: c.written,
		Index:      c.index,
		Field:      field,
		Message:    fmt.Sprintf(format, args...),
	})
}

func (p *parser) connection(index int, raw json.RawMessage) *connParser {
	c := &connParser{p: p, index: index}
	if json.Unmarshal(raw, &c.fields) != nil || c.fields == nil {
		c.problem("", "found %s; must be a JSON object such as {\"name\": \"xero\", \"provider\": \"xero\"}", describe(raw))
		return c
	}

	// The name first, so every later problem can say which connection it
	// is about.
	c.check(nameField)

	for _, k := range slices.Sorted(maps.Keys(c.fields)) {
		if !slices.Contains(connectionFields, k) {
			c.problem(k, "%s", c.unknownConnectionField(k))
		}
	}
	if raw, ok := c.fields[commentField]; ok && !isComment(raw) {
		c.problem(commentField, "found %s; must be a string or an array of strings (it is ignored)", describe(raw))
	}

	c.preset, c.presetKnown = c.provider()
	c.conn.Provider = c.preset.Name
	for _, f := range fieldSpecs {
		c.check(f)
	}
	return c
}

// provider returns the connection's preset. presetKnown is false when the
// named provider does not exist; the generic preset is returned then.
func (c *connParser) provider() (preset Preset, presetKnown bool) {
	generic, _ := LookupPreset(genericPreset)
	name, ok := c.str("provider", "a provider name")
	if !ok {
		_, present := c.fields["provider"]
		return generic, !present
	}
	if p, found := LookupPreset(name); found {
		return p, true
	}
	hint := providerAliases[foldName(name)]
	if hint == "" {
		hint = suggest(name, presetNames())
	}
	msg := fmt.Sprintf("found %q; must be one of %s", name, strings.Join(presetNames(), ", "))
	if hint != "" {
		msg = fmt.Sprintf("found %q; did you mean %q? Known providers: %s", name, hint, strings.Join(presetNames(), ", "))
	}
	c.problem("provider", "%s", msg)
	return generic, false
}

func (c *connParser) resolveTokenURL() {
	preset, presetKnown := c.preset, c.presetKnown
	// What a tenant may be depends on where the token URL puts it, so the
	// URL is looked at first; its own problems are reported further down.
	_, urlPresent := c.fields["tokenUrl"]
	template := preset.TokenURL
	if raw, ok := c.fields["tokenUrl"]; ok && isString(raw) {
		_ = json.Unmarshal(raw, &template)
	}
	hint := tenantHint(preset, template)

	tenant, tenantGiven := c.str("tenant", hint)
	_, tenantPresent := c.fields["tenant"]
	tenantOK := tenantGiven && isTenant(tenant, template)
	if tenantGiven && !tenantOK {
		c.problem("tenant", "found %q; must be %s", tenant, hint)
	}

	template = preset.TokenURL
	if u, ok := c.str("tokenUrl", "an https URL"); ok {
		template = u
	} else if urlPresent {
		return // reported by str
	}

	if hasUserinfo(template) {
		// Whatever is in the userinfo is likely a credential: reported
		// before any message that would repeat the URL.
		c.problem("tokenUrl", "contains a user name or password (not shown); client credentials belong in the secret store, not in the URL")
		return
	}
	switch {
	case template == "":
		if urlPresent {
			c.problem("tokenUrl", "is empty; must be the provider's https token endpoint")
		} else if presetKnown {
			c.problem("tokenUrl", "missing; without a provider, tokenUrl is required (an https URL), or name a provider: %s", strings.Join(presetNames(), ", "))
		}
		return
	case strings.Contains(template, tenantPlaceholder):
		if !tenantPresent {
			c.problem("tenant", "missing; the token URL %s needs \"tenant\": %s", template, hint)
			return
		}
		if !tenantOK {
			// The tenant's problem is reported; still check the rest of
			// the URL, with a tenant that is known to be valid.
			if msg := checkTokenURL(strings.ReplaceAll(template, tenantPlaceholder, "common")); msg != "" {
				c.problem("tokenUrl", "%s", msg)
			}
			return
		}
		template = strings.ReplaceAll(template, tenantPlaceholder, tenant)
	case tenantOK:
		c.problem("tenant", "found %q, but the token URL %s has no %s placeholder to put it in; remove tenant, or give a tokenUrl that contains %s", tenant, template, tenantPlaceholder, tenantPlaceholder)
	}
	if msg := checkTokenURL(template); msg != "" {
		c.problem("tokenUrl", "%s", msg)
		return
	}
	c.conn.TokenURL = template
}

// hasUserinfo reports whether s has an authority with a user name or
// password (https://user:pw@host), lexically, so that URLs net/url refuses
// are caught too.
func hasUserinfo(s string) bool {
	i := strings.Index(s, "//")
	if i < 0 || strings.ContainsAny(s[:i], "/?#") {
		return false
	}
	authority := s[i+2:]
	if j := strings.IndexAny(authority, "/?#"); j >= 0 {
		authority = authority[:j]
	}
	return strings.Contains(authority, "@")
}

// withoutQuery is s for messages: a query may carry a credential someone
// put there (?client_secret=...), so it is not repeated.
func withoutQuery(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i] + "?(query not shown)"
	}
	return s
}

// credentialWords are parts of query keys that name a credential.
var credentialWords = []string{"secret", "password", "passwd", "pwd", "token", "key", "assertion", "auth", "credential", "sig", "code", "session", "bearer"}

// credentialQueryKey returns the first key of a raw query that looks like
// it carries a credential (client_secret, password, api_key, token,
// access_token, code, ...), or "". Keys are compared without case,
// '-' and '_', so Client-Secret and clientSecret are caught too.
func credentialQueryKey(rawQuery string) string {
	for part := range strings.SplitSeq(rawQuery, "&") {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		folded := strings.NewReplacer("-", "", "_", "", ".", "").Replace(strings.ToLower(key))
		for _, w := range credentialWords {
			if strings.Contains(folded, w) {
				return key
			}
		}
	}
	return ""
}

func truncateKey(k string) string {
	if len(k) > 40 {
		return k[:40] + "..."
	}
	return k
}

// checkTokenURL returns what is wrong with a token endpoint URL, or "".
func checkTokenURL(raw string) string {
	s := withoutQuery(raw)
	if strings.Contains(raw, "@") {
		// Whatever surrounds an '@' may be a credential, parsed as one or
		// not (a malformed URL has no userinfo to cut out): not repeated.
		s = "(a URL with '@', not shown)"
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Sprintf("found %q; must be an absolute https URL such as \"https://login.example.com/oauth2/token\"", s)
	}
	if u.User != nil {
		// Whatever is in the userinfo is likely a credential: not echoed.
		return "contains a user name or password (not shown); client credentials belong in the secret store, not in the URL"
	}
	if u.Fragment != "" {
		return fmt.Sprintf("found %q; a token URL must not have a #fragment", s)
	}
	if key := credentialQueryKey(u.RawQuery); key != "" {
		// The URL goes into error messages and logs wherever a request to
		// it fails; a credential in it would go there too.
		return fmt.Sprintf("has a query parameter %q (its value not shown) that looks like a credential; client credentials belong in the secret store (secrets.clientSecret), not in the URL, which error messages repeat", truncateKey(key))
	}
	if u.Scheme == "http" && !broker.LoopbackHost(u.Hostname()) {
		return fmt.Sprintf("found %q; must be https (http is accepted only for 127.0.0.0/8, ::1 and localhost, for tests)", s)
	}
	return ""
}

// Descriptions of a tenant, for messages: where the token URL puts
// {tenant} decides which applies, unless the preset says better.
const (
	entraTenantHint = "the directory (tenant): its id (a GUID), a domain such as contoso.onmicrosoft.com, or one of organizations, common, consumers"
	hostTenantHint  = "the part of the host name the token URL leaves to the connection: letters, digits and hyphens, in dot-separated labels (such as mycompany)"
)

// tenantHint says what a tenant must be for template: the preset's own
// description when the template is the preset's.
func tenantHint(preset Preset, template string) string {
	switch {
	case preset.TenantHint != "" && template == preset.TokenURL:
		return preset.TenantHint
	case tenantInHost(template):
		return hostTenantHint
	}
	return entraTenantHint
}

// tenantInHost reports whether template puts {tenant} in its authority
// (the host) rather than in its path.
func tenantInHost(template string) bool {
	i := strings.Index(template, "//")
	if i < 0 {
		return false
	}
	authority := template[i+2:]
	if j := strings.IndexAny(authority, "/?#"); j >= 0 {
		authority = authority[:j]
	}
	return strings.Contains(authority, tenantPlaceholder)
}

// isTenant reports whether s may replace {tenant} in template. In a host
// it must be DNS labels, which keeps the host a host: no '/', '@' or ':'
// can move the request elsewhere. In a path it must be what Entra accepts
// there.
func isTenant(s, template string) bool {
	if tenantInHost(template) {
		return len(s) <= 253 && hostPartPattern.MatchString(s)
	}
	switch s {
	case "organizations", "common", "consumers":
		return true
	}
	return guidPattern.MatchString(s) || (len(s) <= 253 && domainPattern.MatchString(s))
}

func clientAuthStyle(s string) (broker.AuthStyle, bool) {
	switch broker.AuthStyle(s) {
	case broker.AuthBasic, broker.AuthBody, broker.AuthPrivateKeyJWT, broker.AuthManagedIdentity, broker.AuthNone:
		return broker.AuthStyle(s), true
	}
	return "", false
}

// clientAuthAliases are the names other systems give the two styles; a
// file that uses one gets told which value to write instead.
var clientAuthAliases = map[string]broker.AuthStyle{
	"header":            broker.AuthBasic,
	"inheader":          broker.AuthBasic,
	"clientsecretbasic": broker.AuthBasic,
	"authstyleinheader": broker.AuthBasic,
	"post":              broker.AuthBody,
	"form":              broker.AuthBody,
	"params":            broker.AuthBody,
	"inparams":          broker.AuthBody,
	"clientsecretpost":  broker.AuthBody,
	"authstyleinparams": broker.AuthBody,
	"requestbody":       broker.AuthBody,
}

func (c *connParser) scopes() ([]string, bool) { return c.scopeList("scopes") }

// scopeList reads the array of scopes in field ("scopes", "consentScopes").
func (c *connParser) scopeList(name string) ([]string, bool) {
	raw, ok := c.fields[name]
	if !ok {
		return nil, false
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || items == nil {
		c.problem(name, "found %s; must be an array of scope strings such as [\"api\", \"offline_access\"]", describe(raw))
		return nil, false
	}
	scopes := make([]string, 0, len(items))
	good := true
	for i, item := range items {
		field := fmt.Sprintf("%s[%d]", name, i)
		var s string
		if json.Unmarshal(item, &s) != nil || !isString(item) {
			c.problem(field, "found %s; must be a scope string", describe(item))
			good = false
			continue
		}
		if !isScopeToken(s) {
			c.problem(field, "found %q; a scope is one non-empty token without spaces, quotes or backslashes (list several scopes as separate strings)", s)
			good = false
			continue
		}
		scopes = append(scopes, s)
	}
	return scopes, good
}

// isScopeToken reports whether s is a scope-token of RFC 6749 §3.3.
func isScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		b := s[i]
		if b < 0x21 || b == '"' || b == '\\' || b > 0x7e {
			return false
		}
	}
	return true
}

func (c *connParser) params() map[string]string {
	return c.stringMap("params", "extra form fields such as {\"audience\": \"https://api.example.com\"}", "a form field name",
		broker.ReservedParam, "is sent by the grant itself and cannot be set here; scopes go in \"scopes\", credentials in the secret store")
}

// authParams reads "authParams": extra query parameters of the consent
// page's address, as params are extra form fields of token requests.
func (c *connParser) authParams() map[string]string {
	if _, ok := c.fields["authParams"]; ok && !c.refreshGrant() {
		c.problem("authParams", "grant %q needs no consent: remove authParams", c.conn.Grant)
		return nil
	}
	return c.stringMap("authParams", "extra authorization request parameters such as {\"prompt\": \"consent\"}", "a parameter name",
		broker.ReservedAuthParam, "is sent by the authorization request itself and cannot be set here; scopes go in \"consentScopes\"")
}

// stringMap reads field, an object of strings (what the example says), with
// names that are not empty, have no spaces and that reserved refuses.
func (c *connParser) stringMap(name, example, what string, reserved func(string) bool, reservedMsg string) map[string]string {
	raw, ok := c.fields[name]
	if !ok {
		return nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		c.problem(name, "found %s; must be an object of %s", describe(raw), example)
		return nil
	}
	out := make(map[string]string, len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		field := name + "." + k
		if k == "" || strings.ContainsFunc(k, isSpaceOrControl) {
			c.problem(field, "found the name %q; %s must be non-empty and without spaces", k, what)
			continue
		}
		if reserved(k) {
			c.problem(field, "%q %s", k, reservedMsg)
			continue
		}
		// Values are never repeated in messages: a misplaced credential
		// is the likeliest thing to end up here.
		var v string
		if json.Unmarshal(fields[k], &v) != nil || !isString(fields[k]) {
			c.problem(field, "found %s; must be a string", describe(fields[k]))
			continue
		}
		out[k] = v
	}
	return out
}

func (c *connParser) resolveSecrets() {
	// Defaults need a valid name; without one there is nothing to derive
	// them from, and the name's own problem has been reported.
	if c.conn.Name != "" {
		c.conn.Secrets = broker.DefaultSecretNames(c.conn.Name)
	}
	c.secretOK = map[string]bool{
		"clientId": c.conn.Name != "", "clientSecret": c.conn.Name != "",
		"refreshToken": c.conn.Name != "", "accessToken": c.conn.Name != "",
		"standbyRefreshToken": c.conn.Name != "",
	}
	raw, ok := c.fields["secrets"]
	if !ok {
		return
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil || fields == nil {
		c.problem("secrets", "found %s; must be an object naming the secrets to use, such as {\"clientSecret\": \"shared-client-secret\"}", describe(raw))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		field := "secrets." + k
		if k == "clientSecrets" {
			c.resolveClientSecrets(fields) // clientsecrets.go
			continue
		}
		if !slices.Contains(secretFields, k) {
			c.problem(field, "%s", unknownFieldMessage(k, secretFields))
			continue
		}
		v := fields[k]
		var name string
		if json.Unmarshal(v, &name) != nil || !isString(v) {
			c.problem(field, "found %s; must be the name of a secret in the secret store", describe(v))
			c.secretOK[k] = false
			continue
		}
		if !broker.ValidSecretName(name) {
			// Not repeated: a secret value pasted where its name belongs
			// is exactly what would fail here.
			c.problem(field, "found a string of %d characters that is not a secret name (not shown, in case it is a secret value); must be the name of a secret: 1-127 characters of 0-9, a-z, A-Z and -, starting with a letter", len(name))
			c.secretOK[k] = false
			continue
		}
		if refused := c.refusedSecret(k, name); refused != "" {
			c.problem(field, "%s", refused)
			continue
		}
		*secretSlot(&c.conn.Secrets, k) = name
		c.secretOK[k] = true
	}
}

func (c *connParser) allowedCallers() []string {
	raw, ok := c.fields["allowedCallers"]
	if !ok {
		return nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil || items == nil {
		c.problem("allowedCallers", "found %s; must be an array of object ids (GUIDs)", describe(raw))
		return nil
	}
	if len(items) == 0 {
		// An empty list reads like "nobody" but would mean "everybody".
		c.problem("allowedCallers", "is an empty array; list the object ids allowed to fetch this token, or omit the field to allow every caller the platform authenticates")
		return nil
	}
	var callers []string
	for i, item := range items {
		field := fmt.Sprintf("allowedCallers[%d]", i)
		var s string
		if json.Unmarshal(item, &s) != nil || !isString(item) {
			c.problem(field, "found %s; must be an object id (a GUID) as a string", describe(item))
			continue
		}
		if !guidPattern.MatchString(s) {
			c.problem(field, "found %q; must be an object id (a GUID such as \"00000000-0000-0000-0000-000000000000\"), e.g. the principal id of the data factory's managed identity", s)
			continue
		}
		// X-MS-CLIENT-PRINCIPAL-ID carries lower-case ids; compare on that.
		s = strings.ToLower(s)
		if !slices.Contains(callers, s) {
			callers = append(callers, s)
		}
	}
	return callers
}

// str returns field's string value and true, or false when the field is
// absent or not a string (reported, saying a string of kind want was
// expected).
func (c *connParser) str(field, want string) (string, bool) {
	raw, ok := c.fields[field]
	if !ok {
		return "", false
	}
	var s string
	if !isString(raw) || json.Unmarshal(raw, &s) != nil {
		c.problem(field, "found %s; must be a string: %s", describe(raw), want)
		return "", false
	}
	return s, true
}

func (c *connParser) boolean(field string) (bool, bool) {
	raw, ok := c.fields[field]
	if !ok {
		return false, false
	}
	var b bool
	// json.Unmarshal reads null into a bool as false without an error.
	if json.Unmarshal(raw, &b) != nil || describe(raw) != "a boolean" {
		c.problem(field, "found %s; must be true or false (without quotes)", describe(raw))
		return false, false
	}
	return b, true
}

// duration returns field's value as written, the duration, and true, or
// false when the field is absent or bad (reported).
func (c *connParser) duration(field string, lo, hi time.Duration) (string, time.Duration, bool) {
	s, ok := c.str(field, durationSyntax)
	if !ok {
		return "", 0, false
	}
	d, err := parseDuration(s)
	if err != nil {
		c.problem(field, "found %q; must be %s, between %s and %s", s, durationSyntax, formatDuration(lo), formatDuration(hi))
		return "", 0, false
	}
	if d < lo || d > hi {
		c.problem(field, "found %q; must be between %s and %s", s, formatDuration(lo), formatDuration(hi))
		return "", 0, false
	}
	return s, d, true
}

const durationSyntax = `a duration such as "90s", "10m", "1h30m" or "60d"`

// parseDuration is time.ParseDuration plus whole days ("60d"), the unit
// refresh-token lifetimes are documented in.
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.ParseUint(n, 10, 16); err == nil {
			return time.Duration(days) * day, nil
		}
	}
	return time.ParseDuration(s)
}

// formatDuration prints d the way a person would write it in the file:
// "24h", "1m", "400d" rather than "24h0m0s".
func formatDuration(d time.Duration) string {
	if d >= 2*day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func (c *connParser) unknownConnectionField(k string) string {
	names := broker.DefaultSecretNames(cmp.Or(c.conn.Name, "<name>"))
	var secret, name string
	switch foldName(k) {
	case "clientsecret", "secret", "password", "apikey":
		secret, name = "clientSecret", names.ClientSecret
	case "refreshtoken":
		secret, name = "refreshToken", names.RefreshToken
	case "accesstoken", "token":
		secret, name = "accessToken", names.AccessToken
	default:
		return unknownFieldMessage(k, connectionFields)
	}
	// Someone put a secret value in the file. Say where it goes, and do
	// not repeat it.
	return fmt.Sprintf("unknown field (its value is not shown); secret values never go in this file: store the value in the secret store as %q, or name another secret with \"secrets\": {%q: \"...\"}", name, secret)
}

func unknownFieldMessage(k string, known []string) string {
	if s := suggest(k, known); s != "" {
		return fmt.Sprintf("unknown field; did you mean %q?", s)
	}
	return "unknown field; allowed fields are " + strings.Join(known, ", ")
}

// didYouMean returns "; did you mean "x"?" for a near miss among
// candidates, or "".
func didYouMean(got string, candidates []string) string {
	s := suggest(got, candidates)
	if style, ok := clientAuthAliases[foldName(got)]; ok && slices.Contains(candidates, string(style)) {
		s = string(style)
	}
	if s == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", s)
}

// checkUniqueNames reports every connection whose name an earlier one
// already took.
func (p *parser) checkUniqueNames(conns []*connParser) {
	first := map[string]int{}
	for i, c := range conns {
		if c.conn.Name == "" {
			continue
		}
		if j, taken := first[c.conn.Name]; taken {
			c.problem("name", "found %q, which connections[%d] already uses; names must be unique", c.conn.Name, j)
			c.duplicate = true
			continue
		}
		first[c.conn.Name] = i
	}
}

// checkSecretNames reports refresh and access tokens whose secret another
// connection (or another role of the same one) also uses: two writers of
// one secret overwrite each other's tokens. Client ids and secrets may be
// shared; they are only read. Key Vault names are case-insensitive, so the
// comparison is too.
func (p *parser) checkSecretNames(conns []*connParser) {
	type use struct {
		conn  int
		role  string
		name  string
		write bool
	}
	var uses []use
	for i, c := range conns {
		if c.secretOK == nil || c.duplicate {
			continue
		}
		s := c.conn.Secrets
		refresh := c.conn.Grant == broker.GrantRefreshToken
		for _, u := range []use{
			{i, "clientId", s.ClientID, false},
			{i, "clientSecret", s.ClientSecret, false},
			{i, "refreshToken", s.RefreshToken, true},
			{i, "accessToken", s.AccessToken, true},
			{i, "standbyRefreshToken", s.StandbyRefreshToken, true},
		} {
			if !c.secretOK[u.role] || u.name == "" || (u.role == "refreshToken" && !refresh) ||
				(u.role == "standbyRefreshToken" && !c.conn.Standby) {
				continue
			}
			if u.role == "clientId" && c.conn.ClientID != "" {
				continue
			}
			uses = append(uses, u)
		}
	}
	// The handler's own secrets are nobody's to read or write: a client
	// secret read from one is sent to the provider, a token written over
	// one destroys it.
	for _, u := range uses {
		if owner := ReservedSecret(u.name); owner != "" {
			conns[u.conn].problem("secrets."+u.role, "secret %q is %s, which the handler keeps for itself; name another secret", u.name, owner)
		}
	}
	// Secret names are case-insensitive; grouping by the folded name keeps
	// a file of thousands of connections quick to check.
	same := make(map[string][]int, len(uses))
	for i, u := range uses {
		k := strings.ToLower(u.name)
		same[k] = append(same[k], i)
	}
	for i, u := range uses {
		if !u.write {
			continue
		}
		for _, j := range same[strings.ToLower(u.name)] {
			other := uses[j]
			if i == j {
				continue
			}
			if other.conn == u.conn && other.write && j < i {
				break // the same clash, already reported on the other field
			}
			where := "this connection's " + other.role
			if other.conn != u.conn {
				where = fmt.Sprintf("the %s of connections[%d] (%q)", other.role, other.conn, conns[other.conn].written)
			}
			conns[u.conn].problem("secrets."+u.role, "secret %q is also %s; a %s is written on every refresh and needs a secret of its own (set \"secrets\": {%q: \"...\"})",
				u.name, where, u.role, u.role)
			break
		}
	}
}

// checkStandbyLocks reports a connection whose name is another's standby
// lock (broker.StandbyLockName): the two would share a lock and its
// write-ahead record.
func (p *parser) checkStandbyLocks(conns []*connParser) {
	names := map[string]int{}
	for i, c := range conns {
		if c.conn.Name != "" && !c.duplicate {
			names[c.conn.Name] = i
		}
	}
	for i, c := range conns {
		if !c.conn.Standby || c.conn.Name == "" {
			continue
		}
		if j, taken := names[broker.StandbyLockName(c.conn.Name)]; taken {
			conns[j].problem("name", "found %q, the name of the standby grant's lock of connections[%d] (%q); choose another name", conns[j].conn.Name, i, c.written)
		}
	}
}

// consentStateSuffix ends the name of a connection's pending consent
// record (consent.StateSecretName); config cannot import consent.
const consentStateSuffix = "-consent-state"

// ReservedSecret says whose a secret name is when the handler keeps it for
// itself, "" when it is free for a connection's use: the write-ahead key
// (broker.WriteAheadKeySecret) and every connection's pending consent
// (<name>-consent-state). Key Vault names are case-insensitive, so the
// comparison is too. The API key's secret is a setting
// (Settings.ReadConnections checks it).
func ReservedSecret(name string) string {
	lower := strings.ToLower(name)
	switch {
	case lower == strings.ToLower(broker.WriteAheadKeySecret):
		return "the key that seals the write-ahead records of rotated refresh tokens"
	case strings.HasSuffix(lower, consentStateSuffix) && len(lower) > len(consentStateSuffix):
		return fmt.Sprintf("where a consent of connection %q keeps its state and PKCE verifier", name[:len(name)-len(consentStateSuffix)])
	}
	return ""
}

// position turns a byte offset into a 1-based line and column.
// json.SyntaxError.Offset counts the bytes read before the error, so the
// offending byte is the one just before it.
func position(data []byte, offset int64) (line, col int) {
	at := int(min(max(offset-1, 0), int64(len(data))))
	before := data[:at]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = at - bytes.LastIndexByte(before, '\n')
	return line, col
}

// describe names the JSON kind of raw, for "found ..." messages. It never
// repeats the value.
func describe(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func isString(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '"'
}

func isComment(raw json.RawMessage) bool {
	var s string
	if isString(raw) {
		return json.Unmarshal(raw, &s) == nil
	}
	var lines []string
	return json.Unmarshal(raw, &lines) == nil && lines != nil
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}
