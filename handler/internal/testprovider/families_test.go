package testprovider_test

import (
	"net/http"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// TestGrantFamiliesAreIndependent: two grants of the same user and client
// (two consents, as a standby grant needs) rotate independently, and reuse
// in one revokes that one alone, as Google, Entra and Ory Hydra behave.
func TestGrantFamiliesAreIndependent(t *testing.T) {
	p, srv := start(t, testprovider.Config{Rotate: true})
	primary, standby := p.IssueRefreshToken(), p.IssueRefreshToken()

	// Each family rotates on its own.
	p1 := post(t, srv, authBasic, refreshForm(primary)).str("refresh_token")
	s1 := post(t, srv, authBasic, refreshForm(standby)).str("refresh_token")
	if p1 == "" || s1 == "" || p1 == s1 {
		t.Fatalf("rotations: %q, %q; want two distinct new tokens", p1, s1)
	}
	// Reuse in the primary family revokes it...
	wantError(t, post(t, srv, authBasic, refreshForm(primary)), http.StatusBadRequest, "invalid_grant")
	wantError(t, post(t, srv, authBasic, refreshForm(p1)), http.StatusBadRequest, "invalid_grant")
	if _, ok := p.CurrentRefreshToken(p1); ok {
		t.Fatal("the reused family is still alive")
	}
	// ...and leaves the other alive.
	s2 := post(t, srv, authBasic, refreshForm(s1))
	if s2.status != http.StatusOK || s2.str("refresh_token") == "" {
		t.Fatalf("the other family after reuse in the first: %d %v", s2.status, s2.body)
	}
	if st := p.Stats(); st.ChainsRevoked != 1 || st.ReuseDetected != 1 {
		t.Fatalf("stats %+v, want one family revoked", st)
	}
}
