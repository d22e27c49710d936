package broker_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestSetConnectionsWhileARefreshIsInFlight swaps the connection set while
// the provider holds the refresh of a connection the swap removes: the
// removed connection is answered not_found at once, yet its refresh
// finishes and its rotated refresh token reaches the store; an unchanged
// connection keeps its cached token (no provider call); a changed one
// starts afresh with its new configuration. Run with -race: the hot path
// reads the set while it is swapped.
func TestSetConnectionsWhileARefreshIsInFlight(t *testing.T) {
	e := newEnv(t, testprovider.Config{Rotate: true})
	removed, kept, changed := e.conn("removed", broker.GrantRefreshToken), e.conn("kept", broker.GrantRefreshToken), e.conn("changed", broker.GrantRefreshToken)
	for _, c := range []broker.Connection{removed, kept, changed} {
		e.seed(c)
	}
	b := e.broker([]broker.Connection{removed, kept, changed})
	ctx := context.Background()
	for _, name := range []string{"kept", "changed"} {
		if _, err := b.Token(ctx, name, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	oldRT := e.storedRefreshToken(removed)

	committed, release := make(chan struct{}), make(chan struct{})
	e.provider.InjectFault(testprovider.Fault{Kind: testprovider.FaultCommitThenHold, Committed: committed, Release: release})
	inFlight := make(chan error, 1)
	go func() { _, err := b.Token(ctx, "removed", 0); inFlight <- err }()
	<-committed

	// Readers on the hot path while the set changes (for -race).
	stop := make(chan struct{})
	readers := make(chan struct{})
	go func() {
		defer close(readers)
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = b.Token(ctx, "kept", 0)
			}
		}
	}()

	changedNow := changed
	changedNow.Secrets.AccessToken = "changed-access-token-v2" // nothing stored there: a fresh state must call the provider
	if err := b.SetConnections([]broker.Connection{kept, kept}); err == nil {
		t.Fatal("SetConnections accepted a name twice")
	}
	if err := b.SetConnections([]broker.Connection{changedNow, kept}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-readers

	if _, err := b.Token(ctx, "removed", 0); code(err) != broker.CodeNotFound {
		t.Errorf("removed connection: err = %v, want %s", err, broker.CodeNotFound)
	}
	before := e.provider.Stats().TokenRequests
	if _, err := b.Token(ctx, "kept", 0); err != nil {
		t.Fatal(err)
	}
	if got := e.provider.Stats().TokenRequests; got != before {
		t.Errorf("unchanged connection called the provider (%d requests, want %d): its cached token was lost", got, before)
	}
	if _, err := b.Token(ctx, "changed", 0); err != nil {
		t.Fatal(err)
	}
	if got := e.provider.Stats().TokenRequests; got != before+1 {
		t.Errorf("changed connection: %d provider requests, want %d (a fresh state with the new configuration)", got, before+1)
	}
	if c, ok := b.Connection("changed"); !ok || c.Secrets.AccessToken != "changed-access-token-v2" {
		t.Errorf("Connection(changed) = %+v, %v; want the new configuration", c.Secrets, ok)
	}
	var names []string
	for _, s := range b.Status(ctx) {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"changed", "kept"}) {
		t.Errorf("status lists %q, want the new set in its order", names)
	}

	close(release)
	if err := <-inFlight; err != nil {
		t.Fatalf("the removed connection's refresh in flight: %v; want it to finish", err)
	}
	if rt := e.storedRefreshToken(removed); rt == oldRT {
		t.Error("the removed connection's rotated refresh token did not reach the store")
	}
}
