package testprovider

// Signed JWT assertions (RFC 7523): the client authentication of §2.2
// (private_key_jwt, and a federated credential such as a managed identity's
// Entra token) and the authorization grant of §2.1 (jwtbearer.go).
//
// The verifier is written by hand with crypto/* rather than with a JWT
// library: it is about 200 lines, every check is one the tests want to see
// fail on its own (so a library's defaults would be in the way), and it
// stays independent of whatever the client side uses to build assertions,
// so a mistake shared by both sides cannot pass unnoticed.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// ClientAssertionType is the client_assertion_type of a JWT client
// assertion (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// DefaultAssertionSkew is the clock skew allowed on iat, nbf and exp when
// Config.AssertionSkew is zero.
const DefaultAssertionSkew = time.Minute

// DefaultClientAssertionLifetime is the longest exp - iat accepted for a
// private_key_jwt client assertion when Config.ClientAssertionMaxLifetime
// is zero: the five minutes issue 17 sets for the client's assertions.
const DefaultClientAssertionLifetime = 5 * time.Minute

// JWKS is a JSON Web Key Set (RFC 7517 §5) of public keys.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one public key (RFC 7517 §4, RFC 7518 §6): RSA (n, e) or EC P-256
// (crv, x, y).
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	// X5tS256 is the certificate thumbprint Entra matches a certificate
	// credential by (the x5t#S256 header of the assertion).
	X5tS256 string `json:"x5t#S256,omitempty"`
}

// ParseJWKS reads a JWK Set as JSON and checks that every key is usable.
func ParseJWKS(b []byte) (JWKS, error) {
	var s JWKS
	if err := json.Unmarshal(b, &s); err != nil {
		return JWKS{}, fmt.Errorf("JWKS: %w", err)
	}
	for i, k := range s.Keys {
		if _, err := k.publicKey(); err != nil {
			return JWKS{}, fmt.Errorf("JWKS key %d (kid %q): %w", i, k.Kid, err)
		}
	}
	return s, nil
}

// PublicJWK returns the JWK of an *rsa.PublicKey or a P-256
// *ecdsa.PublicKey, with kid set.
func PublicJWK(pub crypto.PublicKey, kid string) (JWK, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return JWK{Kty: "RSA", Kid: kid, N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return JWK{}, errors.New("only P-256 EC keys are supported (ES256)")
		}
		raw, err := k.Bytes() // 0x04 || X || Y, each 32 bytes
		if err != nil {
			return JWK{}, err
		}
		return JWK{Kty: "EC", Kid: kid, Crv: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:])}, nil
	}
	return JWK{}, fmt.Errorf("unsupported public key type %T", pub)
}

func (k JWK) publicKey() (crypto.PublicKey, error) {
	dec := base64.RawURLEncoding.DecodeString
	switch k.Kty {
	case "RSA":
		n, err1 := dec(k.N)
		e, err2 := dec(k.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("malformed RSA key")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits; at least 2048 required", pub.N.BitLen())
		}
		return pub, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("EC curve %q; only P-256", k.Crv)
		}
		x, err1 := dec(k.X)
		y, err2 := dec(k.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("malformed EC key")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), slices.Concat([]byte{4}, x, y))
		if err != nil {
			return nil, fmt.Errorf("EC key: %w", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("key type %q; only RSA and EC", k.Kty)
}

// assertionHeader is a JWS protected header (RFC 7515 §4.1).
type assertionHeader struct {
	Alg     string `json:"alg"`
	Kid     string `json:"kid"`
	Typ     string `json:"typ"`
	X5tS256 string `json:"x5t#S256"`
	Crit    []any  `json:"crit"`
}

// assertionRules is what one kind of assertion must satisfy.
type assertionRules struct {
	// what names the assertion in error descriptions.
	what string
	keys JWKS
	// algs are the signature algorithms accepted (RS256, PS256, ES256).
	algs []string
	// issuer and subject must equal iss and sub; subject "" means sub may
	// be anything or absent.
	issuer, subject string
	// audiences are the accepted aud values; aud (a string or an array)
	// must contain one of them.
	audiences []string
	// maxAhead bounds exp - now (plus skew); 0 means no bound.
	maxAhead time.Duration
	// maxLifetime bounds exp - iat, and makes iat required; 0 means no
	// bound (iat is then checked only when present).
	maxLifetime time.Duration
	// requireJTI refuses an assertion without jti.
	requireJTI bool
	// refuseReplay refuses an assertion whose jti was already accepted
	// and has not expired (RFC 7523 §3 point 7).
	refuseReplay bool
	// scope, when not nil, must be exactly the space-separated scope claim
	// (order ignored).
	scope []string
	skew  time.Duration
}

// assertionClaims are the registered claims read (RFC 7519 §4.1), with
// every claim kept in All for tests to inspect.
type assertionClaims struct {
	Iss, Sub, Jti, Scope string
	Aud                  []string
	Exp, Iat, Nbf        *time.Time
	All                  map[string]any
}

// verifyAssertion checks a compact JWS against rules, at now. It returns
// the claims, or an error whose text says which check failed (it never
// repeats the assertion). seen is the replay cache: jti -> exp.
func verifyAssertion(jwt string, r assertionRules, now time.Time, seen map[string]time.Time) (assertionClaims, error) {
	var c assertionClaims
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return c, fmt.Errorf("%s is not a compact JWS (three dot-separated parts)", r.what)
	}
	var h assertionHeader
	if err := decodeSegment(parts[0], &h); err != nil {
		return c, fmt.Errorf("%s header: %w", r.what, err)
	}
	if len(h.Crit) > 0 {
		return c, fmt.Errorf("%s header has crit, which is not supported", r.what)
	}
	if !slices.Contains(r.algs, h.Alg) {
		return c, fmt.Errorf("%s alg %q is not accepted (want one of %s)", r.what, h.Alg, strings.Join(r.algs, ", "))
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return c, fmt.Errorf("%s signature is not base64url", r.what)
	}
	key, err := pickKey(r.keys, h)
	if err != nil {
		return c, fmt.Errorf("%s: %w", r.what, err)
	}
	if err := verifySignature(h.Alg, key, parts[0]+"."+parts[1], sig); err != nil {
		return c, fmt.Errorf("%s signature: %w", r.what, err)
	}
	if err := decodeSegment(parts[1], &c.All); err != nil {
		return c, fmt.Errorf("%s claims: %w", r.what, err)
	}
	if err := c.read(); err != nil {
		return c, fmt.Errorf("%s claims: %w", r.what, err)
	}

	switch {
	case c.Iss != r.issuer:
		return c, fmt.Errorf("%s iss %q is not %q", r.what, c.Iss, r.issuer)
	case r.subject != "" && c.Sub != r.subject:
		return c, fmt.Errorf("%s sub %q is not %q", r.what, c.Sub, r.subject)
	case !slices.ContainsFunc(c.Aud, func(a string) bool { return slices.Contains(r.audiences, a) }):
		return c, fmt.Errorf("%s aud %q does not name this server (want %q)", r.what, c.Aud, r.audiences)
	case c.Exp == nil:
		return c, fmt.Errorf("%s has no exp (RFC 7523 §3 point 4)", r.what)
	case !now.Before(c.Exp.Add(r.skew)):
		return c, fmt.Errorf("%s expired at %s", r.what, c.Exp.UTC().Format(time.RFC3339))
	case c.Nbf != nil && now.Add(r.skew).Before(*c.Nbf):
		return c, fmt.Errorf("%s is not valid before %s", r.what, c.Nbf.UTC().Format(time.RFC3339))
	case c.Iat != nil && now.Add(r.skew).Before(*c.Iat):
		return c, fmt.Errorf("%s iat %s is in the future", r.what, c.Iat.UTC().Format(time.RFC3339))
	case r.maxLifetime > 0 && c.Iat == nil:
		return c, fmt.Errorf("%s has no iat", r.what)
	case r.maxLifetime > 0 && c.Exp.Sub(*c.Iat) > r.maxLifetime:
		return c, fmt.Errorf("%s lives %s from iat to exp; at most %s", r.what, c.Exp.Sub(*c.Iat), r.maxLifetime)
	case r.maxAhead > 0 && c.Exp.Sub(now) > r.maxAhead+r.skew:
		return c, fmt.Errorf("%s exp is %s ahead; at most %s", r.what, c.Exp.Sub(now).Round(time.Second), r.maxAhead)
	case r.requireJTI && c.Jti == "":
		return c, fmt.Errorf("%s has no jti", r.what)
	case r.scope != nil && !sameScope(c.Scope, r.scope):
		return c, fmt.Errorf("%s scope %q is not %q", r.what, c.Scope, strings.Join(r.scope, " "))
	}
	if r.refuseReplay && c.Jti != "" {
		for j, exp := range seen {
			if now.After(exp.Add(r.skew)) {
				delete(seen, j) // expired assertions are refused by exp anyway
			}
		}
		if _, dup := seen[c.Jti]; dup {
			return c, fmt.Errorf("%s jti %q was already used (replay)", r.what, c.Jti)
		}
		seen[c.Jti] = *c.Exp
	}
	return c, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return errors.New("not base64url without padding")
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return errors.New("not a JSON object")
	}
	return nil
}

// read fills the registered claims from All, refusing wrong types: exp as
// the string "1333685628" is a real client mistake (Salesforce's own
// example has it), and NumericDate is a number (RFC 7519 §2).
func (c *assertionClaims) read() error {
	str := func(name string) (string, error) {
		v, ok := c.All[name]
		if !ok {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("%s is not a string", name)
		}
		return s, nil
	}
	date := func(name string) (*time.Time, error) {
		v, ok := c.All[name]
		if !ok {
			return nil, nil
		}
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%s is not a NumericDate (a JSON number)", name)
		}
		f, err := n.Float64()
		if err != nil {
			return nil, fmt.Errorf("%s is not a NumericDate", name)
		}
		t := time.Unix(int64(f), 0)
		return &t, nil
	}
	var err error
	for name, dst := range map[string]*string{"iss": &c.Iss, "sub": &c.Sub, "jti": &c.Jti, "scope": &c.Scope} {
		if *dst, err = str(name); err != nil {
			return err
		}
	}
	for name, dst := range map[string]**time.Time{"exp": &c.Exp, "iat": &c.Iat, "nbf": &c.Nbf} {
		if *dst, err = date(name); err != nil {
			return err
		}
	}
	switch a := c.All["aud"].(type) {
	case string:
		c.Aud = []string{a}
	case []any:
		for _, v := range a {
			s, ok := v.(string)
			if !ok {
				return errors.New("aud has a value that is not a string")
			}
			c.Aud = append(c.Aud, s)
		}
	case nil:
	default:
		return errors.New("aud is neither a string nor an array of strings")
	}
	return nil
}

// pickKey finds the key the header names: by kid, else by x5t#S256, else
// the only key of the algorithm's type.
func pickKey(set JWKS, h assertionHeader) (crypto.PublicKey, error) {
	kty := "RSA"
	if h.Alg == "ES256" {
		kty = "EC"
	}
	var cands []JWK
	for _, k := range set.Keys {
		switch {
		case k.Kty != kty:
		case h.Kid != "":
			if k.Kid == h.Kid {
				cands = append(cands, k)
			}
		case h.X5tS256 != "":
			if k.X5tS256 == h.X5tS256 {
				cands = append(cands, k)
			}
		default:
			cands = append(cands, k)
		}
	}
	switch {
	case len(cands) == 0 && h.Kid != "":
		return nil, fmt.Errorf("no %s key with kid %q", kty, h.Kid)
	case len(cands) == 0 && h.X5tS256 != "":
		return nil, fmt.Errorf("no %s key with x5t#S256 %q", kty, h.X5tS256)
	case len(cands) == 0:
		return nil, fmt.Errorf("no %s key", kty)
	case len(cands) > 1:
		return nil, fmt.Errorf("%d %s keys match; the header must name one with kid", len(cands), kty)
	}
	return cands[0].publicKey()
}

func verifySignature(alg string, key crypto.PublicKey, signingInput string, sig []byte) error {
	digest := sha256.Sum256([]byte(signingInput))
	switch alg {
	case "RS256", "PS256":
		pub, ok := key.(*rsa.PublicKey)
		if !ok {
			return errors.New("the key is not RSA")
		}
		if alg == "RS256" {
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		}
		// RFC 7518 §3.5: the salt is as long as the hash. Key Vault's PS256
		// signs that way too.
		return rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		pub, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return errors.New("the key is not EC")
		}
		// RFC 7518 §3.4: R || S, 32 bytes each, not ASN.1.
		if len(sig) != 64 {
			return fmt.Errorf("ES256 signature of %d bytes; R||S is 64", len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub, digest[:], r, s) {
			return errors.New("verification failed")
		}
		return nil
	}
	return fmt.Errorf("alg %q", alg)
}

func sameScope(claim string, want []string) bool {
	got := strings.Fields(claim)
	return len(got) == len(want) && !slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(got, w) })
}

// constantEqual compares two credentials without leaking their length
// through timing more than subtle does.
func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
