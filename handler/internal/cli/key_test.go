package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"reflect"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestKeyRender: the key command prints the vault key's public half as a
// JWKS whose kid is the key version (what the assertions carry) and alg
// the one the connection signs with, and as a PEM that parses back to the
// same public key, for RSA and EC P-256 keys.
func TestKeyRender(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, _ := ek.PublicKey.Bytes()
	kid := azkeys.ID("https://v.vault.azure.net/keys/conn-signing-key/0123abcd")
	rsaType, ecType, p256 := azkeys.KeyTypeRSA, azkeys.KeyTypeEC, azkeys.CurveNameP256
	tests := []struct {
		name    string
		jwk     azkeys.JSONWebKey
		a       broker.Assertion
		wantAlg string
		pub     any
	}{
		{"rsa", azkeys.JSONWebKey{KID: &kid, Kty: &rsaType, N: rk.N.Bytes(), E: big.NewInt(int64(rk.E)).Bytes()}, broker.Assertion{}, "RS256", &rk.PublicKey},
		{"rsa PS256", azkeys.JSONWebKey{KID: &kid, Kty: &rsaType, N: rk.N.Bytes(), E: big.NewInt(int64(rk.E)).Bytes()}, broker.Assertion{Algorithm: "PS256"}, "PS256", &rk.PublicKey},
		{"ec", azkeys.JSONWebKey{KID: &kid, Kty: &ecType, Crv: &p256, X: point[1:33], Y: point[33:]}, broker.Assertion{}, "ES256", &ek.PublicKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := render(&tt.jwk, tt.a, "jwks")
			if err != nil {
				t.Fatal(err)
			}
			var set struct{ Keys []map[string]string }
			if err := json.Unmarshal([]byte(out), &set); err != nil || len(set.Keys) != 1 {
				t.Fatalf("not a JWKS of one key: %q (%v)", out, err)
			}
			if k := set.Keys[0]; k["kid"] != "0123abcd" || k["alg"] != tt.wantAlg || k["use"] != "sig" {
				t.Errorf("JWK %v: want kid 0123abcd, alg %s, use sig", k, tt.wantAlg)
			}
			out, err = render(&tt.jwk, tt.a, "pem")
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode([]byte(out))
			if blk == nil {
				t.Fatalf("not PEM: %q", out)
			}
			got, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.ValueOf(got).MethodByName("Equal").Call([]reflect.Value{reflect.ValueOf(tt.pub)})[0].Bool() {
				t.Errorf("the PEM holds another public key")
			}
		})
	}
}
