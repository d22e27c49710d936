// Package cli is the handler's command line: the commands an operator runs
// on a workstation (secret set, status, connect, consent-link), and the one
// rule by which every command, serve included, reads its arguments. The
// server itself is package server; main passes it in as the serve command.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
)

// Env is what a command reads and writes besides its arguments.
type Env struct {
	Getenv         func(string) string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// OpenURL opens an address in the desktop's browser (handler
	// connect); nil opens it with github.com/pkg/browser.
	OpenURL func(url string) error
	// KeyVault makes the client of the vault KEY_VAULT_URL names (the
	// secret commands); nil makes it with the workstation's Azure
	// credential (backends.KeyVaultClient). Tests pass the kvtest double's.
	KeyVault func(config.Settings, func(string) string) (*azsecrets.Client, error)
}

// Usage is the handler's help text.
const Usage = `Usage:
  handler [serve]                        serve tokens (Functions host or standalone)
  handler secret set NAME [-expires T]   store a secret (Key Vault when KEY_VAULT_URL is set, else the local store); the value is read from stdin
  handler secret get-info NAME           what the store records about a secret (never its value)
  handler secret list                    the store's secrets, with when each was updated and expires
  handler import-refresh-token CONNECTION
                                         seed a connection with a refresh token read from stdin, validated by one refresh
  handler status [-json] [CONNECTION]    each connection's health and next action; exit 1 if any needs attention
  handler connect CONNECTION [-port N] [-no-browser] [-scope S]... [-timeout 5m] [-authorization-url URL]
                                         consent at the provider in a browser; stores the first refresh token
  handler consent-link CONNECTION        a one-time, expiring link that starts one consent of CONNECTION, to mail to whoever signs in at the provider
  handler key CONNECTION [-format jwks|pem]
                                         the public key of the connection's Key Vault signing key, to register at the provider
  handler connections validate FILE      check a connections file as the handler would, without Azure
  handler connections put FILE [-if-match ETAG]
                                         validate FILE and write it to CONNECTIONS_BLOB, over the version read (or ETAG); running instances take it within 30 s
  handler connections list [-raw]        the connections in CONNECTIONS_BLOB and the file's ETag (-raw: the file as stored)
  handler version                        print the version

Flags may come before or after a command's other arguments; COMMAND -h describes it.
Settings are environment variables; see the README.
`

// Run runs the command args names with the rest of args, and returns the
// process's exit code: 0 done (help included), 1 failed, 2 bad arguments or
// settings. With no arguments it serves: serve runs the server until ctx
// ends.
func Run(ctx context.Context, args []string, env Env, serve func(context.Context) int, version string) int {
	name, rest := "serve", args
	if len(args) > 0 {
		name, rest = args[0], args[1:]
	}
	switch name {
	case "serve":
		fs := newFlagSet("serve")
		if _, code, ok := parse(fs, "usage: handler [serve]", 0, 0, rest, env); !ok {
			return code
		}
		return serve(ctx)
	case "secret":
		return secret(ctx, rest, env)
	case "status":
		return status(ctx, rest, env)
	case "import-refresh-token":
		return importRefreshToken(ctx, rest, env)
	case "connect":
		return connect(ctx, rest, env)
	case "consent-link":
		return consentLink(ctx, rest, env)
	case "key":
		return key(ctx, rest, env)
	case "connections":
		return connections(ctx, rest, env)
	case "version", "-version", "--version":
		fs := newFlagSet("version")
		if _, code, ok := parse(fs, "usage: handler version", 0, 0, rest, env); !ok {
			return code
		}
		fmt.Fprintln(env.Stdout, "tokenrefresher handler", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, Usage)
		return 0
	}
	fmt.Fprintf(env.Stderr, "handler: unknown command %q\n\n%s", name, Usage)
	return 2
}

// configuration reads the settings and the connections file as the server
// does. ok is false after a problem, which is printed after command: the
// command then exits 2.
func configuration(command string, env Env) (s config.Settings, conns []broker.Connection, ok bool) {
	s, err := config.LoadSettings(env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: bad settings:\n%v\n", command, err)
		return s, nil, false
	}
	// The blob (CONNECTIONS_BLOB) is read as the server reads it at start.
	if conns, _, err = backends.ReadConnections(context.Background(), s, env.Getenv); err != nil {
		fmt.Fprintf(env.Stderr, "%s: bad connections:\n%v\n", command, err)
		return s, nil, false
	}
	return s, conns, true
}

// closeTimeout bounds how long a command waits, on its way out, for the
// broker it built to close.
const closeTimeout = 30 * time.Second

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("handler "+name, flag.ContinueOnError)
	// parse prints the usage itself: to stdout when asked for, to stderr
	// after a mistake.
	fs.Usage = func() {}
	return fs
}

// parse reads args by the rule every command follows: flags may come
// before, between or after the positional arguments, and "--" ends the
// flags. There must be between min and max positional arguments (max < 0:
// any number). -h, -help and --help print usage and the flags to stdout.
// ok is false when the command must stop, with its exit code: 0 after
// help, 2 after a mistake, which is printed to stderr with usage.
func parse(fs *flag.FlagSet, usage string, min, max int, args []string, env Env) (positional []string, code int, ok bool) {
	fs.SetOutput(env.Stderr) // where the flag package reports a bad flag
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(env.Stdout, usage)
			fs.SetOutput(env.Stdout)
			fs.PrintDefaults()
			return nil, 0, false
		}
		if err != nil {
			fmt.Fprintln(env.Stderr, usage)
			return nil, 2, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional, args = append(positional, rest[0]), rest[1:]
	}
	if len(positional) < min || (max >= 0 && len(positional) > max) {
		if len(positional) > max && max >= 0 {
			fmt.Fprintf(env.Stderr, "%s: unexpected argument %q\n", fs.Name(), positional[max])
		}
		fmt.Fprintln(env.Stderr, usage)
		return nil, 2, false
	}
	return positional, 0, true
}
