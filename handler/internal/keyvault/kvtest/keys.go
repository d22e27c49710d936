package kvtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
)

// The keys API, as azkeys calls it (azkeys v1.6.0 client.go):
//
//	GET  /keys/{name}/[{version}]        GetKey (latest when version is empty)
//	POST /keys/{name}/{version}/sign     Sign: {"alg", "value"} -> {"kid", "value"}
//
// Byte values are base64url without padding both ways, as azkeys encodes
// them (runtime.Base64URLFormat). A key's private half stays in the
// double, as it stays in Key Vault; tests read the public half.

// KeyType is the kty of a key the double creates.
type KeyType string

const (
	// RSA is a 2048-bit RSA key (RS256, PS256).
	RSA KeyType = "RSA"
	// EC is a P-256 key (ES256).
	EC KeyType = "EC"
)

type key struct {
	versions []*keyVersion // oldest first
}

type keyVersion struct {
	version string
	signer  crypto.Signer
}

// Key is one version of a key, its public half.
type Key struct {
	// KID is the key version's id: {vault}/keys/{name}/{version}.
	KID string
	// Version is the last segment of KID.
	Version string
	// Public is an *rsa.PublicKey or an *ecdsa.PublicKey.
	Public crypto.PublicKey
}

// CreateKey makes a new version of the key name, of type kt, and returns
// its public half. It panics if the key cannot be generated.
func (v *Vault) CreateKey(name string, kt KeyType) Key {
	var s crypto.Signer
	var err error
	switch kt {
	case RSA:
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case EC:
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		err = fmt.Errorf("key type %q", kt)
	}
	if err != nil {
		panic("kvtest: CreateKey: " + err.Error())
	}
	kv := &keyVersion{version: strings.ToLower(rand.Text()), signer: s}
	v.mu.Lock()
	defer v.mu.Unlock()
	k := v.keys[strings.ToLower(name)]
	if k == nil {
		k = &key{}
		v.keys[strings.ToLower(name)] = k
	}
	k.versions = append(k.versions, kv)
	return Key{KID: v.kid(name, kv.version), Version: kv.version, Public: s.Public()}
}

// Signs returns how many signatures the vault has made.
func (v *Vault) Signs() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.counts.Signs
}

func (v *Vault) kid(name, version string) string {
	return v.URL + "/keys/" + name + "/" + version
}

// serveKeys serves the keys API; parts is the path after /keys.
func (v *Vault) serveKeys(w http.ResponseWriter, r *http.Request, parts []string) {
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid or missing api-version.", 0)
		return
	}
	name, version := parts[0], ""
	if len(parts) > 1 {
		version = parts[1]
	}
	sign := len(parts) == 3 && parts[2] == "sign" && r.Method == http.MethodPost
	if !sign && (len(parts) > 2 || r.Method != http.MethodGet) {
		writeError(w, http.StatusNotFound, "NotFound", "", fmt.Sprintf("kvtest: no route for %s %s", r.Method, r.URL.Path), 0)
		return
	}
	v.mu.Lock()
	if sign {
		v.counts.Signs++
	} else {
		v.counts.KeyGets++
	}
	var kv *keyVersion
	if k := v.keys[strings.ToLower(name)]; k != nil {
		for _, c := range k.versions {
			if version == "" || c.version == version {
				kv = c // the last match: the latest when version is empty
			}
		}
	}
	v.mu.Unlock()
	if kv == nil {
		writeError(w, http.StatusNotFound, "KeyNotFound", "", fmt.Sprintf("A key with (name/id) %s was not found in this key vault.", name), 0)
		return
	}
	kid := v.kid(name, kv.version)
	if !sign {
		writeJSON(w, map[string]any{
			"key":        jwk(kid, kv.signer.Public()),
			"attributes": map[string]any{"enabled": true, "exportable": false, "recoveryLevel": "Recoverable+Purgeable"},
		})
		return
	}
	var req struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "kvtest: sign body: "+err.Error(), 0)
		return
	}
	digest, err := base64.RawURLEncoding.DecodeString(req.Value)
	if err != nil || len(digest) != 32 {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "kvtest: value must be a base64url SHA-256 digest", 0)
		return
	}
	sig, err := signDigest(kv.signer, req.Alg, digest)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "kvtest: "+err.Error(), 0)
		return
	}
	writeJSON(w, map[string]any{"kid": kid, "value": base64.RawURLEncoding.EncodeToString(sig)})
}

// signDigest signs as Key Vault does: PKCS #1 v1.5 for RS256, PSS with a
// salt as long as the hash for PS256, and for ES256 the JWS form R||S,
// each 32 bytes (RFC 7518 §3.4), not ASN.1.
func signDigest(s crypto.Signer, alg string, digest []byte) ([]byte, error) {
	switch priv := s.(type) {
	case *rsa.PrivateKey:
		switch alg {
		case "RS256":
			return rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, digest)
		case "PS256":
			return rsa.SignPSS(rand.Reader, priv, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	case *ecdsa.PrivateKey:
		if alg == "ES256" {
			r, ss, err := ecdsa.Sign(rand.Reader, priv, digest)
			if err != nil {
				return nil, err
			}
			out := make([]byte, 64)
			r.FillBytes(out[:32])
			ss.FillBytes(out[32:])
			return out, nil
		}
	}
	return nil, fmt.Errorf("algorithm %q does not fit the key", alg)
}

// jwk is the key's public half as Key Vault's JsonWebKey.
func jwk(kid string, pub crypto.PublicKey) map[string]any {
	b := func(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kid": kid, "kty": "RSA", "key_ops": []string{"sign", "verify"},
			"n": b(k.N), "e": b(big.NewInt(int64(k.E)))}
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || X || Y
		if err != nil || len(point) != 65 {
			return nil
		}
		x, y := point[1:33], point[33:]
		return map[string]any{"kid": kid, "kty": "EC", "crv": "P-256", "key_ops": []string{"sign", "verify"},
			"x": base64.RawURLEncoding.EncodeToString(x), "y": base64.RawURLEncoding.EncodeToString(y)}
	}
	return nil
}
