package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault/kvtest"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// The names the built handler reaches Key Vault and its managed identity
// under in TestConnectionsWithoutAClientSecret.
const (
	// e2eVaultHost must end in vault.azure.net: the Key Vault clients'
	// challenge policy refuses a vault whose host does not end in the
	// challenge's resource host (kvtest.Resource), and the handler sets no
	// DisableChallengeResourceVerification.
	e2eVaultHost = "kv-e2e.vault.azure.net"
	// e2eIdentityHeader is the IDENTITY_HEADER the managed-identity double
	// hands out and requires back.
	e2eIdentityHeader = "e2e-identity-header"
	// e2eIdentityClientID is the user-assigned identity's client id
	// (AZURE_CLIENT_ID), e2eIdentityObjectID its object (principal) id:
	// the subject of its tokens and of the federated credential.
	e2eIdentityClientID = "6f1c3b0e-2a4d-4c55-9e0b-1d2c3e4f5a6b"
	e2eIdentityObjectID = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

// TestConnectionsWithoutAClientSecret runs the built handler, as it runs on
// App Service or Functions, with four connections that have no client
// secret: private_key_jwt for client_credentials and for refresh_token
// (the assertion signed by a Key Vault key through azkeys), the
// google-service-account JWT-bearer preset (signed the same way), and
// managedIdentity (the user-assigned identity's token for
// api://AzureADTokenExchange, obtained by azidentity from IDENTITY_ENDPOINT,
// as client_assertion) for client_credentials and refresh_token. Each
// caller's request is answered with a token the test provider issued, the
// provider rejected nothing, and the handler never read a client secret
// (each connection has one in the vault that must stay unread).
//
// The handler reaches the kvtest vault under a Key Vault host name through
// an HTTPS_PROXY that tunnels CONNECT to the double, trusting the double's
// certificate through SSL_CERT_FILE; it reaches the identity endpoint and
// the providers on loopback, which Go never proxies.
func TestConnectionsWithoutAClientSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// The vault, under e2eVaultHost, with a certificate for that name.
	vault, proxy, certFile := proxiedVault(t, dir)

	// The managed identity and the tokens it issues.
	mi := newIdentityDouble(t)

	const clientID = "e2e-client"
	signing := vault.CreateKey("pkj-signing-key", kvtest.RSA)
	signingJWK, err := testprovider.PublicJWK(signing.Public, signing.Version)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate credential, as Entra registers one: the provider
	// knows the key by the certificate's x5t#S256 only (no kid), which
	// the connection gives as certificateThumbprint.
	certKey := vault.CreateKey("pkj-cert-key", kvtest.RSA)
	certJWK, err := testprovider.PublicJWK(certKey.Public, "")
	if err != nil {
		t.Fatal(err)
	}
	thumb := sha256.Sum256([]byte("the DER certificate of pkj-cert-key"))
	certJWK.X5tS256 = base64.RawURLEncoding.EncodeToString(thumb[:])
	pkj := testprovider.New(testprovider.Config{
		ClientID: clientID, ClientAssertionKeys: testprovider.JWKS{Keys: []testprovider.JWK{signingJWK, certJWK}},
		AccessTokenLifetime: time.Hour,
	})
	pkjSrv := httptest.NewServer(pkj)
	t.Cleanup(pkjSrv.Close)

	miProvider := testprovider.New(testprovider.Config{
		ClientID: clientID, AccessTokenLifetime: time.Hour,
		FederatedCredentials: []testprovider.FederatedCredential{{
			Issuer: mi.issuer, Subject: e2eIdentityObjectID, Audience: testprovider.AzureADTokenExchange,
			Keys: testprovider.JWKS{Keys: []testprovider.JWK{mi.jwk}},
		}},
	})
	miSrv := httptest.NewServer(miProvider)
	t.Cleanup(miSrv.Close)

	const (
		googleEmail = "tokens@e2e-project.iam.gserviceaccount.com"
		googleScope = "https://www.googleapis.com/auth/drive.readonly"
	)
	googleKey := vault.CreateKey("google-signing-key", kvtest.RSA)
	googleJWK, err := testprovider.PublicJWK(googleKey.Public, googleKey.Version)
	if err != nil {
		t.Fatal(err)
	}
	// The audience is the preset's, Google's token URL: the assertion
	// names it wherever the token request is sent.
	google := testprovider.New(testprovider.Config{
		AccessTokenLifetime: time.Hour,
		JWTBearer: testprovider.GoogleServiceAccountJWTBearer(testprovider.JWKS{Keys: []testprovider.JWK{googleJWK}},
			googleEmail, "https://oauth2.googleapis.com/token", "", googleScope),
	})
	googleSrv := httptest.NewServer(google)
	t.Cleanup(googleSrv.Close)

	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": "pkj-cc", "grant": "client_credentials", "tokenUrl": %[1]q, "clientAuth": "private_key_jwt", "clientId": %[4]q, "signingKey": "pkj-signing-key"},
  {"name": "pkj-rt", "tokenUrl": %[1]q, "clientAuth": "private_key_jwt", "clientId": %[4]q, "signingKey": "pkj-signing-key"},
  {"name": "mi-cc", "grant": "client_credentials", "tokenUrl": %[2]q, "clientAuth": "managedIdentity", "clientId": %[4]q},
  {"name": "mi-rt", "tokenUrl": %[2]q, "clientAuth": "managedIdentity", "clientId": %[4]q},
  {"name": "google", "provider": "google-service-account", "tokenUrl": %[3]q, "clientId": %[5]q, "scopes": [%[6]q], "signingKey": "google-signing-key"},
  {"name": "pkj-cert", "grant": "client_credentials", "tokenUrl": %[1]q, "clientAuth": "private_key_jwt", "clientId": %[4]q, "signingKey": "pkj-cert-key", "signingAlg": "PS256", "certificateThumbprint": %[7]q}
]}`, pkjSrv.URL+"/token", miSrv.URL+"/token", googleSrv.URL+"/token", clientID, googleEmail, googleScope, certJWK.X5tS256))

	conns := []string{"pkj-cc", "pkj-rt", "mi-cc", "mi-rt", "google", "pkj-cert"}
	for _, c := range conns {
		// A client secret each, which must never be read.
		vault.Put(c+"-client-secret", "cs_must_not_be_read_"+rand.Text(), time.Time{})
	}
	vault.Put("pkj-rt-refresh-token", pkj.IssueRefreshToken(), time.Time{})
	vault.Put("mi-rt-refresh-token", miProvider.IssueRefreshToken(), time.Time{})

	env := []string{
		"CONNECTIONS_FILE=" + connFile,
		"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"),
		"KEY_VAULT_URL=https://" + e2eVaultHost + "/",
		"IDENTITY_ENDPOINT=" + mi.url, "IDENTITY_HEADER=" + e2eIdentityHeader,
		"AZURE_CLIENT_ID=" + e2eIdentityClientID,
		"HTTPS_PROXY=" + proxy, "SSL_CERT_FILE=" + certFile,
		"LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h", "LOG_LEVEL=debug",
	}
	p := startHandler(t, "handler", env, dir)
	p.waitListening(t, 30*time.Second)
	client := newClient(t, 4)

	providers := map[string]*testprovider.Provider{"pkj-cc": pkj, "pkj-rt": pkj, "mi-cc": miProvider, "mi-rt": miProvider, "google": google, "pkj-cert": pkj}
	for _, c := range conns {
		status, body := do(t, client, mustRequest(t, "http://"+p.addr+"/api/token/"+c))
		if status != http.StatusOK {
			t.Errorf("GET /api/token/%s: %d %s", c, status, redact(string(body)))
			continue
		}
		var tok tokenBody
		if err := json.Unmarshal(body, &tok); err != nil {
			t.Fatalf("GET /api/token/%s: %v", c, err)
		}
		if !providers[c].ValidAccessToken(tok.AccessToken) {
			t.Errorf("GET /api/token/%s: the token served (%s) is not one the provider issued", c, fingerprint(tok.AccessToken))
		}
	}

	for _, c := range conns {
		if n := vault.GetsOf(c + "-client-secret"); n != 0 {
			t.Errorf("%s: the client secret was read %d times; the connection has none", c, n)
		}
	}
	for name, prov := range map[string]*testprovider.Provider{"private_key_jwt": pkj, "managedIdentity": miProvider, "google": google} {
		if st := prov.Stats(); st.Rejected != 0 {
			t.Errorf("%s provider rejected %d token requests", name, st.Rejected)
		}
	}
	if st := pkj.Stats(); st.ClientCredentialsGrants < 1 || st.RefreshGrants < 1 {
		t.Errorf("private_key_jwt provider: %d client_credentials and %d refresh_token grants, want both", st.ClientCredentialsGrants, st.RefreshGrants)
	}
	var byThumbprint int
	for _, r := range pkj.Requests() {
		a := r.Form.Get("client_assertion")
		h, err := base64.RawURLEncoding.DecodeString(a[:max(strings.IndexByte(a, '.'), 0)])
		var header map[string]string
		if err == nil && json.Unmarshal(h, &header) == nil && header["x5t#S256"] == certJWK.X5tS256 {
			byThumbprint++
			if _, ok := header["kid"]; ok || header["alg"] != "PS256" {
				t.Errorf("pkj-cert's assertion header %v: want alg PS256, x5t#S256 and no kid", header)
			}
		}
	}
	if byThumbprint == 0 {
		t.Errorf("no assertion carried pkj-cert's x5t#S256 %s", certJWK.X5tS256)
	}
	if st := miProvider.Stats(); st.ClientCredentialsGrants < 1 || st.RefreshGrants < 1 {
		t.Errorf("managedIdentity provider: %d client_credentials and %d refresh_token grants, want both", st.ClientCredentialsGrants, st.RefreshGrants)
	}
	if st := google.Stats(); st.JWTBearerGrants < 1 {
		t.Errorf("google provider: %d JWT-bearer grants, want at least 1", st.JWTBearerGrants)
	}
	if vault.Signs() < 4 {
		t.Errorf("Key Vault signed %d assertions, want at least 4 (pkj-cc, pkj-rt, google, pkj-cert)", vault.Signs())
	}
	if n := mi.issued(testprovider.AzureADTokenExchange); n < 1 {
		t.Errorf("the managed identity issued %d tokens for %s, want at least 1", n, testprovider.AzureADTokenExchange)
	}
	if vault.Counts().Challenges == 0 {
		t.Errorf("the vault challenged no request: the handler did not take Key Vault's challenge path")
	}
	if bad := mi.refusals(); len(bad) != 0 {
		t.Errorf("the managed-identity double refused requests: %v", bad)
	}
	if strings.Contains(p.output(), "cs_must_not_be_read_") {
		t.Errorf("a client secret reached the handler's output")
	}
}

func mustRequest(t *testing.T, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// identityDouble serves the App Service / Functions managed-identity
// endpoint the way azidentity v1.15 calls it through MSAL Go v1.10
// (apps/managedidentity/managedidentity.go, createAppServiceAuthRequest):
// GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R[&client_id=C]
// with the header X-IDENTITY-HEADER: IDENTITY_HEADER, answered with
// access_token, expires_on (Unix seconds as a string, as App Service
// sends it), resource, token_type and client_id. For resource
// api://AzureADTokenExchange the access token is an Entra-shaped JWT
// (iss https://login.microsoftonline.com/{tenant}/v2.0, sub the
// identity's object id, aud the resource) signed RS256 by the double's
// key; for any other resource an opaque token.
type identityDouble struct {
	url, issuer string
	jwk         testprovider.JWK
	key         *rsa.PrivateKey

	mu      sync.Mutex
	counts  map[string]int
	refused []string
}

func newIdentityDouble(t *testing.T) *identityDouble {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := testprovider.PublicJWK(&key.PublicKey, "mi-key-1")
	if err != nil {
		t.Fatal(err)
	}
	d := &identityDouble{
		issuer: "https://login.microsoftonline.com/" + kvtest.TenantID + "/v2.0",
		jwk:    jwk, key: key, counts: map[string]int{},
	}
	srv := httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(srv.Close)
	d.url = srv.URL + "/msi/token"
	return d
}

func (d *identityDouble) refuse(w http.ResponseWriter, status int, why string) {
	d.mu.Lock()
	d.refused = append(d.refused, why)
	d.mu.Unlock()
	http.Error(w, why, status)
}

func (d *identityDouble) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case r.Method != http.MethodGet || r.URL.Path != "/msi/token":
		d.refuse(w, http.StatusNotFound, r.Method+" "+r.URL.Path)
		return
	case r.Header.Get("X-IDENTITY-HEADER") != e2eIdentityHeader:
		d.refuse(w, http.StatusUnauthorized, "X-IDENTITY-HEADER missing or wrong")
		return
	case q.Get("api-version") != "2019-08-01":
		d.refuse(w, http.StatusBadRequest, "api-version "+q.Get("api-version"))
		return
	case q.Get("client_id") != e2eIdentityClientID:
		d.refuse(w, http.StatusBadRequest, "client_id "+q.Get("client_id")+" is not the user-assigned identity")
		return
	case q.Get("resource") == "":
		d.refuse(w, http.StatusBadRequest, "resource missing")
		return
	}
	resource := q.Get("resource")
	now := time.Now()
	exp := now.Add(time.Hour)
	token := "mi_opaque_" + rand.Text()
	if resource == testprovider.AzureADTokenExchange {
		var err error
		token, err = signRS256(d.key, d.jwk.Kid, map[string]any{
			"iss": d.issuer, "sub": e2eIdentityObjectID, "aud": resource,
			"iat": now.Unix(), "nbf": now.Unix(), "exp": exp.Unix(), "oid": e2eIdentityObjectID,
		})
		if err != nil {
			d.refuse(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	d.mu.Lock()
	d.counts[resource]++
	d.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": token, "expires_on": strconv.FormatInt(exp.Unix(), 10),
		"resource": resource, "token_type": "Bearer", "client_id": e2eIdentityClientID,
	})
}

func (d *identityDouble) issued(resource string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[resource]
}

func (d *identityDouble) refusals() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.refused...)
}

func signRS256(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(h) + "." + b64(c)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}

// proxiedVault starts the Key Vault double under e2eVaultHost with a
// certificate for that name, and the CONNECT proxy the handler reaches it
// through: the double, the proxy's URL (HTTPS_PROXY) and the certificate's
// file in dir (SSL_CERT_FILE).
func proxiedVault(t *testing.T, dir string) (vault *kvtest.Vault, proxy, certFile string) {
	t.Helper()
	cert, certPEM := selfSignedFor(t, e2eVaultHost)
	certFile = writeFile(t, dir, "vault-ca.pem", string(certPEM))
	vault = kvtest.New(t, &kvtest.Options{TLS: true, Certificate: &cert})
	return vault, connectProxy(t, e2eVaultHost+":443", strings.TrimPrefix(vault.URL, "https://")), certFile
}

// selfSignedFor returns a certificate for host, and its PEM for a client
// to trust.
func selfSignedFor(t *testing.T, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// connectProxy is an HTTP proxy that tunnels CONNECT target to upstream
// and refuses everything else; it returns its URL.
func connectProxy(t *testing.T, target, upstream string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != target {
			http.Error(w, "this proxy tunnels only to "+target, http.StatusForbidden)
			return
		}
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			_ = up.Close()
			return
		}
		if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			_ = up.Close()
			_ = conn.Close()
			return
		}
		go func() {
			_, _ = io.Copy(up, buf)
			_ = up.Close()
		}()
		_, _ = io.Copy(conn, up)
		_ = conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestConnectionsWithoutAClientSecretConsent is the consent flow of
// assertion-authenticated clients through the built handler: a
// private_key_jwt and a managedIdentity connection with grant
// refresh_token and no refresh token yet each get their first one through
// `handler consent-link`, the link's Continue button, the test provider's
// consent page (Allow) and the handler's callback, whose code exchange is
// authenticated by a client assertion (a Key Vault signature, the managed
// identity's federated token) with no client secret read; the token
// route then serves the connection and, once the consented access token
// is too short for the caller, refreshes it with an assertion too.
func TestConnectionsWithoutAClientSecretConsent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	vault, proxy, certFile := proxiedVault(t, dir)
	mi := newIdentityDouble(t)

	const clientID = "e2e-consent-client"
	// A short access-token lifetime, so that a caller's minValidity soon
	// outlasts the consented token and the handler must refresh.
	const lifetime = 4 * time.Second
	signing := vault.CreateKey("pkj-consent-key", kvtest.RSA)
	signingJWK, err := testprovider.PublicJWK(signing.Public, signing.Version)
	if err != nil {
		t.Fatal(err)
	}
	pkj := testprovider.New(testprovider.Config{
		ClientID: clientID, ClientAssertionKeys: testprovider.JWKS{Keys: []testprovider.JWK{signingJWK}},
		AccessTokenLifetime: lifetime,
	})
	pkjSrv := httptest.NewServer(pkj)
	t.Cleanup(pkjSrv.Close)
	miProvider := testprovider.New(testprovider.Config{
		ClientID: clientID, AccessTokenLifetime: lifetime,
		FederatedCredentials: []testprovider.FederatedCredential{{
			Issuer: mi.issuer, Subject: e2eIdentityObjectID, Audience: testprovider.AzureADTokenExchange,
			Keys: testprovider.JWKS{Keys: []testprovider.JWK{mi.jwk}},
		}},
	})
	miSrv := httptest.NewServer(miProvider)
	t.Cleanup(miSrv.Close)

	connFile := writeFile(t, dir, "connections.json", fmt.Sprintf(`{"connections": [
  {"name": "pkj-consent", "tokenUrl": %[1]q, "authorizationUrl": %[2]q, "clientAuth": "private_key_jwt", "clientId": %[5]q, "signingKey": "pkj-consent-key"},
  {"name": "mi-consent", "tokenUrl": %[3]q, "authorizationUrl": %[4]q, "clientAuth": "managedIdentity", "clientId": %[5]q}
]}`, pkjSrv.URL+"/token", pkjSrv.URL+"/authorize", miSrv.URL+"/token", miSrv.URL+"/authorize", clientID))
	providers := map[string]*testprovider.Provider{"pkj-consent": pkj, "mi-consent": miProvider}
	for c := range providers {
		vault.Put(c+"-client-secret", "cs_must_not_be_read_"+rand.Text(), time.Time{})
	}

	env := []string{
		"CONNECTIONS_FILE=" + connFile,
		"LOCAL_STATE_DIR=" + filepath.Join(dir, "state"),
		"KEY_VAULT_URL=https://" + e2eVaultHost + "/",
		"IDENTITY_ENDPOINT=" + mi.url, "IDENTITY_HEADER=" + e2eIdentityHeader,
		"AZURE_CLIENT_ID=" + e2eIdentityClientID,
		"HTTPS_PROXY=" + proxy, "SSL_CERT_FILE=" + certFile,
		"SWEEP_INTERVAL=24h", "LOG_LEVEL=debug",
	}
	p := startHandler(t, "handler", append(env, "LISTEN_ADDR=127.0.0.1:0"), dir)
	p.waitListening(t, 30*time.Second)
	base := "http://" + p.addr
	client := newClient(t, 2)

	for _, name := range []string{"pkj-consent", "mi-consent"} {
		prov := providers[name]
		prov.AllowRedirectURIs(base + "/api/consent/callback")

		// The operator's consent link, made as on a workstation.
		cmd := exec.Command(handlerBin, "consent-link", name, "-expires", "10m")
		cmd.Env = append(append([]string(nil), env...), "LISTEN_ADDR="+p.addr)
		printed, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("handler consent-link %s: %v: %s", name, err, redact(string(printed)))
		}
		link := regexp.MustCompile(`http://\S+/api/consent/\S+`).FindString(string(printed))
		if link == "" {
			t.Fatalf("handler consent-link %s printed no address", name)
		}

		// The person opens the link, presses Continue, then Allow at the
		// provider, which sends the browser to the handler's callback.
		jar, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		browser := &http.Client{Timeout: time.Minute, Jar: jar}
		noFollow := &http.Client{Timeout: time.Minute, Jar: jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, err := http.NewRequest(http.MethodPost, link, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		location := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(location, "/authorize?") {
			t.Fatalf("%s: the link's Continue answered %d to %q, want 303 to the provider's consent page", name, resp.StatusCode, location)
		}
		done, err := testprovider.Approve(context.Background(), browser, location)
		if err != nil {
			t.Fatalf("%s: approving at the provider: %v", name, err)
		}
		page, _ := io.ReadAll(io.LimitReader(done.Body, 64<<10))
		done.Body.Close()
		if done.StatusCode != http.StatusOK {
			t.Fatalf("%s: the consent callback answered %d: %s", name, done.StatusCode, redact(string(page)))
		}
		if st := prov.AuthorizationStats(); st.CodesRedeemed != 1 || st.CodesRefused != 0 {
			t.Errorf("%s: the provider redeemed %d codes and refused %d, want 1 and 0", name, st.CodesRedeemed, st.CodesRefused)
		}

		// The connection is served, and refreshed (with an assertion) once
		// the consented token is too short for the caller.
		refreshes := prov.Stats().RefreshGrants
		for deadline := time.Now().Add(30 * time.Second); prov.Stats().RefreshGrants == refreshes; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no refresh after the consent", name)
			}
			status, body := do(t, client, mustRequest(t, base+"/api/token/"+name+"?minValidity=3"))
			if status != http.StatusOK {
				t.Fatalf("GET /api/token/%s after the consent: %d %s", name, status, redact(string(body)))
			}
			var tok tokenBody
			if err := json.Unmarshal(body, &tok); err != nil {
				t.Fatalf("GET /api/token/%s: %v", name, err)
			}
			if !prov.ValidAccessToken(tok.AccessToken) {
				t.Fatalf("GET /api/token/%s: the token served (%s) is not one the provider issued", name, fingerprint(tok.AccessToken))
			}
			time.Sleep(100 * time.Millisecond) // polling the provider's count, with a deadline
		}
		for _, r := range prov.Requests() {
			if !r.AssertionAuth || r.BasicAuth || r.BodyAuth {
				t.Errorf("%s: a %s request was not authenticated by a client assertion alone", name, r.Grant)
			}
		}
		if st := prov.Stats(); st.Rejected != 0 {
			t.Errorf("%s: the provider rejected %d token requests", name, st.Rejected)
		}
		if n := vault.GetsOf(name + "-client-secret"); n != 0 {
			t.Errorf("%s: the client secret was read %d times; the connection has none", name, n)
		}
	}
	if vault.Signs() < 2 {
		t.Errorf("Key Vault signed %d assertions, want at least 2 (the exchange and the refresh)", vault.Signs())
	}
	if n := mi.issued(testprovider.AzureADTokenExchange); n < 1 {
		t.Errorf("the managed identity issued %d tokens for %s, want at least 1", n, testprovider.AzureADTokenExchange)
	}
	if bad := mi.refusals(); len(bad) != 0 {
		t.Errorf("the managed-identity double refused requests: %v", bad)
	}
	if strings.Contains(p.output(), "cs_must_not_be_read_") {
		t.Errorf("a client secret reached the handler's output")
	}
}
