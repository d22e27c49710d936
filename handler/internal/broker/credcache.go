package broker

// The client credentials a refresh reads, kept for a while (issue 20 §1).
//
// A refresh reads four secrets from the store: the access token before the
// lock (a peer may have refreshed: no lock needed), the access token again
// under it (the same, decided for good), the refresh token (a peer may have
// rotated it) and the client secret. The first three may change between
// any two refreshes, by another instance's hand, and are read every time.
// The client secret (and a client id kept in the store) changes only when
// an operator rotates it, and a stale one cannot do harm the provider does
// not report: a client whose credentials the provider refuses is answered
// invalid_client (RFC 6749 §5.2), and the refresh token was not looked at
// (§6: the client is authenticated before the refresh token is validated),
// so the request may be sent again with the credentials read afresh. The
// write-ahead key is read once per process already (StoredKey).

import (
	"context"
	"slices"
	"sync"
	"time"
)

// clientCredentialReuse is how long a client secret or client id read
// from the store is sent again without reading it: longer than one refresh
// cycle of an hour-long token (the sweep refreshes one 49 minutes after it
// was issued, a caller within its last RefreshBefore), so that a
// connection's refreshes after its first read no client secret; short
// enough that a secret replaced in the store while the provider still
// accepts the old one (a rotation's overlap) is sent within the hour and a
// half. A secret the provider refuses is read again at once
// (redeemWithClientSecrets), and none is reused while the connection has a
// failure recorded (reusable).
const clientCredentialReuse = 90 * time.Minute

// credCache holds client secrets and client ids by store name, with when
// each was read; shared by the connections that name the same secret.
type credCache struct {
	mu sync.Mutex
	m  map[string]cachedCred
}

type cachedCred struct {
	value Secret
	read  time.Time
}

// clientCredentialNames are the store names of st's client credentials:
// the client id when the store holds it, and the client secrets.
func (st *connState) clientCredentialNames() []string {
	c := &st.conn
	var names []string
	if c.ClientID == "" {
		names = append(names, c.Secrets.ClientID)
	}
	if c.UsesClientSecret() {
		names = append(names, c.ClientSecretNames()...)
	}
	return names
}

// readSecret reads a secret credentials needs: a client credential from
// the cache while it is reusable, everything else from the store. A client
// credential read from the store is cached.
func (b *Broker) readSecret(ctx context.Context, st *connState, name string) (StoredSecret, error) {
	if !slices.Contains(st.clientCredentialNames(), name) {
		return b.store.Get(ctx, name)
	}
	if v, ok := b.creds.get(name, b.now()); ok && b.reusable(st) {
		return StoredSecret{Value: v}, nil
	}
	return b.readClientCredential(ctx, name)
}

// readClientCredential reads a client credential from the store and
// caches it; one the store does not give is forgotten.
func (b *Broker) readClientCredential(ctx context.Context, name string) (StoredSecret, error) {
	s, err := b.store.Get(ctx, name)
	if err == nil && !s.Value.IsZero() {
		b.creds.put(name, s.Value, b.now())
	} else {
		b.creds.forget(name)
	}
	return s, err
}

// reusable reports whether st's client credentials may come from the
// cache: not while a failure is recorded (until a refresh succeeds), so
// that credentials an operator stored to end a cool-down are seen at once
// (checkCooldown compares them), whatever the provider answered.
func (b *Broker) reusable(st *connState) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.failure == nil
}

func (c *credCache) get(name string, now time.Time) (Secret, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || now.Before(e.read) || now.Sub(e.read) >= clientCredentialReuse {
		return "", false
	}
	return e.value, true
}

func (c *credCache) put(name string, v Secret, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedCred)
	}
	c.m[name] = cachedCred{value: v, read: now}
}

func (c *credCache) forget(names ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		delete(c.m, n)
	}
}
