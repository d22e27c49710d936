package backends

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// assertionChecker is a token endpoint that verifies the assertion of each
// request against a public key: signature, alg, kid, aud, iss, sub, iat,
// exp at most five minutes ahead, a jti never seen before. It answers 400
// invalid_client (or invalid_grant) naming the failed check.
type assertionChecker struct {
	t      *testing.T
	pub    crypto.PublicKey
	kid    string
	x5t    string // the x5t#S256 header wanted, "" for none
	alg    string
	aud    string
	iss    string
	sub    string
	grant  bool // the JWT-bearer grant, not a client assertion
	scope  string
	mu     sync.Mutex
	seen   map[string]bool
	forms  []url.Values
	failed []string
}

func (a *assertionChecker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", 400)
		return
	}
	a.mu.Lock()
	a.forms = append(a.forms, r.PostForm)
	a.mu.Unlock()
	field, code := "client_assertion", "invalid_client"
	if a.grant {
		field, code = "assertion", "invalid_grant"
		if r.PostForm.Get("grant_type") != oauth.JWTBearerGrantType {
			a.fail(w, code, "grant_type is "+r.PostForm.Get("grant_type"))
			return
		}
	} else if r.PostForm.Get("client_assertion_type") != oauth.ClientAssertionType {
		a.fail(w, code, "client_assertion_type")
		return
	}
	if r.PostForm.Has("client_secret") || r.Header.Get("Authorization") != "" {
		a.fail(w, code, "a client secret was sent")
		return
	}
	if msg := a.check(r.PostForm.Get(field)); msg != "" {
		a.fail(w, code, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","expires_in":3600}`, time.Now().UnixNano())
}

func (a *assertionChecker) fail(w http.ResponseWriter, code, msg string) {
	a.mu.Lock()
	a.failed = append(a.failed, msg)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(400)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
}

func (a *assertionChecker) check(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "not a JWS"
	}
	var h struct {
		Alg, Kid, Typ string
		X5tS256       string `json:"x5t#S256"`
	}
	var c struct {
		Iss, Sub, Jti, Scope string
		Aud                  string
		Iat, Exp             int64
	}
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return "header or claims not JSON"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	var ok bool
	switch k := a.pub.(type) {
	case *rsa.PublicKey:
		if h.Alg == "PS256" {
			ok = rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig, nil) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
		}
	case *ecdsa.PublicKey:
		ok = len(sig) == 64 && ecdsa.Verify(k, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	}
	now := time.Now().Unix()
	a.mu.Lock()
	replay := a.seen[c.Jti]
	a.seen[c.Jti] = true
	a.mu.Unlock()
	switch {
	case !ok:
		return "bad signature"
	case h.Alg != a.alg || h.Kid != a.kid || h.X5tS256 != a.x5t || h.Typ != "JWT":
		return fmt.Sprintf("header %+v", h)
	case c.Aud != a.aud || c.Iss != a.iss || c.Sub != a.sub || c.Scope != a.scope:
		return fmt.Sprintf("claims %+v", c)
	case c.Iat < now-60 || c.Iat > now+60 || c.Exp <= now || c.Exp > now+300:
		return "iat or exp"
	case c.Jti == "" || replay:
		return "jti missing or replayed"
	}
	return ""
}

// vaultSigner is a KeySigner on v through the real azkeys client.
func vaultSigner(t *testing.T, v *kvtest.Vault) *KeySigner {
	t.Helper()
	s, err := NewKeySigner(v.URL, &fake.TokenCredential{}, &azkeys.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: v.HTTPClient()},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAssertionsSignedInKeyVault: private_key_jwt and the JWT-bearer
// grant, signed by Key Vault keys through the real azkeys client against
// the kvtest double, are accepted by a verifier holding only the public
// key, for RS256, PS256 and ES256; each attempt has a new jti; no client
// secret is sent.
func TestAssertionsSignedInKeyVault(t *testing.T) {
	tests := []struct {
		name  string
		kt    kvtest.KeyType
		alg   string // the connection's signingAlg, "" for the key's default
		want  string
		grant bool
		thumb string // certificateThumbprint: x5t#S256 in place of kid
	}{
		{"rsa default RS256", kvtest.RSA, "", "RS256", false, ""},
		{"rsa PS256", kvtest.RSA, "PS256", "PS256", false, ""},
		{"ec ES256", kvtest.EC, "", "ES256", false, ""},
		{"jwt bearer grant", kvtest.RSA, "", "RS256", true, ""},
		{"certificate thumbprint", kvtest.RSA, "PS256", "PS256", false, "nVhOxf1Xv2R8yBs5Hk0YfRmg4rbqZQ7Vd6cYzZpZsKQ"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := kvtest.New(t, &kvtest.Options{TLS: true})
			k := v.CreateKey("conn-signing-key", tt.kt)
			chk := &assertionChecker{t: t, pub: k.Public, kid: k.Version, alg: tt.want, seen: map[string]bool{}}
			if tt.thumb != "" {
				chk.kid, chk.x5t = "", tt.thumb
			}
			srv := httptest.NewServer(chk)
			t.Cleanup(srv.Close)
			conn := &broker.Connection{
				Name: "conn", Grant: broker.GrantClientCredentials, TokenURL: srv.URL + "/token",
				AuthStyle: broker.AuthPrivateKeyJWT, ClientID: "client-1",
				Assertion: broker.Assertion{Key: "conn-signing-key", Algorithm: tt.alg, CertificateThumbprint: tt.thumb},
				Scopes:    []string{"api"},
			}
			chk.aud, chk.iss, chk.sub = conn.TokenURL, "client-1", "client-1"
			if tt.grant {
				conn.Grant, conn.AuthStyle, chk.grant = broker.GrantJWTBearer, broker.AuthNone, true
				conn.Assertion.Subject, conn.Assertion.Audience, conn.Assertion.ScopeClaim = "user@example.com", "https://login.example.com", true
				chk.sub, chk.aud, chk.scope = "user@example.com", "https://login.example.com", "api"
			}
			c := oauth.New(oauth.Options{Signer: vaultSigner(t, v)})
			for range 2 {
				if _, err := c.Token(context.Background(), conn, broker.Credentials{}); err != nil {
					t.Fatalf("Token: %v (verifier: %v)", err, chk.failed)
				}
			}
			if got := v.Signs(); got != 2 {
				t.Errorf("Key Vault signed %d times, want 2 (one per request)", got)
			}
			if got := v.Counts().KeyGets; got != 1 {
				t.Errorf("the key was read %d times, want 1 (its version is cached)", got)
			}
			if tt.grant && chk.forms[0].Has("client_id") {
				t.Errorf("clientAuth none sent client_id")
			}
		})
	}
}

// TestFederatedAssertionCached: a managedIdentity connection sends the
// managed identity's token for api://AzureADTokenExchange/.default as its
// client assertion, asks for it once while it is valid, and again once it
// is within five minutes of its expiry.
func TestFederatedAssertionCached(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	exp := time.Now().Add(time.Hour)
	cred := credFunc(func(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, strings.Join(o.Scopes, " "))
		return azcore.AccessToken{Token: fmt.Sprintf("mi-token-%d", len(asked)), ExpiresOn: exp}, nil
	})
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		mu.Lock()
		got = append(got, r.PostForm.Get("client_assertion_type")+" "+r.PostForm.Get("client_assertion")+" "+r.PostForm.Get("client_secret"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token":"at","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(srv.Close)
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := oauth.New(oauth.Options{Federated: Federated(cred), Now: clock})
	conn := &broker.Connection{Name: "entra", Grant: broker.GrantClientCredentials, TokenURL: srv.URL, AuthStyle: broker.AuthManagedIdentity, ClientID: "app-1"}
	for i := range 3 {
		if i == 2 {
			mu.Lock()
			now = exp.Add(-4 * time.Minute)
			mu.Unlock()
		}
		if _, err := c.Token(context.Background(), conn, broker.Credentials{}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		oauth.ClientAssertionType + " mi-token-1 ",
		oauth.ClientAssertionType + " mi-token-1 ",
		oauth.ClientAssertionType + " mi-token-2 ",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("requests carried %q, want %q", got, want)
	}
	if len(asked) != 2 || asked[0] != "api://AzureADTokenExchange/.default" {
		t.Errorf("the managed identity was asked for %q, want api://AzureADTokenExchange/.default twice", asked)
	}
}

type credFunc func(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error)

func (f credFunc) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return f(ctx, o)
}

// TestNoClientSecretRead: a broker whose connection authenticates with a
// private_key_jwt assertion obtains its token through the Key Vault store
// (azsecrets) and the Key Vault key (azkeys) of one kvtest vault, and never
// reads a client secret from it: the connection has none.
func TestNoClientSecretRead(t *testing.T) {
	v := kvtest.New(t, &kvtest.Options{TLS: true})
	k := v.CreateKey("pkj-signing-key", kvtest.RSA)
	chk := &assertionChecker{t: t, pub: k.Public, kid: k.Version, alg: "RS256", seen: map[string]bool{}}
	srv := httptest.NewServer(chk)
	t.Cleanup(srv.Close)
	names := broker.DefaultSecretNames("pkj")
	v.Put(names.ClientSecret, "a-secret-that-must-not-be-read", time.Time{})
	conn := broker.Connection{
		Name: "pkj", Provider: "generic", Grant: broker.GrantClientCredentials, TokenURL: srv.URL + "/token",
		AuthStyle: broker.AuthPrivateKeyJWT, ClientID: "client-1", Secrets: names,
		Assertion:     broker.Assertion{Key: "pkj-signing-key"},
		RefreshBefore: 5 * time.Minute, DefaultLifetime: time.Hour,
	}
	chk.aud, chk.iss, chk.sub = conn.TokenURL, "client-1", "client-1"
	locker, err := local.NewLocker(t.TempDir(), local.LockerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{
		Store:       keyvault.New(v.Client, keyvault.Options{VaultURL: v.URL}),
		Locker:      locker,
		Connections: []broker.Connection{conn},
		Grant:       oauth.New(oauth.Options{Signer: vaultSigner(t, v)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	if _, err := b.Token(context.Background(), "pkj", 0); err != nil {
		t.Fatalf("Token: %v (verifier: %v)", err, chk.failed)
	}
	if n := v.GetsOf(names.ClientSecret); n != 0 {
		t.Errorf("the client secret was read %d times; a private_key_jwt connection has none", n)
	}
	if v.Signs() != 1 {
		t.Errorf("Key Vault signed %d times, want 1", v.Signs())
	}
}
