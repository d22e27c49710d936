package backends

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/oauth"
)

// KeySigner signs assertions with Key Vault keys through azkeys: GetKey
// for the current version, Sign for a digest. The private key never
// leaves the vault; the app's identity needs the "Key Vault Crypto User"
// role (keys/read and keys/sign, infra/modules/keyvault.bicep).
type KeySigner struct {
	client *azkeys.Client
}

var _ oauth.Signer = (*KeySigner)(nil)

// NewKeySigner returns a KeySigner on the vault at vaultURL.
func NewKeySigner(vaultURL string, cred azcore.TokenCredential, o *azkeys.ClientOptions) (*KeySigner, error) {
	c, err := azkeys.NewClient(vaultURL, cred, o)
	if err != nil {
		return nil, err
	}
	return &KeySigner{client: c}, nil
}

// CurrentKey reads the key's current version (GET /keys/{name}).
func (s *KeySigner) CurrentKey(ctx context.Context, name string) (oauth.SigningKey, error) {
	resp, err := s.client.GetKey(ctx, name, "", nil)
	if err != nil {
		return oauth.SigningKey{}, err
	}
	k := resp.Key
	if k == nil || k.KID == nil || k.Kty == nil {
		return oauth.SigningKey{}, errors.New("key vault answered a key without kid or kty")
	}
	out := oauth.SigningKey{Name: k.KID.Name(), Version: k.KID.Version(), KeyType: string(*k.Kty)}
	if k.Crv != nil {
		out.Curve = string(*k.Crv)
	}
	if out.Version == "" {
		return oauth.SigningKey{}, fmt.Errorf("key vault answered key id %q without a version", *k.KID)
	}
	return out, nil
}

// Sign signs digest with the key version (POST /keys/{name}/{version}/sign).
// Key Vault's ES256 signature is already JWS's R||S form.
func (s *KeySigner) Sign(ctx context.Context, key oauth.SigningKey, alg string, digest []byte) ([]byte, error) {
	a := azkeys.SignatureAlgorithm(alg)
	resp, err := s.client.Sign(ctx, key.Name, key.Version, azkeys.SignParameters{Algorithm: &a, Value: digest}, nil)
	if err != nil {
		return nil, err
	}
	if len(resp.Result) == 0 {
		return nil, errors.New("key vault answered an empty signature")
	}
	return resp.Result, nil
}

// PublicKey returns the key's current version as azkeys reads it, for the
// handler's "key" command.
func (s *KeySigner) PublicKey(ctx context.Context, name string) (*azkeys.JSONWebKey, error) {
	resp, err := s.client.GetKey(ctx, name, "", nil)
	if err != nil {
		return nil, err
	}
	if resp.Key == nil {
		return nil, errors.New("key vault answered no key")
	}
	return resp.Key, nil
}

// Federated returns the oauth.FederatedToken of the managed identity cred:
// its token for api://AzureADTokenExchange/.default, which an app
// registration's federated identity credential trusts.
func Federated(cred azcore.TokenCredential) oauth.FederatedToken {
	return func(ctx context.Context) (string, time.Time, error) {
		tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{oauth.FederationScope}})
		if err != nil {
			return "", time.Time{}, err
		}
		return tok.Token, tok.ExpiresOn, nil
	}
}

// AssertionBackends makes what the connections' assertions need, and only
// that: a KeySigner on KEY_VAULT_URL when a connection signs with a key
// (clientAuth private_key_jwt, grant jwt_bearer), the managed identity's
// federated token when one uses clientAuth managedIdentity. The broker's
// grant (NewBroker) and handler connect's code exchange both use it, so
// an exchange authenticates as the refreshes after it do.
func AssertionBackends(s config.Settings, conns []broker.Connection, getenv func(string) string) (oauth.Signer, oauth.FederatedToken, error) {
	var signs, federates bool
	for _, c := range conns {
		signs = signs || c.AuthStyle == broker.AuthPrivateKeyJWT || c.Grant == broker.GrantJWTBearer
		federates = federates || c.AuthStyle == broker.AuthManagedIdentity
	}
	if !signs && !federates {
		return nil, nil, nil
	}
	cred, err := credential(s, getenv)
	if err != nil {
		return nil, nil, err
	}
	var signer oauth.Signer
	if signs {
		if !s.UsesKeyVault() {
			return nil, nil, errors.New("a connection signs its assertions with a Key Vault key, but KEY_VAULT_URL is not set")
		}
		ks, err := NewKeySigner(s.KeyVaultURL, cred, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("KEY_VAULT_URL: %w", err)
		}
		signer = ks
	}
	var federated oauth.FederatedToken
	if federates {
		federated = Federated(cred)
	}
	return signer, federated, nil
}

// OpenKeySigner returns a KeySigner on KEY_VAULT_URL with the handler's
// credential, for the "key" command.
func OpenKeySigner(s config.Settings, getenv func(string) string) (*KeySigner, error) {
	if !s.UsesKeyVault() {
		return nil, errors.New("KEY_VAULT_URL is not set: signing keys live in Key Vault")
	}
	cred, err := credential(s, getenv)
	if err != nil {
		return nil, err
	}
	return NewKeySigner(s.KeyVaultURL, cred, nil)
}
