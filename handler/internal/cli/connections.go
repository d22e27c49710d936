package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/connblob"
)

const (
	connectionsUsage         = "usage: handler connections validate FILE | put FILE [-if-match ETAG] | list [-raw]"
	connectionsValidateUsage = "usage: handler connections validate FILE"
	connectionsPutUsage      = "usage: handler connections put FILE [-if-match ETAG]"
	connectionsListUsage     = "usage: handler connections list [-raw]"
)

// connections is `handler connections validate|put|list`: the connections
// file in the blob CONNECTIONS_BLOB names, edited from a workstation
// through Azure RBAC (or AzureWebJobsStorage's connection string), which
// running instances re-read when it changes (package connblob).
func connections(ctx context.Context, args []string, env Env) int {
	verb, rest, found := subcommand(args, connectionsValueFlags)
	if !found {
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				fmt.Fprintln(env.Stdout, connectionsUsage)
				return 0
			}
		}
		fmt.Fprintln(env.Stderr, connectionsUsage)
		return 2
	}
	switch verb {
	case "validate":
		return connectionsValidate(rest, env)
	case "put":
		return connectionsPut(ctx, rest, env)
	case "list":
		return connectionsList(ctx, rest, env)
	}
	fmt.Fprintf(env.Stderr, "handler connections: unknown subcommand %q\n%s\n", verb, connectionsUsage)
	return 2
}

// connectionsValueFlags are the flags of the connections subcommands that
// take their value as the next argument, so that subcommand does not
// mistake the value for the subcommand's word.
var connectionsValueFlags = map[string]bool{"if-match": true}

// subcommand finds the subcommand's word in args by the rule parse keeps
// for every command: flags may come before or after it, "--" ends the
// flags. rest is args without that word, in their order, for the
// subcommand's own parse. valueFlags names the flags (without dashes) that
// take the next argument as their value unless written -flag=value.
func subcommand(args []string, valueFlags map[string]bool) (verb string, rest []string, found bool) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return args[i+1], append(append(slices.Clip(args[:i]), "--"), args[i+2:]...), true
			}
			return "", nil, false
		case len(a) > 1 && a[0] == '-':
			if valueFlags[strings.TrimLeft(a, "-")] {
				i++ // its value
			}
		default:
			return a, append(slices.Clip(args[:i]), args[i+1:]...), true
		}
	}
	return "", nil, false
}

// readConnectionsFile reads and validates FILE. ok is false after a
// problem, printed to stderr; code is then the exit code.
func readConnectionsFile(command, path string, env Env) (data []byte, names []string, code int, ok bool) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator names the file to read
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v\n", command, err)
		return nil, nil, 2, false
	}
	conns, err := config.ParseConnections(data)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %s is not a valid connections file:\n%v\n", command, path, err)
		return nil, nil, 1, false
	}
	for _, c := range conns {
		names = append(names, c.Name)
	}
	return data, names, 0, true
}

func connectionsValidate(args []string, env Env) int {
	fs := newFlagSet("connections validate")
	files, code, ok := parse(fs, connectionsValidateUsage, 1, 1, args, env)
	if !ok {
		return code
	}
	_, names, code, ok := readConnectionsFile("handler connections validate", files[0], env)
	if !ok {
		return code
	}
	fmt.Fprintf(env.Stdout, "%s is valid: %d connections %q\n", files[0], len(names), names)
	return 0
}

// connectionsStore is the store of CONNECTIONS_BLOB, from the settings.
func connectionsStore(command string, env Env) (*connblob.Store, bool) {
	s, err := config.LoadSettings(env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: bad settings:\n%v\n", command, err)
		return nil, false
	}
	if s.ConnectionsBlob == "" {
		fmt.Fprintf(env.Stderr, "%s: CONNECTIONS_BLOB is not set; set it to <container>/<blob> in the lock storage account, such as token-locks/connections.json, with AzureWebJobsStorage__blobServiceUri (or AzureWebJobsStorage) naming the account\n", command)
		return nil, false
	}
	store, err := backends.ConnectionsBlob(s, env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v\n", command, err)
		return nil, false
	}
	return store, true
}

func connectionsPut(ctx context.Context, args []string, env Env) int {
	const command = "handler connections put"
	fs := newFlagSet("connections put")
	ifMatch := fs.String("if-match", "", "write only over this version (the ETag `handler connections list` printed); default: the version read just before the write")
	files, code, ok := parse(fs, connectionsPutUsage, 1, 1, args, env)
	if !ok {
		return code
	}
	data, names, code, ok := readConnectionsFile(command, files[0], env)
	if !ok {
		return code
	}
	store, ok := connectionsStore(command, env)
	if !ok {
		return 2
	}
	based := azcore.ETag(*ifMatch)
	if based == "" {
		v, err := store.Read(ctx, "")
		switch {
		case errors.Is(err, connblob.ErrNotFound):
		case err != nil:
			fmt.Fprintf(env.Stderr, "%s: %v\n", command, err)
			return 1
		default:
			based = v.ETag
		}
	}
	etag, err := store.Put(ctx, data, based)
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v\n", command, err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "written: %d connections %q, ETag %s; running instances take them within 30 s\n", len(names), names, etag)
	return 0
}

func connectionsList(ctx context.Context, args []string, env Env) int {
	const command = "handler connections list"
	fs := newFlagSet("connections list")
	raw := fs.Bool("raw", false, "print the file as stored, to edit and put back")
	if _, code, ok := parse(fs, connectionsListUsage, 0, 0, args, env); !ok {
		return code
	}
	store, ok := connectionsStore(command, env)
	if !ok {
		return 2
	}
	v, err := store.Read(ctx, "")
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: %v\n", command, err)
		return 1
	}
	if *raw {
		_, _ = env.Stdout.Write(v.Data)
		return 0
	}
	fmt.Fprintf(env.Stdout, "ETag %s\n", v.ETag)
	conns, err := config.ParseConnections(v.Data)
	if err != nil {
		// Put never writes such a file, but another writer may have: the
		// instances keep their running set (connections.refused).
		fmt.Fprintf(env.Stderr, "%s: the stored file is not valid; running instances refuse it and keep their set:\n%v\n", command, err)
		return 1
	}
	for _, c := range conns {
		fmt.Fprintf(env.Stdout, "%s\t%s\t%s\n", c.Name, c.Provider, c.Grant)
	}
	return 0
}
