// Command handler is tokenrefresher's Azure Functions custom handler: it
// keeps OAuth2 tokens fresh and hands current access tokens to callers.
//
//	handler                      serve (Functions host or standalone)
//	handler secret set NAME      store a secret (value on stdin) in the local store
//	handler connect CONNECTION   consent at the provider in a browser; stores the refresh token
//	handler status [CONNECTION]  each connection's health, from the store and the lock
//	handler version
//
// main only wires: settings -> backends -> broker -> server.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "serve" {
		return serve(ctx, getenv, stdout, stderr)
	}
	switch args[0] {
	case "secret":
		return secretCommand(ctx, args[1:], getenv, stdin, stdout, stderr)
	case "status":
		return statusCommand(ctx, args[1:], getenv, stdout, stderr)
	case "connect":
		return connectCommand(ctx, args[1:], getenv, stdout, stderr)
	case "consent-link":
		return consentLinkCommand(ctx, args[1:], getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "tokenrefresher handler", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "handler: unknown command %q\n\n%s", args[0], usage)
	return 2
}

const usage = `Usage:
  handler                                serve tokens (Functions host or standalone)
  handler secret set NAME [-expires T]   store a secret in the local store; the value is read from stdin
  handler status [-json] [CONNECTION]    each connection's health and next action; exit 1 if any needs attention
  handler connect CONNECTION [-port N] [-no-browser] [-scope S]... [-timeout 5m] [-authorization-url URL]
                                         consent at the provider in a browser; stores the first refresh token
  handler consent-link CONNECTION        a one-time address that starts a consent on the running standalone handler
  handler version                        print the version

Settings are environment variables; see the README.
`
