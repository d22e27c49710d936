package testprovider_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// signer signs test assertions with one key.
type signer struct {
	alg string
	key crypto.Signer
	kid string
}

var (
	rsaKey1 = mustRSA()
	rsaKey2 = mustRSA()
	ecKey1  = mustEC()
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

func jwks(t *testing.T, ss ...signer) testprovider.JWKS {
	t.Helper()
	var set testprovider.JWKS
	for _, s := range ss {
		k, err := testprovider.PublicJWK(s.key.Public(), s.kid)
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, k)
	}
	// Through JSON, as an operator would hand it over.
	b, _ := json.Marshal(set)
	parsed, err := testprovider.ParseJWKS(b)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func (s signer) sign(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": s.alg, "typ": "JWT"}
	if s.kid != "" {
		h["kid"] = s.kid
	}
	maps.Copy(h, header)
	for k, v := range h {
		if v == nil {
			delete(h, k)
		}
	}
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(h) + "." + enc(claims)
	d := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch s.alg {
	case "RS256":
		sig, err = rsa.SignPKCS1v15(rand.Reader, s.key.(*rsa.PrivateKey), crypto.SHA256, d[:])
	case "PS256":
		sig, err = rsa.SignPSS(rand.Reader, s.key.(*rsa.PrivateKey), crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256":
		var r, ss *big.Int
		if r, ss, err = ecdsa.Sign(rand.Reader, s.key.(*ecdsa.PrivateKey), d[:]); err == nil {
			sig = append(r.FillBytes(make([]byte, 32)), ss.FillBytes(make([]byte, 32))...)
		}
	default: // an algorithm the verifier must refuse: sign nothing
		sig = []byte("x")
	}
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// with returns claims with the changes applied; a nil value deletes.
func with(base map[string]any, changes map[string]any) map[string]any {
	out := maps.Clone(base)
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

func postForm(t *testing.T, srv string, form url.Values) result {
	t.Helper()
	resp, err := http.PostForm(srv+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return result{status: resp.StatusCode, header: resp.Header, body: body}
}

func nextJTI() string { return rand.Text() }

// TestClientAssertion: private_key_jwt as RFC 7523 §2.2 and §3 describe it;
// every claim that is wrong on its own is refused with invalid_client.
func TestClientAssertion(t *testing.T) {
	clk := newClock()
	rs := signer{alg: "RS256", key: rsaKey1, kid: "k1"}
	ps := signer{alg: "PS256", key: rsaKey1, kid: "k1"}
	es := signer{alg: "ES256", key: ecKey1, kid: "e1"}
	other := signer{alg: "RS256", key: rsaKey2, kid: "k1"} // same kid, another key
	p, srv := start(t, testprovider.Config{Now: clk.Now, ClientAssertionKeys: jwks(t, rs, es)})
	aud := srv.URL + "/token"
	now := clk.Now().Unix()
	good := func() map[string]any {
		return map[string]any{"iss": clientID, "sub": clientID, "aud": aud, "jti": nextJTI(), "iat": now, "exp": now + 300}
	}
	tests := []struct {
		name    string
		s       signer
		header  map[string]any
		claims  map[string]any
		form    map[string]string
		wantErr string // "" means accepted
	}{
		{name: "RS256", s: rs, claims: good()},
		{name: "PS256", s: ps, claims: good()},
		{name: "ES256", s: es, claims: good()},
		{name: "aud as an array", s: rs, claims: with(good(), map[string]any{"aud": []string{"x", aud}})},
		{name: "no kid, one key of the type", s: es, header: map[string]any{"kid": nil}, claims: good()},
		{name: "client_id matching", s: rs, claims: good(), form: map[string]string{"client_id": clientID}},
		{name: "wrong key", s: other, claims: good(), wantErr: "signature"},
		{name: "unknown kid", s: signer{alg: "RS256", key: rsaKey1, kid: "nope"}, claims: good(), wantErr: `kid "nope"`},
		{name: "alg none", s: signer{alg: "none", key: rsaKey1, kid: "k1"}, claims: good(), wantErr: `alg "none"`},
		{name: "alg HS256", s: signer{alg: "HS256", key: rsaKey1, kid: "k1"}, claims: good(), wantErr: `alg "HS256"`},
		{name: "iss not the client", s: rs, claims: with(good(), map[string]any{"iss": "someone"}), wantErr: "iss"},
		{name: "sub not the client", s: rs, claims: with(good(), map[string]any{"sub": "someone"}), wantErr: "sub"},
		{name: "aud another server", s: rs, claims: with(good(), map[string]any{"aud": "https://elsewhere/token"}), wantErr: "aud"},
		{name: "no aud", s: rs, claims: with(good(), map[string]any{"aud": nil}), wantErr: "aud"},
		{name: "expired", s: rs, claims: with(good(), map[string]any{"exp": now - 61}), wantErr: "expired"},
		{name: "no exp", s: rs, claims: with(good(), map[string]any{"exp": nil}), wantErr: "no exp"},
		{name: "exp as a string", s: rs, claims: with(good(), map[string]any{"exp": "1333685628"}), wantErr: "NumericDate"},
		{name: "exp too far ahead", s: rs, claims: with(good(), map[string]any{"exp": now + 3600}), wantErr: "ahead"},
		{name: "iat in the future", s: rs, claims: with(good(), map[string]any{"iat": now + 120}), wantErr: "future"},
		{name: "nbf in the future", s: rs, claims: with(good(), map[string]any{"nbf": now + 120}), wantErr: "not valid before"},
		{name: "no jti", s: rs, claims: with(good(), map[string]any{"jti": nil}), wantErr: "no jti"},
		{name: "client_id another client", s: rs, claims: good(), form: map[string]string{"client_id": "other"}, wantErr: "client_id"},
		{name: "wrong assertion type", s: rs, claims: good(), form: map[string]string{"client_assertion_type": "jwt"}, wantErr: "client_assertion_type"},
		{name: "assertion and secret", s: rs, claims: good(), form: map[string]string{"client_secret": clientSecret}, wantErr: "more than one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {testprovider.ClientAssertionType},
				"client_assertion": {tt.s.sign(t, tt.header, tt.claims)}}
			for k, v := range tt.form {
				form.Set(k, v)
			}
			r := postForm(t, srv.URL, form)
			if tt.wantErr == "" {
				if r.status != http.StatusOK || r.str("access_token") == "" {
					t.Fatalf("refused: %d %v", r.status, r.body)
				}
				last, _ := p.LastRequest()
				if !last.AssertionAuth || last.Claims["jti"] != tt.claims["jti"] {
					t.Errorf("request record: assertion %v, claims %v", last.AssertionAuth, last.Claims)
				}
				return
			}
			if r.status != http.StatusUnauthorized || r.str("error") != "invalid_client" || !strings.Contains(r.str("error_description"), tt.wantErr) {
				t.Fatalf("got %d %v; want 401 invalid_client naming %q", r.status, r.body, tt.wantErr)
			}
		})
	}

	t.Run("replay", func(t *testing.T) {
		a := rs.sign(t, nil, good())
		form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {testprovider.ClientAssertionType}, "client_assertion": {a}}
		if r := postForm(t, srv.URL, form); r.status != http.StatusOK {
			t.Fatalf("first use refused: %v", r.body)
		}
		if r := postForm(t, srv.URL, form); r.status != http.StatusUnauthorized || !strings.Contains(r.str("error_description"), "replay") {
			t.Fatalf("replay: got %d %v", r.status, r.body)
		}
	})
	t.Run("a secret is refused when only assertions are configured", func(t *testing.T) {
		_, srv2 := start(t, testprovider.Config{ClientID: clientID, ClientAssertionKeys: jwks(t, rs)})
		r := postForm(t, srv2.URL, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {""}})
		if r.status != http.StatusUnauthorized {
			t.Fatalf("empty secret accepted: %d %v", r.status, r.body)
		}
	})
}

// TestFederatedCredential: an assertion from a trusted issuer (a managed
// identity's Entra token) authenticates the client, may be sent again, and
// is refused when its subject, audience or signer is wrong.
func TestFederatedCredential(t *testing.T) {
	clk := newClock()
	mi := signer{alg: "RS256", key: rsaKey2, kid: "entra-1"}
	const issuer, subject = "https://login.microsoftonline.com/tenant-1/v2.0", "mi-object-id"
	_, srv := start(t, testprovider.Config{Now: clk.Now, ClientID: clientID, FederatedCredentials: []testprovider.FederatedCredential{
		{Issuer: issuer, Subject: subject, Audience: testprovider.AzureADTokenExchange, Keys: jwks(t, mi)}}})
	now := clk.Now().Unix()
	good := map[string]any{"iss": issuer, "sub": subject, "aud": testprovider.AzureADTokenExchange, "iat": now, "exp": now + 86400}
	send := func(a string, clientIDParam bool) result {
		form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {testprovider.ClientAssertionType}, "client_assertion": {a}}
		if clientIDParam {
			form.Set("client_id", clientID)
		}
		return postForm(t, srv.URL, form)
	}
	a := mi.sign(t, nil, good)
	for i := range 2 { // a cached token is sent again: accepted
		if r := send(a, true); r.status != http.StatusOK {
			t.Fatalf("use %d: %d %v", i, r.status, r.body)
		}
	}
	for name, tc := range map[string]struct {
		a    string
		id   bool
		want string
	}{
		"no client_id":   {a, false, "client_id is required"},
		"other subject":  {mi.sign(t, nil, with(good, map[string]any{"sub": "x"})), true, "sub"},
		"other audience": {mi.sign(t, nil, with(good, map[string]any{"aud": "api://other"})), true, "aud"},
		"other signer":   {signer{alg: "RS256", key: rsaKey1, kid: "entra-1"}.sign(t, nil, good), true, "signature"},
		"unknown issuer": {mi.sign(t, nil, with(good, map[string]any{"iss": "https://evil"})), true, "not accepted"},
	} {
		if r := send(tc.a, tc.id); r.status != http.StatusUnauthorized || !strings.Contains(r.str("error_description"), tc.want) {
			t.Errorf("%s: got %d %v; want invalid_client naming %q", name, r.status, r.body, tc.want)
		}
	}
}

// TestJWTBearerGrant: each provider's documented claims are accepted and
// each one wrong on its own is refused with invalid_grant (RFC 7523 §3.1).
func TestJWTBearerGrant(t *testing.T) {
	clk := newClock()
	rs := signer{alg: "RS256", key: rsaKey1, kid: "k1"}
	keys := jwks(t, rs)
	now := clk.Now().Unix()
	type mutation struct {
		name    string
		changes map[string]any
		want    string
	}
	common := func() []mutation {
		return []mutation{
			{"iss", map[string]any{"iss": "other"}, "iss"},
			{"aud", map[string]any{"aud": "https://elsewhere"}, "aud"},
			{"expired", map[string]any{"exp": now - 61}, "expired"},
			{"exp missing", map[string]any{"exp": nil}, "no exp"},
		}
	}
	providers := []struct {
		name   string
		jb     *testprovider.JWTBearer
		good   map[string]any
		extra  []mutation
		signer signer
	}{
		{name: "salesforce",
			jb:   testprovider.SalesforceJWTBearer(keys, "3MVG9-consumer-key", "integration@example.com", "https://login.salesforce.com"),
			good: map[string]any{"iss": "3MVG9-consumer-key", "sub": "integration@example.com", "aud": "https://login.salesforce.com", "exp": now + 170},
			extra: []mutation{
				{"sub", map[string]any{"sub": "someone@example.com"}, "sub"},
				{"token URL as aud", map[string]any{"aud": "https://login.salesforce.com/services/oauth2/token"}, "aud"},
				{"exp beyond 3 minutes", map[string]any{"exp": now + 300}, "ahead"},
			}},
		{name: "docusign",
			jb: testprovider.DocusignJWTBearer(keys, "integration-key", "user-guid", "account-d.docusign.com", "signature", "impersonation"),
			good: map[string]any{"iss": "integration-key", "sub": "user-guid", "aud": "account-d.docusign.com",
				"iat": now, "exp": now + 3600, "scope": "signature impersonation"},
			extra: []mutation{
				{"sub", map[string]any{"sub": "other-guid"}, "sub"},
				{"aud with a scheme", map[string]any{"aud": "https://account-d.docusign.com"}, "aud"},
				{"scope missing impersonation", map[string]any{"scope": "signature"}, "scope"},
				{"no iat", map[string]any{"iat": nil}, "no iat"},
				{"lives over an hour", map[string]any{"exp": now + 3601 + 600, "iat": now}, "at most 1h"},
			}},
		{name: "google",
			jb: testprovider.GoogleServiceAccountJWTBearer(keys, "sa@project.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token", "",
				"https://www.googleapis.com/auth/drive.readonly"),
			good: map[string]any{"iss": "sa@project.iam.gserviceaccount.com", "aud": "https://oauth2.googleapis.com/token",
				"iat": now, "exp": now + 3600, "scope": "https://www.googleapis.com/auth/drive.readonly"},
			extra: []mutation{
				{"scope missing", map[string]any{"scope": nil}, "scope"},
				{"scope another", map[string]any{"scope": "https://www.googleapis.com/auth/drive"}, "scope"},
				{"old token URL as aud", map[string]any{"aud": "https://www.googleapis.com/oauth2/v4/token"}, "aud"},
				{"no iat", map[string]any{"iat": nil}, "no iat"},
			}},
	}
	for _, pr := range providers {
		t.Run(pr.name, func(t *testing.T) {
			p, srv := start(t, testprovider.Config{Now: clk.Now, JWTBearer: pr.jb})
			send := func(claims map[string]any) result {
				return postForm(t, srv.URL, url.Values{"grant_type": {testprovider.GrantJWTBearer}, "assertion": {rs.sign(t, nil, claims)}})
			}
			r := send(pr.good)
			if r.status != http.StatusOK || r.str("access_token") == "" || r.body["refresh_token"] != nil {
				t.Fatalf("good assertion: %d %v", r.status, r.body)
			}
			if !p.ValidAccessToken(r.str("access_token")) {
				t.Error("issued access token not valid at the provider")
			}
			for _, m := range append(common(), pr.extra...) {
				r := send(with(pr.good, m.changes))
				if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" || !strings.Contains(r.str("error_description"), m.want) {
					t.Errorf("%s: got %d %v; want 400 invalid_grant naming %q", m.name, r.status, r.body, m.want)
				}
			}
			r = postForm(t, srv.URL, url.Values{"grant_type": {testprovider.GrantJWTBearer},
				"assertion": {signer{alg: "RS256", key: rsaKey2, kid: "k1"}.sign(t, nil, pr.good)}})
			if r.str("error") != "invalid_grant" || !strings.Contains(r.str("error_description"), "signature") {
				t.Errorf("another key's signature: %d %v", r.status, r.body)
			}
			if st := p.Stats(); st.JWTBearerGrants < 2 || st.InvalidClient != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
	t.Run("not configured", func(t *testing.T) {
		_, srv := start(t, testprovider.Config{})
		r := postForm(t, srv.URL, url.Values{"grant_type": {testprovider.GrantJWTBearer}, "assertion": {"a.b.c"}})
		if r.str("error") != "unsupported_grant_type" {
			t.Fatalf("got %d %v", r.status, r.body)
		}
	})
}

// TestClientSecretRotation: the provider holds an old and a new secret,
// then only the new one, as during a rotation.
func TestClientSecretRotation(t *testing.T) {
	p, srv := start(t, testprovider.Config{ClientID: clientID, ClientSecret: "old", ClientSecrets: []string{"new"}, AuthStyle: "body"})
	send := func(secret string) int {
		return postForm(t, srv.URL, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {secret}}).status
	}
	if send("old") != 200 || send("new") != 200 || send("other") != 401 {
		t.Fatal("old and new not both accepted, or another accepted")
	}
	p.SetClientSecrets("new")
	if send("old") != 401 || send("new") != 200 {
		t.Fatal("old still accepted after SetClientSecrets, or new refused")
	}
	if st := p.Stats(); st.InvalidClient != 2 {
		t.Errorf("InvalidClient = %d, want 2", st.InvalidClient)
	}
}
