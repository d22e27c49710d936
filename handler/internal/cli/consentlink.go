package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/consent"
)

// consentLink is `handler consent-link CONNECTION`: it prints the
// address that starts a consent of CONNECTION on a standalone handler
// running with the same settings. A standalone handler starts a consent
// only with a one-time ticket in that address (functions.checkTicket), so
// that no web page the operator's browser shows can start one; the ticket
// is signed with a key kept in the secret store, which this command reads
// as the handler does, and is good once, for consent.TicketTTL.
func consentLink(ctx context.Context, args []string, env Env) int {
	names, code, ok := parse(newFlagSet("consent-link"), "usage: handler consent-link CONNECTION", 1, 1, args, env)
	if !ok {
		return code
	}
	name, stdout, stderr := names[0], env.Stdout, env.Stderr
	settings, conns, ok := configuration("handler consent-link", env)
	if !ok {
		return 2
	}
	if settings.Mode() != config.ModeStandalone {
		fmt.Fprintln(stderr, "handler consent-link: behind the Functions host, start a consent at /api/consent/CONNECTION with the admin key; tickets are for standalone mode")
		return 2
	}
	found := false
	for _, c := range conns {
		if c.Name == name && c.Grant == broker.GrantRefreshToken {
			found = true
		}
	}
	if !found {
		fmt.Fprintf(stderr, "handler consent-link: no refresh_token connection is named %q in the connections file\n", name)
		return 2
	}
	store, locker, err := backends.Open(settings, env.Getenv, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(stderr, "handler consent-link: %v\n", err)
		return 1
	}
	material, err := broker.StoredKey(store, locker)(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "handler consent-link: %v\n", err)
		return 1
	}
	host, port, err := net.SplitHostPort(settings.Addr())
	if err != nil {
		fmt.Fprintf(stderr, "handler consent-link: LISTEN_ADDR %q: %v\n", settings.Addr(), err)
		return 2
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ticket := consent.SignTicket(consent.TicketKey(material), name, time.Now())
	fmt.Fprintf(stdout, "Open this address in a browser within %s (it works once):\n\n    http://%s/api/consent/%s?ticket=%s\n",
		consent.TicketTTL, net.JoinHostPort(host, port), name, url.QueryEscape(ticket))
	return 0
}
