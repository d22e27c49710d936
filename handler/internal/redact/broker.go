package redact

import (
	"context"
	"encoding/json"
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
		s.remember(name, v.Value.Reveal())
	}
	return v, err
}

// remember registers a secret's value. Of a consent bookkeeping record
// (broker.ConsentRecord) it registers only the PKCE verifier: the rest is
// public (timestamps, the callback address, the connection's name), and
// registered whole it would cut every 12 characters it shares with them
// out of status answers, pages and logs.
func (s *store) remember(name, value string) {
	if !broker.ConsentRecord(name) {
		s.r.Remember(name, value)
		return
	}
	var rec struct {
		Verifier string `json:"verifier"`
	}
	if json.Unmarshal([]byte(value), &rec) == nil && rec.Verifier != "" {
		s.r.Remember(name+"#verifier", rec.Verifier)
	}
}

func (s *store) Set(ctx context.Context, name string, v broker.StoredSecret) error {
	// Registered before the write: an error of a failed write must not
	// quote it either.
	s.remember(name, v.Value.Reveal())
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
