package consent

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// A consent link is the address of a connection's start route with a
// ticket in it (?ticket=): a signed state (signState) under TicketKey, so
// it names one connection, expires, and cannot be made without the key
// material in the secret store. It opens the consent of that connection
// and nothing else: no route but consent-start reads it, and it is not a
// function key. It is good once, everywhere: LinkStore claims it under a
// lock shared by every instance.
const (
	// DefaultLinkTTL is how long a link lasts unless its minter says
	// otherwise: a working day for the business owner to open the mail.
	DefaultLinkTTL = 24 * time.Hour
	// MaxLinkTTL bounds a link's life: a link is a bearer capability, and
	// a mailbox keeps it.
	MaxLinkTTL = 7 * 24 * time.Hour
)

// ErrLinkTTL: the lifetime asked for a link is not within (0, MaxLinkTTL].
var ErrLinkTTL = fmt.Errorf("a consent link lasts more than 0 and at most %s", MaxLinkTTL)

// SignLink returns a consent link's ticket for connection, good until
// now+ttl. ttl must be within (0, MaxLinkTTL] (ErrLinkTTL).
func SignLink(key []byte, connection string, now time.Time, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 || ttl > MaxLinkTTL {
		return "", time.Time{}, ErrLinkTTL
	}
	// The signed expiry has whole seconds: the one verified is the one
	// reported.
	expiry := now.Add(ttl).Truncate(time.Second)
	return signState(key, connection, expiry), expiry, nil
}

// VerifyLink is VerifyState for a link's ticket, with its expiry, which
// LinkStore keeps the claim until.
func VerifyLink(key []byte, ticket string, now time.Time) (connection string, expiry time.Time, err error) {
	name, err := VerifyState(key, ticket, now)
	if err != nil {
		return "", time.Time{}, err
	}
	b, _ := stateEncoding.DecodeString(ticket[len(name)+1:])                           // checked by VerifyState
	return name, time.Unix(int64(binary.BigEndian.Uint64(b[:stateExpiryLen])), 0), nil // #nosec G115 -- signed by us
}

// ErrLinkUsed: the link was already used to start a consent.
var ErrLinkUsed = errors.New("this consent link was already used")

// LinkStore makes links single-use across instances. The store has no
// compare-and-swap, so the claim is a read and a write of the
// connection's record of used links (UsedLinksSecretName) under the lock
// LinkLockName, which every instance takes from the same locker (the lock
// container, or the local lock files): two instances cannot both find a
// link unused.
type LinkStore struct {
	Store  broker.SecretStore
	Locker broker.Locker
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Wait bounds the wait for the lock; zero means 10 seconds.
	Wait time.Duration
}

// UsedLinksSecretName is the secret that records connection's used links
// (hashes of their tickets, until they expire).
func UsedLinksSecretName(connection string) string { return connection + broker.ConsentLinksUsedSuffix }

// LinkLockName is the lock the claim of connection's links is made under.
func LinkLockName(connection string) string { return connection + "-consent-link" }

// Claim records ticket, a link of connection valid until expiry, as used.
// A link already claimed is ErrLinkUsed; a lock or store failure is
// returned as it is, and then nothing was claimed.
func (s *LinkStore) Claim(ctx context.Context, connection, ticket string, expiry time.Time) error {
	wait := s.Wait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	lockCtx, cancel := context.WithTimeout(ctx, wait)
	lock, err := s.Locker.Lock(lockCtx, LinkLockName(connection))
	cancel()
	if err != nil {
		return fmt.Errorf("taking the lock %q to claim the consent link: %w", LinkLockName(connection), err)
	}
	defer func() { _ = lock.Release(context.WithoutCancel(ctx)) }()

	secret := UsedLinksSecretName(connection)
	used := map[string]time.Time{}
	stored, err := s.Store.Get(ctx, secret)
	switch {
	case errors.Is(err, broker.ErrSecretNotFound):
	case err != nil:
		return &StoreError{Op: "read", Secret: secret, Err: err}
	case !stored.Value.IsZero():
		// An unreadable record refuses every link rather than forget the
		// used ones: a link lives up to MaxLinkTTL.
		if json.Unmarshal([]byte(stored.Value.Reveal()), &used) != nil {
			return &StoreError{Op: "read", Secret: secret, Err: errors.New("the record of used links is not valid JSON")}
		}
	}
	now := s.now()
	maps.DeleteFunc(used, func(_ string, until time.Time) bool { return !now.Before(until) })
	h := linkHash(ticket)
	if _, ok := used[h]; ok {
		return ErrLinkUsed
	}
	used[h] = expiry
	b, err := json.Marshal(used)
	if err != nil {
		return err
	}
	latest := expiry
	for _, until := range used {
		if until.After(latest) {
			latest = until
		}
	}
	if !lock.Held() {
		return fmt.Errorf("the lock %q was lost before the consent link was claimed", LinkLockName(connection))
	}
	if err := s.Store.Set(ctx, secret, broker.StoredSecret{Value: broker.Secret(b), ExpiresOn: latest, UpdatedOn: now}); err != nil {
		return &StoreError{Op: "write", Secret: secret, Err: err}
	}
	return nil
}

// linkHash is what the record keeps of a ticket: enough to recognise it,
// nothing that opens anything.
func linkHash(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(sum[:16])
}

func (s *LinkStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}
