package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// key is `handler key CONNECTION [-format jwks|pem]`: the public half of
// the Key Vault key that signs the connection's assertions (clientAuth
// private_key_jwt, grant jwt_bearer), to register at the provider: a JWKS
// whose kid is the key version the handler puts in its assertions (Okta,
// Auth0, Ping and other private_key_jwt providers), or a PEM public key
// (Google's service-account key upload; Salesforce and Docusign take the
// PEM or a certificate made from the key). The private key never leaves
// the vault; reading the public half needs keys/read, which the app's
// "Key Vault Crypto User" role and the operator's own role grant.
func key(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("key")
	format := fs.String("format", "jwks", "jwks or pem")
	names, code, ok := parse(fs, "usage: handler key CONNECTION [-format jwks|pem]", 1, 1, args, env)
	if !ok {
		return code
	}
	if !slices.Contains([]string{"jwks", "pem"}, *format) {
		fmt.Fprintf(env.Stderr, "handler key: -format %q is not jwks or pem\n", *format)
		return 2
	}
	settings, conns, ok := configuration("handler key", env)
	if !ok {
		return 2
	}
	i := slices.IndexFunc(conns, func(c broker.Connection) bool { return c.Name == names[0] })
	if i < 0 {
		fmt.Fprintf(env.Stderr, "handler key: no connection is named %q\n", names[0])
		return 2
	}
	conn := conns[i]
	if conn.Assertion.Key == "" {
		fmt.Fprintf(env.Stderr, "handler key: connection %q signs nothing (clientAuth %s, grant %s); only clientAuth %s and grant %s use a Key Vault key. A managedIdentity connection is registered with a federated credential: see infra/README.md\n",
			conn.Name, conn.AuthStyle, conn.Grant, broker.AuthPrivateKeyJWT, broker.GrantJWTBearer)
		return 2
	}
	signer, err := backends.OpenKeySigner(settings, env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler key: %v\n", err)
		return 2
	}
	jwk, err := signer.PublicKey(ctx, conn.Assertion.Key)
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler key: Key Vault key %q: %v\n", conn.Assertion.Key, err)
		return 1
	}
	out, err := render(jwk, conn.Assertion, *format)
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler key: Key Vault key %q: %v\n", conn.Assertion.Key, err)
		return 1
	}
	fmt.Fprint(env.Stdout, out)
	return 0
}

// render prints the public key of k as a JWKS (RFC 7517 §5) or a PEM
// SubjectPublicKeyInfo.
func render(k *azkeys.JSONWebKey, a broker.Assertion, format string) (string, error) {
	if k.KID == nil || k.Kty == nil {
		return "", errors.New("key vault answered a key without kid or kty")
	}
	sk := oauth.SigningKey{Name: k.KID.Name(), Version: k.KID.Version(), KeyType: string(*k.Kty)}
	if k.Crv != nil {
		sk.Curve = string(*k.Crv)
	}
	alg, err := oauth.Algorithm(a, sk)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	var pub any
	entry := map[string]string{"kid": sk.KID(), "use": "sig", "alg": alg}
	switch {
	case len(k.N) > 0 && len(k.E) > 0:
		entry["kty"], entry["n"], entry["e"] = "RSA", b64(k.N), b64(k.E)
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(new(big.Int).SetBytes(k.E).Int64())}
	case len(k.X) > 0 && len(k.Y) > 0 && sk.Curve == "P-256":
		entry["kty"], entry["crv"], entry["x"], entry["y"] = "EC", "P-256", b64(k.X), b64(k.Y)
		point := make([]byte, 65)
		point[0] = 4 // uncompressed (SEC 1 §2.3.3)
		copy(point[33-len(k.X):33], k.X)
		copy(point[65-len(k.Y):], k.Y)
		ec, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return "", err
		}
		pub = ec
	default:
		return "", fmt.Errorf("key type %s %s has no public key the handler signs with", sk.KeyType, sk.Curve)
	}
	if format == "pem" {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
	}
	out, err := json.MarshalIndent(map[string]any{"keys": []any{entry}}, "", "  ")
	return string(out) + "\n", err
}
