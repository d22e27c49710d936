package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

// setUsage is `handler secret set`'s usage line.
const setUsage = "usage: handler secret set NAME [-expires 2027-06-30T00:00:00Z] < value"

// secret is `handler secret set NAME [-expires RFC3339]`: it puts a secret
// into the local store. The value comes from stdin, never from the command
// line, where shell history and process listings would keep it.
func secret(ctx context.Context, args []string, env Env) int {
	fs := newFlagSet("secret set")
	expires := fs.String("expires", "", "expiry date of the secret (RFC 3339), e.g. a client secret's end date")
	words, code, ok := parse(fs, setUsage, 0, 2, args, env)
	if !ok {
		return code
	}
	stdout, stderr := env.Stdout, env.Stderr
	if len(words) == 0 || words[0] != "set" {
		fmt.Fprintln(stderr, setUsage)
		return 2
	}
	if len(words) == 1 {
		fmt.Fprintln(stderr, "handler secret set: NAME is required, e.g. xero-refresh-token")
		return 2
	}
	name := words[1]
	var exp time.Time
	if *expires != "" {
		t, err := time.Parse(time.RFC3339, *expires)
		if err != nil {
			fmt.Fprintf(stderr, "handler secret set: -expires %q is not an RFC 3339 time such as 2027-06-30T00:00:00Z\n", *expires)
			return 2
		}
		exp = t
	}
	value, err := readValue(env.Stdin)
	if err != nil {
		fmt.Fprintf(stderr, "handler secret set: %v\n", err)
		return 2
	}
	dir := env.Getenv("LOCAL_STATE_DIR")
	if dir == "" {
		dir = ".tokenrefresher"
	}
	store, err := local.NewStore(dir)
	if err != nil {
		fmt.Fprintf(stderr, "handler secret set: %v\n", err)
		return 1
	}
	if err := store.Set(ctx, name, broker.StoredSecret{Value: broker.Secret(value), ExpiresOn: exp}); err != nil {
		fmt.Fprintf(stderr, "handler secret set: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "stored secret %q in %s (%d characters)\n", name, dir, len(value))
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
