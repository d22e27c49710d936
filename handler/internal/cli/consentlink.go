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
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

const consentLinkUsage = "usage: handler consent-link CONNECTION [-expires 24h] [-base-url https://APP.azurewebsites.net]"

// consentLink is `handler consent-link CONNECTION`: it prints a consent
// link of CONNECTION, an address that starts one consent of it and opens
// nothing else, for the operator to mail to whoever can sign in at the
// provider (functions' start route, consent.SignLink). The link's ticket
// is signed with a key derived from the write-ahead key in the secret
// store, which this command reads as the handler does (KEY_VAULT_URL and
// the signed-in Azure identity, or the local store); the link is good
// once, until -expires.
//
// The address is the function app's (-base-url) behind the Functions host,
// and the standalone handler's LISTEN_ADDR on loopback otherwise.
func consentLink(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("consent-link")
	expires := fs.Duration("expires", consent.DefaultLinkTTL, fmt.Sprintf("how long the link works (at most %s); it works once", consent.MaxLinkTTL))
	baseURL := fs.String("base-url", "", "the function app's address, https://APP.azurewebsites.net (needed in Functions mode)")
	names, code, ok := parse(fs, consentLinkUsage, 1, 1, args, env)
	if !ok {
		return code
	}
	name, stdout, stderr := names[0], env.Stdout, env.Stderr
	if *expires <= 0 || *expires > consent.MaxLinkTTL {
		fmt.Fprintf(stderr, "handler consent-link: -expires must be more than 0 and at most %s\n", consent.MaxLinkTTL)
		return 2
	}
	settings, conns, ok := configuration("handler consent-link", env)
	if !ok {
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
	base, err := linkBase(settings, *baseURL)
	if err != nil {
		fmt.Fprintf(stderr, "handler consent-link: %v\n", err)
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
	ticket, expiry, err := consent.SignLink(consent.TicketKey(material), name, time.Now(), *expires)
	if err != nil {
		fmt.Fprintf(stderr, "handler consent-link: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "Send this address to the person who can sign in at the provider for %q. It starts one consent, works once, "+
		"until %s, and opens nothing else:\n\n    %s\n\n", name, expiry.UTC().Format(time.RFC1123), functions.ConsentLinkURL(base, name, ticket))
	fmt.Fprintf(stdout, "The provider's app registration must list the redirect URI %s/api/consent/callback.\n", base)
	return 0
}

// linkBase is the scheme and host of the link: -base-url, else the
// function app's host name behind the Functions host, else the standalone
// handler's listening address on loopback.
func linkBase(settings config.Settings, flag string) (string, error) {
	if flag != "" {
		u, err := url.Parse(flag)
		if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" ||
			(u.Scheme != "https" && (u.Scheme != "http" || !broker.LoopbackHost(u.Hostname()))) {
			return "", fmt.Errorf("-base-url %q: want the app's address, https://HOST (http only on loopback)", flag)
		}
		return u.Scheme + "://" + u.Host, nil
	}
	if settings.Mode() != config.ModeStandalone {
		return "", fmt.Errorf("behind the Functions host the link is on the function app's address: pass -base-url https://APP.azurewebsites.net (the deployment's defaultHostName)")
	}
	host, port, err := net.SplitHostPort(settings.Addr())
	if err != nil {
		return "", fmt.Errorf("LISTEN_ADDR %q: %v", settings.Addr(), err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}
