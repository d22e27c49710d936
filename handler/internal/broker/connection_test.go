package broker_test

import (
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestLoopbackHost: the one rule for "this machine" that the token URL,
// the authorization URL, the redirect URI and a standalone listener share
// (issue 15: four copies disagreed on IPv4-mapped and zoned addresses).
func TestLoopbackHost(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"LocalHost", true},
		{"127.0.0.1", true},
		{"127.255.0.9", true},
		{"::1", true},
		{"::ffff:127.0.0.1", true},
		{"fe80::1%eth0", false},
		{"::1%lo", false},
		{"[::1]", false},
		{"127.0.0.1:80", false},
		{"10.0.0.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"localhost.example.com", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := broker.LoopbackHost(tt.host); got != tt.want {
			t.Errorf("LoopbackHost(%q) = %v; want %v", tt.host, got, tt.want)
		}
	}
}

// TestReservedParam: the one list of fields a token request sets itself,
// in any case (issue 15: three lists, of 8, 8 and 13 names).
func TestReservedParam(t *testing.T) {
	for _, p := range []string{"grant_type", "refresh_token", "scope", "client_id", "client_secret", "code", "code_verifier",
		"redirect_uri", "assertion", "client_assertion", "client_assertion_type", "username", "password", "Scope", "CLIENT_SECRET"} {
		if !broker.ReservedParam(p) {
			t.Errorf("ReservedParam(%q) = false", p)
		}
	}
	for _, p := range []string{"audience", "resource", "access_type", "", "scopes"} {
		if broker.ReservedParam(p) {
			t.Errorf("ReservedParam(%q) = true", p)
		}
	}
}
