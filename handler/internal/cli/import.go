package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

const importUsage = "usage: handler import-refresh-token CONNECTION < refresh-token"

// importRefreshToken is `handler import-refresh-token CONNECTION`: it
// seeds a connection with a refresh token it already has (one a pipeline
// kept, or another tool obtained), read from stdin. The broker redeems it
// once under the connection's lock, with the same settings as the app, and
// keeps it (or the token the refresh rotated it to) only if the provider
// accepted it.
func importRefreshToken(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("import-refresh-token")
	names, code, ok := parse(fs, importUsage, 1, 1, args, env)
	if !ok {
		return code
	}
	settings, conns, ok := configuration("handler import-refresh-token", env)
	if !ok {
		return 2
	}
	value, err := readValue(env.Stdin)
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler import-refresh-token: %v\n", err)
		return 2
	}
	red := redaction.New()
	red.Remember("import-refresh-token", value)
	stdout, stderr := red.Writer(env.Stdout), red.Writer(env.Stderr)
	log := slog.New(redaction.NewHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), red))
	wired, err := backends.NewBroker(settings, conns, env.Getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler import-refresh-token: %v\n", err)
		return 2
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = wired.Broker.Close(ctx)
	}()
	st, err := wired.Broker.ImportRefreshToken(ctx, names[0], broker.Secret(value))
	if err != nil {
		fmt.Fprintf(stderr, "handler import-refresh-token: %v\n", err)
		if be := (*broker.Error)(nil); errors.As(err, &be) && be.Remediation != "" {
			fmt.Fprintln(stderr, be.Remediation)
		}
		return 1
	}
	fmt.Fprintf(stdout, "imported: the provider accepted the refresh token of %q; state %s, access token valid until %s\n",
		st.Name, st.State, st.AccessTokenExpiresOn.UTC().Format("2006-01-02 15:04Z"))
	return 0
}
