// Command handler is tokenrefresher's Azure Functions custom handler: it
// keeps OAuth2 tokens fresh and hands current access tokens to callers.
//
//	handler [serve]              serve (Functions host or standalone)
//	handler secret set NAME      store a secret (value on stdin) in the local store
//	handler connect CONNECTION   consent at the provider in a browser; stores the refresh token
//	handler status [CONNECTION]  each connection's health, from the store and the lock
//	handler version
//
// main only wires: the command line (package cli) to the server (package
// server), which wires settings -> backends -> broker -> routes.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/cli"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/server"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// run is the process with its environment passed in, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	serve := func(ctx context.Context) int { return server.Run(ctx, getenv, stdout, stderr, version) }
	env := cli.Env{Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr}
	return cli.Run(ctx, args, env, serve, version)
}
