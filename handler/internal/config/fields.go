package config

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// The rules of a connection's fields, as a table: for each field, how its
// value is read, what refuses it (the condition and the message), and what
// the connection gets from it. connParser.check applies one fieldSpec;
// connections.go has the readers and the structured fields (tokenUrl and
// tenant, scopes, params, secrets, allowedCallers).

// A fieldSpec is how one field of a connection is checked and resolved:
// how its value is read (which reports a value of the wrong JSON kind), the
// rules that refuse a value read, and what the connection gets from the
// preset, from an accepted value, or from the field's absence.
type fieldSpec struct {
	field string
	// read returns the field's value and true, or false when the field is
	// absent or of the wrong kind (reported).
	read func(c *connParser, field string) (value, bool)
	// preset sets the connection's value before the field is read: the
	// preset's or the default, which an accepted value replaces.
	preset func(c *connParser)
	// seen is told of every value read, before the rules look at it.
	seen func(c *connParser, v value)
	// rules are checked in order; the first that refuses the value is
	// reported and the value is not used.
	rules []rule
	// set applies an accepted value to the connection.
	set func(c *connParser, v value)
	// absent returns the problem with the field missing, or "".
	absent func(c *connParser) string
	// resolve checks and resolves a field whose value is a structure (or,
	// for tokenUrl, depends on another field), instead of read, rules and
	// set.
	resolve func(c *connParser)
}

// A rule refuses a field's value when its condition holds.
type rule struct {
	// refuses is the condition, on the value and the connection as
	// resolved so far (the fields before it in fieldSpecs).
	refuses func(c *connParser, v value) bool
	// message says what was found and what is allowed instead.
	message func(c *connParser, v value) string
}

// value is a field's value as read: s is a string as written (a
// duration's too), b a boolean, d a duration.
type value struct {
	s string
	b bool
	d time.Duration
}

// check reads, checks and resolves field f of the connection.
func (c *connParser) check(f fieldSpec) {
	if f.resolve != nil {
		f.resolve(c)
		return
	}
	if f.preset != nil {
		f.preset(c)
	}
	v, ok := f.read(c, f.field)
	if !ok {
		if _, present := c.fields[f.field]; !present && f.absent != nil {
			if msg := f.absent(c); msg != "" {
				c.problem(f.field, "%s", msg)
			}
		}
		return
	}
	if f.seen != nil {
		f.seen(c, v)
	}
	for _, r := range f.rules {
		if r.refuses(c, v) {
			c.problem(f.field, "%s", r.message(c, v))
			return
		}
	}
	f.set(c, v)
}

// The readers of fieldSpec.read, by the JSON kind of the field.
func asString(want string) func(*connParser, string) (value, bool) {
	return func(c *connParser, field string) (value, bool) {
		s, ok := c.str(field, want)
		return value{s: s}, ok
	}
}

func asBool(c *connParser, field string) (value, bool) {
	b, ok := c.boolean(field)
	return value{b: b}, ok
}

func asDuration(lo, hi time.Duration) func(*connParser, string) (value, bool) {
	return func(c *connParser, field string) (value, bool) {
		s, d, ok := c.duration(field, lo, hi)
		return value{s: s, d: d}, ok
	}
}

// Conditions the rules share.
func (c *connParser) refreshGrant() bool { return c.conn.Grant == broker.GrantRefreshToken }

func withoutRefreshToken(c *connParser, _ value) bool { return !c.refreshGrant() }

const nameRule = "1-63 characters of a-z, 0-9 and -, starting with a letter"

// nameField is checked before every other field, so that their problems
// can name the connection.
var nameField = fieldSpec{
	field: "name",
	read:  asString("a connection name"),
	seen:  func(c *connParser, v value) { c.written = v.s },
	rules: []rule{{
		refuses: func(_ *connParser, v value) bool { _, reserved := reservedConnectionNames[v.s]; return reserved },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; this name is reserved: %s. Choose another name", v.s, reservedConnectionNames[v.s])
		},
	}, {
		// Connection names end up in URLs, Key Vault secret names and
		// blob names; the rule is what all three accept, and the HTTP
		// routes check a requested name by the same function.
		refuses: func(_ *connParser, v value) bool { return !broker.ValidConnectionName(v.s) },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be %s (it becomes part of URLs, secret names and lock names)", v.s, nameRule)
		},
	}},
	set:    func(c *connParser, v value) { c.conn.Name = v.s },
	absent: func(*connParser) string { return "missing; every connection needs a name: " + nameRule },
}

// fieldSpecs are the fields after the name and the provider, in the order
// they are checked: a rule may look at the fields before its own.
var fieldSpecs = []fieldSpec{{
	field:  "grant",
	read:   asString("a grant type"),
	preset: func(c *connParser) { c.conn.Grant = cmp.Or(c.preset.Grant, broker.GrantRefreshToken) },
	rules: []rule{{
		refuses: func(_ *connParser, v value) bool {
			g := broker.GrantType(v.s)
			return g != broker.GrantRefreshToken && g != broker.GrantClientCredentials && g != broker.GrantJWTBearer
		},
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be %q, %q or %q%s", v.s, broker.GrantRefreshToken, broker.GrantClientCredentials, broker.GrantJWTBearer,
				didYouMean(v.s, []string{string(broker.GrantRefreshToken), string(broker.GrantClientCredentials), string(broker.GrantJWTBearer)}))
		},
	}},
	set: func(c *connParser, v value) { c.conn.Grant = broker.GrantType(v.s) },
}, {
	field:   "tokenUrl", // and "tenant", which it decides the rule of
	resolve: (*connParser).resolveTokenURL,
}, {
	field:  "clientAuth",
	read:   asString("a client authentication style"),
	preset: func(c *connParser) { c.conn.AuthStyle = c.preset.AuthStyle },
	rules: []rule{{
		refuses: func(_ *connParser, v value) bool { _, known := clientAuthStyle(v.s); return !known },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be %q (HTTP Basic header), %q (client_id and client_secret as form fields), %q (an assertion signed by a Key Vault key), %q (the managed identity's federated token) or, for grant %q, %q%s",
				v.s, broker.AuthBasic, broker.AuthBody, broker.AuthPrivateKeyJWT, broker.AuthManagedIdentity, broker.GrantJWTBearer, broker.AuthNone,
				didYouMean(v.s, []string{string(broker.AuthBasic), string(broker.AuthBody), string(broker.AuthPrivateKeyJWT), string(broker.AuthManagedIdentity)}))
		},
	}, {
		refuses: func(c *connParser, v value) bool {
			return broker.AuthStyle(v.s) == broker.AuthNone && c.conn.Grant != broker.GrantJWTBearer
		},
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("found %q; grant %q needs client authentication (only %q's assertion identifies the client by itself)", broker.AuthNone, c.conn.Grant, broker.GrantJWTBearer)
		},
	}},
	set: func(c *connParser, v value) { c.conn.AuthStyle = broker.AuthStyle(v.s) },
	absent: func(c *connParser) string {
		if c.conn.AuthStyle != "" || !c.presetKnown {
			return ""
		}
		return fmt.Sprintf("missing; without a provider, clientAuth is required: %q (HTTP Basic header) or %q (form fields)", broker.AuthBasic, broker.AuthBody)
	},
}, {
	field: "scopes",
	resolve: func(c *connParser) {
		c.conn.Scopes = slices.Clone(c.preset.Scopes)
		if scopes, ok := c.scopes(); ok {
			c.conn.Scopes = scopes
		}
	},
}, {
	field:   "params",
	resolve: func(c *connParser) { c.conn.Params = c.params() },
}, {
	field: "clientId",
	read:  asString("the client id"),
	rules: []rule{{
		refuses: func(_ *connParser, v value) bool {
			return v.s == "" || len(v.s) > 1024 || strings.ContainsFunc(v.s, isSpaceOrControl)
		},
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be the client (application) id: 1-1024 characters without spaces; omit it to read the id from the secret store", v.s)
		},
	}},
	set: func(c *connParser, v value) { c.conn.ClientID = v.s },
}, {
	// The Key Vault key that signs the connection's assertions
	// (private_key_jwt, jwt_bearer); <name>-signing-key unless named.
	field:  "signingKey",
	read:   asString("the name of a Key Vault key"),
	preset: func(c *connParser) { c.conn.Assertion.Key = c.defaultSigningKey() },
	rules: []rule{{
		refuses: func(c *connParser, _ value) bool { return !c.signs() },
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("is never used: only clientAuth %q and grant %q sign with a key; remove it", broker.AuthPrivateKeyJWT, broker.GrantJWTBearer)
		},
	}, {
		refuses: func(_ *connParser, v value) bool { return !broker.ValidSecretName(v.s) },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be a Key Vault key name: 1-127 characters of 0-9, a-z, A-Z and -", v.s)
		},
	}},
	set: func(c *connParser, v value) { c.conn.Assertion.Key = v.s },
}, {
	field: "signingAlg",
	read:  asString("a JWS algorithm"),
	rules: []rule{onlyWhenSigning, {
		refuses: func(_ *connParser, v value) bool { return !slices.Contains([]string{"RS256", "PS256", "ES256"}, v.s) },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be RS256, PS256 (RSA keys) or ES256 (EC P-256 keys); omit it to follow the key's type", v.s)
		},
	}},
	set: func(c *connParser, v value) { c.conn.Assertion.Algorithm = v.s },
}, {
	// The x5t#S256 header of the assertions, for a signing key that is a
	// Key Vault certificate's: Entra's certificate credentials select the
	// registered certificate by it
	// (learn.microsoft.com/entra/identity-platform/certificate-credentials,
	// "Header": base64url SHA-256 of the certificate's DER encoding).
	field: "certificateThumbprint",
	read:  asString("the base64url SHA-256 thumbprint of the signing certificate"),
	rules: []rule{onlyWhenSigning, {
		refuses: func(_ *connParser, v value) bool { return !isSHA256Thumbprint(v.s) },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be the base64url SHA-256 of the certificate's DER encoding, 43 characters without padding "+
				"(not the hex SHA-1 x509ThumbprintHex that az keyvault certificate show prints)", truncateValue(v.s))
		},
	}},
	set: func(c *connParser, v value) { c.conn.Assertion.CertificateThumbprint = v.s },
}, {
	field: "assertionAudience",
	read:  asString("the aud claim of the assertion"),
	preset: func(c *connParser) {
		c.conn.Assertion.ScopeClaim = c.preset.ScopeClaim && c.conn.Grant == broker.GrantJWTBearer
		if !c.signs() {
			return
		}
		c.conn.Assertion.Audience = c.preset.AssertionAudience
		if c.preset.AudienceIsTokenHost {
			if u, err := url.Parse(c.conn.TokenURL); err == nil {
				c.conn.Assertion.Audience = u.Hostname()
			}
		}
	},
	rules: []rule{onlyWhenSigning, {
		refuses: func(_ *connParser, v value) bool { return v.s == "" || strings.ContainsFunc(v.s, isSpaceOrControl) },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; must be the audience the provider documents (a URL or a host), without spaces; omit it for the token URL", v.s)
		},
	}},
	set: func(c *connParser, v value) { c.conn.Assertion.Audience = v.s },
}, {
	field: "assertionSubject",
	read:  asString("the sub claim of the assertion"),
	rules: []rule{{
		refuses: func(c *connParser, _ value) bool { return c.conn.Grant != broker.GrantJWTBearer },
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("is never used: only grant %q has a subject (a client assertion's is the client id); remove it", broker.GrantJWTBearer)
		},
	}, {
		refuses: func(_ *connParser, v value) bool { return v.s == "" || strings.ContainsFunc(v.s, isControl) },
		message: func(_ *connParser, _ value) string { return "is empty or has control characters" },
	}},
	set: func(c *connParser, v value) { c.conn.Assertion.Subject = v.s },
	absent: func(c *connParser) string {
		if c.conn.Grant != broker.GrantJWTBearer || c.preset.SubjectHint == "" {
			return ""
		}
		return fmt.Sprintf("missing; %s's JWT grant needs it: %s", c.preset.Title, c.preset.SubjectHint)
	},
}, {
	field:   "secrets",
	resolve: (*connParser).resolveSecrets,
}, {
	// Rotation and what hangs off it only mean something for refresh
	// tokens: a preset's values are dropped for client_credentials, and
	// giving them explicitly there is a mistake worth reporting.
	field: "rotating",
	read:  asBool,
	preset: func(c *connParser) {
		if c.refreshGrant() {
			c.conn.Rotating = c.preset.Rotating
		}
	},
	rules: []rule{{
		refuses: func(c *connParser, v value) bool { return v.b && !c.refreshGrant() },
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("found true; grant %q has no refresh token to rotate: remove rotating, or use grant %q", c.conn.Grant, broker.GrantRefreshToken)
		},
	}},
	set: func(c *connParser, v value) { c.conn.Rotating = v.b },
}, {
	field: "reuseGrace",
	read:  asDuration(0, maxReuseGrace),
	preset: func(c *connParser) {
		if c.conn.Rotating {
			c.conn.ReuseGrace = c.preset.ReuseGrace
		}
	},
	rules: []rule{{
		refuses: withoutRefreshToken,
		message: func(c *connParser, v value) string {
			return fmt.Sprintf("found %q; grant %q has no refresh token: remove reuseGrace", v.s, c.conn.Grant)
		},
	}, {
		refuses: func(c *connParser, v value) bool { return v.d > 0 && !c.conn.Rotating },
		message: func(_ *connParser, v value) string {
			return fmt.Sprintf("found %q; a grace period for rotated refresh tokens needs \"rotating\": true", v.s)
		},
	}},
	set: func(c *connParser, v value) { c.conn.ReuseGrace = v.d },
}, {
	field:  "refreshBefore",
	read:   asDuration(0, maxRefreshBefore),
	preset: func(c *connParser) { c.conn.RefreshBefore = cmp.Or(c.preset.RefreshBefore, defaultRefreshBefore) },
	set:    func(c *connParser, v value) { c.conn.RefreshBefore = v.d },
}, {
	field:  "defaultLifetime",
	read:   asDuration(minDefaultLifetime, maxDefaultLifetime),
	preset: func(c *connParser) { c.conn.DefaultLifetime = cmp.Or(c.preset.DefaultLifetime, defaultDefaultLifetime) },
	set:    func(c *connParser, v value) { c.conn.DefaultLifetime = v.d },
}, {
	field: "idleExpiry",
	read:  asDuration(0, maxIdleExpiry),
	preset: func(c *connParser) {
		if c.refreshGrant() {
			c.conn.IdleExpiry = c.preset.IdleExpiry
		}
	},
	rules: []rule{{
		refuses: withoutRefreshToken,
		message: func(c *connParser, v value) string {
			return fmt.Sprintf("found %q; grant %q has no refresh token to keep alive: remove idleExpiry", v.s, c.conn.Grant)
		},
	}},
	set: func(c *connParser, v value) { c.conn.IdleExpiry = v.d },
}, {
	field:  "keepWarm",
	read:   asBool,
	preset: func(c *connParser) { c.conn.KeepWarm = true },
	set:    func(c *connParser, v value) { c.conn.KeepWarm = v.b },
}, {
	// A second, independent grant (broker/standby.go). It needs a
	// refresh-token grant and a provider that keeps several grants of one
	// user and client active; a preset known to keep one refuses it.
	field: "standby",
	read:  asBool,
	rules: []rule{{
		refuses: func(c *connParser, v value) bool { return v.b && !c.refreshGrant() },
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("found true; grant %q has no refresh token, so there is no grant to keep in reserve: remove standby", c.conn.Grant)
		},
	}, {
		refuses: func(c *connParser, v value) bool {
			return v.b && c.presetKnown && c.preset.SeveralGrants == GrantsOne
		},
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("found true; %s keeps one active grant per user and client, so a second consent would revoke the first (%s): remove standby",
				c.preset.Title, c.preset.SeveralGrantsSource)
		},
	}},
	set: func(c *connParser, v value) {
		if !v.b {
			return
		}
		c.conn.Standby = true
		if c.conn.Secrets.StandbyRefreshToken == "" && c.conn.Name != "" {
			c.conn.Secrets.StandbyRefreshToken = broker.DefaultStandbySecretName(c.conn.Name)
		}
	},
}, {
	field:   "allowedCallers",
	resolve: func(c *connParser) { c.conn.AllowedCallers = c.allowedCallers() },
}, {
	// Where a person consents (package consent): a generic provider has
	// no preset to take it from. The token URL's rule applies: the browser
	// carries the client id and the state there, and brings the code back.
	field: "authorizationUrl",
	read:  asString("an https URL"),
	rules: []rule{{
		refuses: withoutRefreshToken,
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("grant %q needs no consent, so it has no authorization endpoint: remove authorizationUrl", c.conn.Grant)
		},
	}, {
		refuses: func(_ *connParser, v value) bool { return checkTokenURL(v.s) != "" },
		message: func(_ *connParser, v value) string {
			return strings.Replace(checkTokenURL(v.s), "a token URL", "an authorization URL", 1) + " (the provider's authorization endpoint)"
		},
	}},
	set: func(c *connParser, v value) { c.conn.AuthorizationURL = v.s },
}, {
	field:   "authParams",
	resolve: func(c *connParser) { c.conn.AuthParams = c.authParams() },
}, {
	field: "consentScopes",
	resolve: func(c *connParser) {
		if c.refreshGrant() {
			c.conn.ConsentScopes = slices.Clone(c.preset.ConsentScopes)
		}
		scopes, ok := c.scopeList("consentScopes")
		if !ok {
			return
		}
		if !c.refreshGrant() {
			c.problem("consentScopes", "grant %q needs no consent: remove consentScopes (scopes sent with every token request go in \"scopes\")", c.conn.Grant)
			return
		}
		c.conn.ConsentScopes = scopes
	},
}}

// signs reports whether the connection signs assertions with a Key Vault
// key.
func (c *connParser) signs() bool {
	return c.conn.AuthStyle == broker.AuthPrivateKeyJWT || c.conn.Grant == broker.GrantJWTBearer
}

// defaultSigningKey is the key a signing connection uses unless it names
// one: <name>-signing-key.
func (c *connParser) defaultSigningKey() string {
	if !c.signs() || c.conn.Name == "" {
		return ""
	}
	return c.conn.Name + "-signing-key"
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// secretRules refuse a secret named for a role the connection does not
// use, by the secrets field; a field without rules accepts every valid
// name.
var secretRules = map[string][]rule{
	"clientSecret": {{
		refuses: func(c *connParser, _ value) bool { return !c.conn.UsesClientSecret() },
		message: func(c *connParser, _ value) string {
			return fmt.Sprintf("is never read: clientAuth %q sends no client secret; remove it", c.conn.AuthStyle)
		},
	}},
	"clientId": {{
		refuses: func(c *connParser, _ value) bool { return c.conn.ClientID != "" },
		message: func(*connParser, value) string {
			return "is never read, because \"clientId\" gives the client id literally; remove one of the two"
		},
	}},
	"refreshToken": {{refuses: withoutRefreshToken, message: secretWithoutRefreshToken}},
	"standbyRefreshToken": {{refuses: withoutRefreshToken, message: secretWithoutRefreshToken}, {
		// standby is resolved after secrets: its value as written.
		refuses: func(c *connParser, _ value) bool {
			on := false
			return json.Unmarshal(c.fields["standby"], &on) != nil || !on
		},
		message: func(*connParser, value) string {
			return "is never used without \"standby\": true; remove it, or set standby"
		},
	}},
}

func secretWithoutRefreshToken(c *connParser, _ value) string {
	return fmt.Sprintf("is never used: grant %q has no refresh token; remove it", c.conn.Grant)
}

// refusedSecret returns the message of the first of secretRules[k] that
// refuses secret name, or "".
func (c *connParser) refusedSecret(k, name string) string {
	for _, r := range secretRules[k] {
		if r.refuses(c, value{s: name}) {
			return r.message(c, value{s: name})
		}
	}
	return ""
}

// secretSlot returns where names holds the secret name of secrets field k,
// one of secretFields.
func secretSlot(names *broker.SecretNames, k string) *string {
	switch k {
	case "clientId":
		return &names.ClientID
	case "clientSecret":
		return &names.ClientSecret
	case "refreshToken":
		return &names.RefreshToken
	case "accessToken":
		return &names.AccessToken
	case "standbyRefreshToken":
		return &names.StandbyRefreshToken
	}
	panic("config: secretSlot of unknown secrets field " + k)
}

// isSHA256Thumbprint reports whether s is an x5t#S256 value: a SHA-256
// digest (32 bytes) in unpadded base64url (RFC 7515 §4.1.8).
func isSHA256Thumbprint(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// truncateValue shortens a refused value for the message.
func truncateValue(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// onlyWhenSigning refuses an assertion field on a connection that signs
// nothing (neither private_key_jwt nor the JWT-bearer grant): the field
// would be silently ignored.
var onlyWhenSigning = rule{
	refuses: func(c *connParser, _ value) bool { return !c.signs() },
	message: func(*connParser, value) string { return "is never used: the connection signs nothing; remove it" },
}
