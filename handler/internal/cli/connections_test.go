package cli

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	oneConnection  = `{"connections":[{"name":"xero","provider":"xero"}]}`
	twoConnections = `{"connections":[{"name":"xero","provider":"xero"},{"name":"machine","grant":"client_credentials","tokenUrl":"https://id.example.com/token","clientAuth":"body","clientId":"c"}]}`
	misspeltFile   = `{"connections":[{"name":"xero","provider":"xeroo"}]}`
)

// TestConnectionsValidate: validate needs no Azure and answers as the
// handler's validator, did-you-mean included.
func TestConnectionsValidate(t *testing.T) {
	tests := []struct {
		name, content string
		code          int
		want          string
	}{
		{"valid", twoConnections, 0, `2 connections ["xero" "machine"]`},
		{"misspelt provider", misspeltFile, 1, `did you mean "xero"?`},
		{"not JSON", `{"connections":`, 1, "not a valid connections file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(map[string]string{}, nil, "connections", "validate", writeFile(t, "c.json", tt.content))
			if out := r.stdout + r.stderr; r.code != tt.code || !strings.Contains(out, tt.want) {
				t.Fatalf("exit %d, output %q; want exit %d and %q", r.code, out, tt.code, tt.want)
			}
		})
	}
	if r := runCLI(map[string]string{}, nil, "connections", "validate", filepath.Join(t.TempDir(), "none.json")); r.code != 2 {
		t.Errorf("a missing file: exit %d, want 2", r.code)
	}
}

// TestConnectionsPutAndList on Azurite: put refuses an invalid file and
// writes nothing, creates the blob, replaces the version it read, and
// refuses to write over a version other than -if-match's; list shows the
// stored connections and the ETag, -raw the file as stored.
func TestConnectionsPutAndList(t *testing.T) {
	az := azurite.Start(t)
	client, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateContainer(context.Background(), "conns-cli", nil); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"AzureWebJobsStorage": az.ConnectionString(),
		"CONNECTIONS_BLOB":    "conns-cli/connections.json",
	}
	if r := runCLI(env, nil, "connections", "list"); r.code != 1 || !strings.Contains(r.stderr, "no connections file") {
		t.Fatalf("list before any put: exit %d, stderr %q; want 1, no file", r.code, r.stderr)
	}
	if r := runCLI(env, nil, "connections", "put", writeFile(t, "bad.json", misspeltFile)); r.code != 1 || !strings.Contains(r.stderr, `did you mean "xero"?`) {
		t.Fatalf("put of an invalid file: exit %d, stderr %q; want 1 with did-you-mean", r.code, r.stderr)
	}
	if r := runCLI(env, nil, "connections", "list"); r.code != 1 {
		t.Fatalf("an invalid file was written: list exit %d, stdout %q", r.code, r.stdout)
	}
	if r := runCLI(env, nil, "connections", "put", writeFile(t, "one.json", oneConnection)); r.code != 0 || !strings.Contains(r.stdout, `1 connections ["xero"]`) {
		t.Fatalf("first put: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r := runCLI(env, nil, "connections", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "xero\txero\trefresh_token") {
		t.Fatalf("list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	first := strings.TrimPrefix(strings.SplitN(r.stdout, "\n", 2)[0], "ETag ")
	if r := runCLI(env, nil, "connections", "put", writeFile(t, "two.json", twoConnections), "-if-match", first); r.code != 0 {
		t.Fatalf("put over the listed version: exit %d, stderr %q", r.code, r.stderr)
	}
	// Another operator's put based on the first version is refused.
	if r := runCLI(env, nil, "connections", "put", "-if-match", first, writeFile(t, "one.json", oneConnection)); r.code != 1 || !strings.Contains(r.stderr, "changed since it was read") {
		t.Fatalf("put over a stale version: exit %d, stderr %q; want a conflict", r.code, r.stderr)
	}
	// Flags before the subcommand's word follow the same rule as after it.
	for _, args := range [][]string{{"connections", "list", "-raw"}, {"connections", "-raw", "list"}, {"connections", "-raw", "--", "list"}} {
		if r := runCLI(env, nil, args...); r.code != 0 || r.stdout != twoConnections {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q; want the file as put", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(env, nil, "connections", "-if-match", first, "put", writeFile(t, "one.json", oneConnection)); r.code != 1 || !strings.Contains(r.stderr, "changed since it was read") {
		t.Fatalf("-if-match before put: exit %d, stderr %q; want a conflict", r.code, r.stderr)
	}
}

// TestSubcommandWord: the connections group finds its subcommand's word
// wherever the flags are, and does not take a flag's value for it.
func TestSubcommandWord(t *testing.T) {
	tests := []struct {
		args     []string
		wantVerb string
		wantRest []string
		found    bool
	}{
		{[]string{"list", "-raw"}, "list", []string{"-raw"}, true},
		{[]string{"-raw", "list"}, "list", []string{"-raw"}, true},
		{[]string{"-if-match", "0x1", "put", "f.json"}, "put", []string{"-if-match", "0x1", "f.json"}, true},
		{[]string{"--if-match=0x1", "put", "f.json"}, "put", []string{"--if-match=0x1", "f.json"}, true},
		{[]string{"--", "validate", "-odd.json"}, "validate", []string{"--", "-odd.json"}, true},
		{[]string{"-raw"}, "", nil, false},
		{[]string{"-if-match", "list"}, "", nil, false},
		{nil, "", nil, false},
	}
	for _, tt := range tests {
		verb, rest, found := subcommand(tt.args, connectionsValueFlags)
		if verb != tt.wantVerb || found != tt.found || !slices.Equal(rest, tt.wantRest) {
			t.Errorf("subcommand(%q) = %q, %q, %v; want %q, %q, %v", tt.args, verb, rest, found, tt.wantVerb, tt.wantRest, tt.found)
		}
	}
}
