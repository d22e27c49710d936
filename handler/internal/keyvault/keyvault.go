// Package keyvault implements broker.SecretStore and broker.SecretLister on
// Azure Key Vault secrets, through azsecrets.
//
// Each Set writes a new version of the secret (Key Vault keeps the old ones,
// and has no conditional writes: the broker's lock is what serialises
// writers). The version carries
//
//   - the value, as is: Key Vault stores strings of up to 25 KB;
//   - the expiry, when there is one, as the exp attribute (whole seconds,
//     rounded down) and as the tag "expires-on" in RFC 3339 UTC, so a person
//     browsing the vault sees when an access token lapses; Get and List read
//     the tag when the attribute is missing (a secret written by hand or by
//     an older tool);
//   - the tag "managed-by" = "tokenrefresher", which says that the function
//     app rewrites this secret and that editing it by hand is pointless
//     (except for refresh tokens, which an operator may replace);
//   - for an access token, the tags "issued-on" (RFC 3339 UTC) and
//     "lifetime-seconds": when the provider issued it and for how long.
//     Get reads them back as IssuedOn and Lifetime, because the updated
//     attribute is Key Vault's write time, which a write retried through
//     an outage moves; a tag that does not parse reads as unknown.
//
// No content type is set: the values are opaque tokens, and the tags already
// say who wrote them. Because a new version replaces the previous version's
// tags and content type, tags an operator put on an earlier version are not
// carried over.
//
// Key Vault records when each version was written (the updated attribute),
// and Get reports that as UpdatedOn; the UpdatedOn given to Set is not
// stored. UpdatedOn therefore follows Key Vault's clock, in whole seconds.
//
// A disabled secret is an operator's act: Get refuses it with an *Error that
// says so (InnerCode "SecretDisabled"), never with broker.ErrSecretNotFound,
// and List leaves it out. A secret with an empty value is returned as such;
// Key Vault stores empty values, and the broker treats one as unset.
//
// Failures are *Error values that name the operation, the secret and the
// vault, carry Key Vault's status, codes and Retry-After, and say what to do
// (Remediation). None of them ever contains a secret value.
package keyvault

import (
	"cmp"
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

const (
	// MaxValueBytes is the largest value Set sends: Key Vault's documented
	// limit of 25 KB (25,600 bytes) per secret value.
	MaxValueBytes = 25 * 1024

	// TagExpiresOn is the tag holding a secret's expiry in RFC 3339 UTC.
	TagExpiresOn = "expires-on"
	// TagManagedBy is the tag naming the program that writes a secret.
	TagManagedBy = "managed-by"
	// ManagedBy is the value of TagManagedBy on every secret Set writes.
	ManagedBy = "tokenrefresher"
	// TagIssuedOn is the tag holding when the provider issued a token,
	// in RFC 3339 UTC.
	TagIssuedOn = "issued-on"
	// TagLifetime is the tag holding how long the provider made a token
	// valid, in whole seconds.
	TagLifetime = "lifetime-seconds"
)

// Options configure a Store.
type Options struct {
	// VaultURL is the vault's URL, used to name the vault in errors and in
	// the az commands they suggest. Empty means the vault is named from the
	// failing request's URL, which is unknown when no request was made.
	VaultURL string
	// Now returns the current time, to turn a Retry-After given as a date
	// into a duration. Nil means time.Now.
	Now func() time.Time
}

// Store is a broker.SecretStore and broker.SecretLister on one Key Vault.
// It is safe for concurrent use, as its client is.
type Store struct {
	client *azsecrets.Client
	vault  string // host name, e.g. "kv1.vault.azure.net"; may be empty
	now    func() time.Time
}

var (
	_ broker.SecretStore  = (*Store)(nil)
	_ broker.SecretLister = (*Store)(nil)
)

// New returns a Store that reads and writes secrets through client. The
// client's retry policy is the only retrying the Store does; NewClient
// makes one whose retries fit in the broker's own budget.
func New(client *azsecrets.Client, o Options) *Store {
	s := &Store{client: client, now: o.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if u, err := url.Parse(o.VaultURL); err == nil {
		s.vault = u.Host
	}
	return s
}

// Get returns the latest version of the named secret. A secret that does
// not exist, or is soft-deleted, gives an *Error wrapping
// broker.ErrSecretNotFound; a disabled one an *Error with InnerCode
// CodeSecretDisabled, which does not. Other failures are *Error values
// too, and a name Key Vault would refuse is a *NameError.
func (s *Store) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	if err := ValidateName(name); err != nil {
		return broker.StoredSecret{}, err
	}
	resp, err := s.client.GetSecret(ctx, name, "", nil)
	if err != nil {
		return broker.StoredSecret{}, s.fail(opGet, name, err, "")
	}
	a := resp.Attributes
	if a == nil {
		a = &azsecrets.SecretAttributes{}
	}
	if a.Enabled != nil && !*a.Enabled {
		// Key Vault itself answers 403 SecretDisabled; a server that hands
		// out the value anyway is overruled, since the operator's intent
		// is the same.
		return broker.StoredSecret{}, &Error{Op: opGet, Secret: name, Vault: s.vault, Code: "Forbidden", InnerCode: CodeSecretDisabled}
	}
	var out broker.StoredSecret
	if resp.Value != nil {
		out.Value = broker.Secret(*resp.Value)
	}
	out.ExpiresOn = expiry(a, resp.Tags)
	if a.Updated != nil {
		out.UpdatedOn = *a.Updated
	}
	out.IssuedOn, out.Lifetime = issueTags(resp.Tags)
	return out, nil
}

// expiry is a secret's expiry: its exp attribute, else its TagExpiresOn
// tag, else zero (none recorded). Set writes both; a secret stored by an
// older tool or by hand may carry only the tag, and a list page carries
// both (azsecrets v1.5.1, models.go: SecretProperties has Attributes and
// Tags; models_serde.go, SecretProperties.UnmarshalJSON reads "attributes"
// and "tags"), so the sweep learns the expiry from the walk instead of a
// read per secret. A tag that does not parse as RFC 3339 reads as none.
func expiry(a *azsecrets.SecretAttributes, tags map[string]*string) time.Time {
	if a != nil && a.Expires != nil {
		return *a.Expires
	}
	if v := tags[TagExpiresOn]; v != nil {
		if t, err := time.Parse(time.RFC3339, *v); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// issueTags reads TagIssuedOn and TagLifetime; a missing or malformed one
// is zero (unknown): an operator may have edited the tags.
func issueTags(tags map[string]*string) (issued time.Time, lifetime time.Duration) {
	if v := tags[TagIssuedOn]; v != nil {
		if t, err := time.Parse(time.RFC3339, *v); err == nil {
			issued = t
		}
	}
	if v := tags[TagLifetime]; v != nil {
		if n, err := strconv.ParseInt(*v, 10, 64); err == nil && n > 0 && n <= int64(maxLifetime/time.Second) {
			lifetime = time.Duration(n) * time.Second
		}
	}
	return issued, lifetime
}

// maxLifetime bounds a lifetime read from a tag: no access token lives a
// year, and a larger figure is someone's edit.
const maxLifetime = 365 * 24 * time.Hour

// Set writes v as a new version of the named secret and returns once Key
// Vault has stored it. A value over MaxValueBytes, or one that is not valid
// UTF-8 (Key Vault's API carries strings in JSON, which would replace the
// bad bytes), is refused with a *ValueError before any request.
func (s *Store) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	// Key Vault is where the value must go: it leaves the process here.
	value := v.Value.Reveal()
	if len(value) > MaxValueBytes {
		return &ValueError{Secret: name, Size: len(value)}
	}
	if !utf8.ValidString(value) {
		return &ValueError{Secret: name, Size: len(value), InvalidUTF8: true}
	}
	params := azsecrets.SetSecretParameters{
		Value: &value,
		Tags:  map[string]*string{TagManagedBy: new(ManagedBy)},
	}
	if !v.ExpiresOn.IsZero() {
		// The wire format is Unix seconds; rounding down keeps the
		// recorded expiry from ever being later than the real one.
		exp := v.ExpiresOn.UTC().Truncate(time.Second)
		params.SecretAttributes = &azsecrets.SecretAttributes{Expires: &exp}
		params.Tags[TagExpiresOn] = new(exp.Format(time.RFC3339))
	}
	if !v.IssuedOn.IsZero() {
		params.Tags[TagIssuedOn] = new(v.IssuedOn.UTC().Format(time.RFC3339Nano))
	}
	if s := int64(v.Lifetime / time.Second); s > 0 {
		// Rounded down: a lifetime is never recorded longer than issued.
		params.Tags[TagLifetime] = new(strconv.FormatInt(s, 10))
	}
	if _, err := s.client.SetSecret(ctx, name, params, nil); err != nil {
		return s.fail(opSet, name, err, value)
	}
	return nil
}

// List describes every enabled secret in the vault in one walk of Key
// Vault's paged list (one request per 25 secrets: Get Secrets' maxresults
// defaults to 25, learn.microsoft.com/rest/api/keyvault/secrets/get-secrets),
// sorted by name. Disabled
// secrets are left out: List describes what Get can read, so a caller that
// falls back to Get for a secret missing here meets the SecretDisabled
// error, with its remedy, there. If a page fails, List returns the secrets
// of the pages before it along with the error.
func (s *Store) List(ctx context.Context) ([]broker.SecretInfo, error) {
	var infos []broker.SecretInfo
	pager := s.client.NewListSecretPropertiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			sortInfos(infos)
			return infos, s.fail(opList, "", err, "")
		}
		for _, p := range page.Value {
			if p == nil || p.ID == nil {
				continue
			}
			info := broker.SecretInfo{Name: secretName(string(*p.ID)), ExpiresOn: expiry(p.Attributes, p.Tags)}
			if a := p.Attributes; a != nil {
				if a.Enabled != nil && !*a.Enabled {
					continue
				}
				if a.Updated != nil {
					info.UpdatedOn = *a.Updated
				}
			}
			if info.Name != "" {
				infos = append(infos, info)
			}
		}
	}
	sortInfos(infos)
	return infos, nil
}

// secretName returns the name in a secret ID,
// https://<vault>/secrets/<name>[/<version>]; "" if it is not one. (The
// SDK's ID.Name panics on an ID without a name.)
func secretName(id string) string {
	u, err := url.Parse(id)
	if err != nil {
		return ""
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "secrets" {
		return ""
	}
	return parts[1]
}

func sortInfos(infos []broker.SecretInfo) {
	slices.SortFunc(infos, func(a, b broker.SecretInfo) int { return cmp.Compare(a.Name, b.Name) })
}

// DefaultRetry is the retry policy NewClient gives a client whose options
// set none: two retries, each try cut off after 10 s, and no wait over 5 s.
// The broker retries store writes itself within a 55 s budget per call, so
// the SDK's own retries stay short: the worst case, three tries that all
// time out, takes about 32 s. A Retry-After longer than MaxRetryDelay ends
// the retries at once (azcore does not wait past its cap), and the *Error
// carries it.
var DefaultRetry = policy.RetryOptions{
	MaxRetries:    2,
	TryTimeout:    10 * time.Second,
	RetryDelay:    500 * time.Millisecond,
	MaxRetryDelay: 5 * time.Second,
}

// vaultDomains are the DNS suffixes of Key Vault in the public cloud, Azure
// China, Azure US Government and the retired Azure Germany.
var vaultDomains = []string{".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".vault.microsoftazure.de"}

// NewClient returns an azsecrets client for the vault at vaultURL, after
// checking that the URL is a vault's: https, a host under one of the Key
// Vault domains of the Azure clouds, and no path beyond "/" (a trailing
// slash is fine). A vault on another domain (Azure Stack Hub, say) is
// accepted when o.DisableChallengeResourceVerification is set, the SDK's
// own switch for such vaults. A bad URL gives a *VaultURLError.
//
// Unless o sets its own, the client gets DefaultRetry; retry fields o leaves
// zero are taken from DefaultRetry. o may be nil; it is not modified.
func NewClient(vaultURL string, cred azcore.TokenCredential, o *azsecrets.ClientOptions) (*azsecrets.Client, error) {
	var opts azsecrets.ClientOptions
	if o != nil {
		opts = *o
	}
	u, err := checkVaultURL(vaultURL, opts.DisableChallengeResourceVerification)
	if err != nil {
		return nil, err
	}
	r := &opts.Retry
	r.MaxRetries = cmp.Or(r.MaxRetries, DefaultRetry.MaxRetries)
	r.TryTimeout = cmp.Or(r.TryTimeout, DefaultRetry.TryTimeout)
	r.RetryDelay = cmp.Or(r.RetryDelay, DefaultRetry.RetryDelay)
	r.MaxRetryDelay = cmp.Or(r.MaxRetryDelay, DefaultRetry.MaxRetryDelay)
	return azsecrets.NewClient(u, cred, &opts)
}

// checkVaultURL returns the vault URL as https://host, or a *VaultURLError.
func checkVaultURL(raw string, anyDomain bool) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme == "" || u.Host == "" {
		e := &VaultURLError{URL: raw, Problem: "is not an absolute URL"}
		if validVaultName(raw) {
			e.Problem = "is a vault name, not its URL (https://" + raw + ".vault.azure.net/)"
		}
		return "", e
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// The URL may hold a credential; it is not repeated.
		return "", &VaultURLError{Problem: "has user information, a query or a fragment; a vault URL is only https://<vault>.vault.azure.net/"}
	}
	if u.Scheme != "https" {
		return "", &VaultURLError{URL: raw, Problem: "is not https; Key Vault is only reached over TLS"}
	}
	if u.Path != "" && u.Path != "/" {
		return "", &VaultURLError{URL: raw, Problem: "has a path; give the vault URL alone, https://" + u.Host + "/"}
	}
	host := strings.ToLower(u.Hostname())
	if !anyDomain && !slices.ContainsFunc(vaultDomains, func(d string) bool { return strings.HasSuffix(host, d) }) {
		return "", &VaultURLError{URL: raw, Problem: "is not under a Key Vault domain (" + strings.Join(vaultDomains, ", ") + ")"}
	}
	return "https://" + u.Host, nil
}

// VaultURLError reports a vault URL that NewClient refused.
type VaultURLError struct {
	// URL is the URL as given; empty when it may hold a credential.
	URL string
	// Problem says what is wrong with it.
	Problem string
}

func (e *VaultURLError) Error() string {
	if e.URL == "" {
		return "keyvault: the vault URL " + e.Problem
	}
	return "keyvault: vault URL \"" + e.URL + "\" " + e.Problem
}

// validVaultName reports whether s could be a vault's name (3-24 characters
// of 0-9, a-z, A-Z and '-', starting with a letter).
func validVaultName(s string) bool {
	return len(s) >= 3 && len(s) <= 24 && ValidateName(s) == nil
}

// opGet and friends are the values of Error.Op.
const (
	opGet  = "get"
	opSet  = "set"
	opList = "list"
)
