package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// status is `handler status [-json] [CONNECTION]`: the status the
// HTTP surface reports, read straight from the store and the lock (with
// the same settings as the app), so an operator can check a deployment
// from a workstation without a function key. It never refreshes and never
// prints a secret. The exit code is 0 when every connection is healthy or
// merely expiring, 1 when any is failing or needs reauthorization, and 2
// for bad settings. A connection whose secrets are not all loaded
// (not_configured) exits 1 too, after a line naming every missing secret
// on stderr: a deployment with nothing loaded must not look fine.
func status(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("status")
	asJSON := fs.Bool("json", false, "print JSON, as GET /api/connections does")
	names, code, ok := parse(fs, "usage: handler status [-json] [CONNECTION]", 0, 1, args, env)
	if !ok {
		return code
	}
	stdout, stderr := env.Stdout, env.Stderr
	settings, conns, ok := configuration("handler status", env)
	if !ok {
		return 2
	}
	// What the store holds is registered as it is read (package redact),
	// and nothing printed from here on shows it.
	red := redaction.New()
	stdout, stderr = red.Writer(stdout), red.Writer(stderr)
	log := slog.New(redaction.NewHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), red))
	wired, err := backends.NewBroker(settings, conns, env.Getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler status: %v\n", err)
		return 2
	}
	b := wired.Broker
	defer func() {
		// status starts no refresh: Close has nothing to wait for, and
		// is bounded anyway.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = b.Close(ctx)
	}()

	var sts []broker.ConnectionStatus
	if len(names) == 1 {
		st, ok := b.ConnectionStatus(ctx, names[0])
		if !ok {
			fmt.Fprintf(stderr, "handler status: no connection is named %q\n", names[0])
			return 2
		}
		sts = []broker.ConnectionStatus{st}
	} else {
		sts = b.Status(ctx)
	}
	if *asJSON {
		out, err := json.MarshalIndent(map[string]any{"connections": sts}, "", "  ")
		if err != nil {
			return 1
		}
		// Redacted as JSON, so that the output stays JSON.
		if _, err := stdout.Write(red.JSON(append(out, '\n'))); err != nil {
			return 1
		}
	} else {
		if err := printStatus(stdout, sts, time.Now()); err != nil {
			return 1
		}
	}
	for _, st := range sts {
		if len(st.MissingSecrets) > 0 {
			fmt.Fprintf(stderr, "handler status: connection %s is not configured: missing secrets %s\n", st.Name, strings.Join(st.MissingSecrets, ", "))
		}
	}
	for _, st := range sts {
		if st.State == broker.StateFailing || st.State == broker.StateNeedsReauthorization || st.State == broker.StateNotConfigured {
			return 1
		}
	}
	return 0
}

// printStatus writes the status as a table and, per connection, its next
// action; an error is the terminal's, from the table's one write.
func printStatus(w io.Writer, sts []broker.ConnectionStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTION\tSTATE\tTOKEN EXPIRES\tLAST REFRESH\tREFRESH TOKEN IDLE EXPIRY\tCLIENT SECRET EXPIRES")
	for _, st := range sts {
		last := when(st.LastRefresh, now)
		if st.LastRefreshMs > 0 {
			last += ", took " + (time.Duration(st.LastRefreshMs) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.Name, st.State, when(st.AccessTokenExpiresOn, now),
			last, when(st.RefreshTokenIdleExpiresOn, now), when(st.ClientSecretExpiresOn, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, st := range sts {
		fmt.Fprintf(w, "\n%s: %s\n", st.Name, st.NextAction)
		if st.LastError != nil {
			fmt.Fprintf(w, "  last error (%s): %s\n", st.LastError.Code, st.LastError.Message)
		}
	}
	return nil
}

// when renders t with how far it is from now, "-" when zero.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Minute)
	if d == 0 {
		return t.UTC().Format("2006-01-02 15:04Z") + " (now)"
	}
	rel := "in " + d.String()
	if d < 0 {
		rel = (-d).String() + " ago"
	}
	if d.Abs() >= 48*time.Hour {
		days := int(d.Abs() / (24 * time.Hour))
		rel = fmt.Sprintf("in %d days", days)
		if d < 0 {
			rel = fmt.Sprintf("%d days ago", days)
		}
	}
	return t.UTC().Format("2006-01-02 15:04Z") + " (" + rel + ")"
}
