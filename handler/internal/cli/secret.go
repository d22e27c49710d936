package cli

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/backends"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/config"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/keyvault"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// setUsage is `handler secret set`'s usage line.
const setUsage = "usage: handler secret set NAME [-expires 2027-06-30T00:00:00Z] < value\n" +
	"       handler secret get-info NAME\n" +
	"       handler secret list"

// secret is `handler secret set|get-info|list`, against the store the app
// uses: Key Vault when KEY_VAULT_URL is set (through the signed-in
// developer's Azure RBAC), else the local store in LOCAL_STATE_DIR. set
// reads the value from stdin, never from the command line, where shell
// history and process listings would keep it; no command prints a value.
func secret(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("secret")
	expires := fs.String("expires", "", "set: expiry date of the secret (RFC 3339), e.g. a client secret's end date")
	words, code, ok := parse(fs, setUsage, 0, 2, args, env)
	if !ok {
		return code
	}
	stderr := env.Stderr
	if len(words) == 0 {
		fmt.Fprintln(stderr, setUsage)
		return 2
	}
	verb := words[0]
	switch {
	case verb != "set" && verb != "get-info" && verb != "list":
		fmt.Fprintf(stderr, "handler secret: unknown subcommand %q\n%s\n", verb, setUsage)
		return 2
	case verb == "list" && len(words) > 1:
		fmt.Fprintf(stderr, "handler secret list: unexpected argument %q\n%s\n", words[1], setUsage)
		return 2
	case verb != "list" && len(words) == 1:
		fmt.Fprintf(stderr, "handler secret %s: NAME is required, e.g. xero-refresh-token\n", verb)
		return 2
	case verb != "set" && *expires != "":
		fmt.Fprintf(stderr, "handler secret %s: -expires is for set\n", verb)
		return 2
	}
	var exp time.Time
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			fmt.Fprintf(stderr, "handler secret set: -expires %q is not an RFC 3339 time such as 2027-06-30T00:00:00Z\n", *expires)
			return 2
		}
		exp = t
	}
	// Only the store's settings: a workstation that loads secrets need
	// not have the connections file, and the vault client checks the URL.
	settings := config.Settings{
		KeyVaultURL:   strings.TrimSpace(env.Getenv("KEY_VAULT_URL")),
		LocalStateDir: cmp.Or(env.Getenv("LOCAL_STATE_DIR"), config.DefaultLocalStateDir),
		AzureClientID: env.Getenv("AZURE_CLIENT_ID"),
	}
	store, where, err := openStore(settings, env)
	if err != nil {
		fmt.Fprintf(stderr, "handler secret %s: %v\n", verb, err)
		return 1
	}
	switch verb {
	case "set":
		return secretSet(ctx, store, where, words[1], exp, env)
	case "get-info":
		return secretInfo(ctx, store, where, words[1], env)
	}
	return secretList(ctx, store, where, env)
}

// openStore opens the secret store the settings choose, and says where it
// is for messages.
func openStore(s config.Settings, env Env) (broker.SecretStore, string, error) {
	if !s.UsesKeyVault() {
		st, err := local.NewStore(s.LocalStateDir)
		return st, s.LocalStateDir, err
	}
	newClient := env.KeyVault
	if newClient == nil {
		newClient = backends.KeyVaultClient
	}
	client, err := newClient(s, env.Getenv)
	if err != nil {
		return nil, "", err
	}
	return keyvault.New(client, keyvault.Options{VaultURL: s.KeyVaultURL}), s.KeyVaultURL, nil
}

func secretSet(ctx context.Context, store broker.SecretStore, where, name string, exp time.Time, env Env) int {
	value, err := readValue(env.Stdin)
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler secret set: %v\n", err)
		return 2
	}
	if err := store.Set(ctx, name, broker.StoredSecret{Value: broker.Secret(value), ExpiresOn: exp}); err != nil {
		fmt.Fprintf(env.Stderr, "handler secret set: %v\n", err)
		return 1
	}
	fmt.Fprintf(env.Stdout, "stored secret %q in %s (%d characters)\n", name, where, len(value))
	return 0
}

// secretInfo prints what the store records about a secret: never its
// value, nor anything derived from it beyond its length.
func secretInfo(ctx context.Context, store broker.SecretStore, where, name string, env Env) int {
	s, err := store.Get(ctx, name)
	if errors.Is(err, broker.ErrSecretNotFound) {
		fmt.Fprintf(env.Stderr, "handler secret get-info: %s has no secret %q\n", where, name)
		return 1
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler secret get-info: %v\n", err)
		return 1
	}
	now := time.Now()
	fmt.Fprintf(env.Stdout, "name:     %s\nstore:    %s\nlength:   %d characters\nupdated:  %s\nexpires:  %s\n",
		name, where, len(s.Value.Reveal()), when(s.UpdatedOn, now), when(s.ExpiresOn, now))
	return 0
}

func secretList(ctx context.Context, store broker.SecretStore, where string, env Env) int {
	l, ok := store.(broker.SecretLister)
	if !ok {
		fmt.Fprintf(env.Stderr, "handler secret list: the store at %s cannot list its secrets\n", where)
		return 1
	}
	infos, err := l.List(ctx)
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tUPDATED\tEXPIRES")
	now := time.Now()
	for _, in := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", in.Name, when(in.UpdatedOn, now), when(in.ExpiresOn, now))
	}
	_ = tw.Flush()
	if err != nil {
		fmt.Fprintf(env.Stderr, "handler secret list: %v\n", err)
		return 1
	}
	return 0
}

// readValue reads one value from stdin: the first line, without its line
// ending, so `echo value | handler secret set` works as expected.
func readValue(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("reading the value from stdin: %w", err)
		}
		return "", fmt.Errorf("no value on stdin; pipe it in: printf %%s \"$VALUE\" | handler secret set NAME")
	}
	v := strings.TrimRight(sc.Text(), "\r")
	if v == "" {
		return "", fmt.Errorf("the value on stdin is empty")
	}
	return v, nil
}
