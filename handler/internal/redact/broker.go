package redact

import (
	"context"
	"errors"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Store returns s with every value read from it or written to it
// registered with r under the secret's name: a new value of a secret
// supersedes the old one (see Remember). It keeps s's List when s has one.
// A nil r returns s.
func Store(s broker.SecretStore, r *Redactor) broker.SecretStore {
	if r == nil {
		return s
	}
	rs := &store{next: s, r: r}
	if l, ok := s.(broker.SecretLister); ok {
		return &listingStore{store: rs, SecretLister: l}
	}
	return rs
}

type store struct {
	next broker.SecretStore
	r    *Redactor
}

func (s *store) Get(ctx context.Context, name string) (broker.StoredSecret, error) {
	v, err := s.next.Get(ctx, name)
	if err == nil {
		s.r.Remember(name, v.Value.Reveal())
	}
	return v, err
}

func (s *store) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	// Registered before the write: an error of a failed write must not
	// quote it either.
	s.r.Remember(name, v.Value.Reveal())
	return s.next.Set(ctx, name, v)
}

type listingStore struct {
	*store
	broker.SecretLister
}

// Grant returns g with every secret of a token request registered with r
// (the client secret and refresh token sent, the tokens issued, a refresh
// token found in an unusable answer), and the provider's words in a
// failure redacted. A nil r returns g.
func Grant(g broker.Grant, r *Redactor) broker.Grant {
	if r == nil {
		return g
	}
	return &grant{next: g, r: r}
}

type grant struct {
	next broker.Grant
	r    *Redactor
}

func (g *grant) Token(ctx context.Context, c *broker.Connection, cred broker.Credentials) (*broker.Token, error) {
	g.r.Remember(c.Name+"#client-secret", cred.ClientSecret.Reveal())
	g.r.Remember(c.Name+"#refresh-token-sent", cred.RefreshToken.Reveal())
	tok, err := g.next.Token(ctx, c, cred)
	if tok != nil {
		g.r.Remember(c.Name+"#access-token", tok.AccessToken.Reveal())
		g.r.Remember(c.Name+"#refresh-token", tok.RefreshToken.Reveal())
	}
	var pe *broker.ProviderError
	if errors.As(err, &pe) {
		g.r.Remember(c.Name+"#refresh-token", pe.IssuedRefreshToken.Reveal())
		RedactProviderError(pe, g.r)
	}
	return tok, err
}

// RedactProviderError redacts, in place, the fields of pe that carry the
// provider's words. A code that held a secret is dropped: it is no code.
func RedactProviderError(pe *broker.ProviderError, r *Redactor) {
	if r.Contains(pe.Code) {
		pe.Code = ""
	}
	pe.Description = r.String(pe.Description)
	pe.Remediation = r.String(pe.Remediation)
}
