package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/azurite"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/connblob"
)

func connectionsJSON(names ...string) []byte {
	var parts []string
	for _, n := range names {
		parts = append(parts, `{"name":"`+n+`","tokenUrl":"http://127.0.0.1:1/token","clientId":"c","clientAuth":"basic"}`)
	}
	return []byte(`{"connections":[` + strings.Join(parts, ",") + `]}`)
}

// TestConnectionsBlob: with CONNECTIONS_BLOB the handler refuses to start
// without a valid file in the blob, serves the file's connections, takes
// an accepted change without a restart (connections.changed) and keeps
// the running set when a change is invalid (connections.refused, once).
func TestConnectionsBlob(t *testing.T) {
	az := azurite.Start(t)
	client, err := azblob.NewClientFromConnectionString(az.ConnectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const container = "conns-server"
	if _, err := client.CreateContainer(ctx, container, nil); err != nil {
		t.Fatal(err)
	}
	store := connblob.New(client, connblob.Location{Container: container, Blob: "connections.json"})
	env := map[string]string{
		"LOCAL_STATE_DIR":     t.TempDir(),
		"AzureWebJobsStorage": az.ConnectionString(),
		"CONNECTIONS_BLOB":    container + "/connections.json",
		"LISTEN_ADDR":         "127.0.0.1:0",
		"SWEEP_INTERVAL":      "24h",
	}
	getenv := func(k string) string { return env[k] }

	// Start-up fails without the file, and with an invalid one.
	var stdout, stderr syncBuffer
	if code := Run(ctx, getenv, &stdout, &stderr, "test"); code != 2 || !strings.Contains(stderr.String(), "handler connections put") {
		t.Fatalf("no file: Run = %d, stderr %q; want 2 and how to load one", code, stderr.String())
	}
	if _, err := client.UploadBuffer(ctx, container, "connections.json", []byte(`{"connections":[{"name":"xero","provider":"xeroo"}]}`), nil); err != nil {
		t.Fatal(err)
	}
	stderr = syncBuffer{}
	if code := Run(ctx, getenv, &stdout, &stderr, "test"); code != 2 || !strings.Contains(stderr.String(), "xeroo") {
		t.Fatalf("invalid file: Run = %d, stderr %q; want 2 and the validator's problem", code, stderr.String())
	}
	v, err := store.Read(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	etag, err := store.Put(ctx, connectionsJSON("xero"), v.ETag)
	if err != nil {
		t.Fatal(err)
	}

	old := connectionsPollInterval
	connectionsPollInterval = 20 * time.Millisecond
	t.Cleanup(func() { connectionsPollInterval = old })
	stdout, stderr = syncBuffer{}, syncBuffer{}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	go func() { done <- Run(runCtx, getenv, &stdout, &stderr, "test") }()
	defer func() {
		cancel()
		<-done
	}()
	addr := waitEvent(t, &stdout, &stderr, done, "handler.start", 1)["addr"].(string)
	list := func() []string {
		resp, err := http.Get("http://" + addr + "/api/connections")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Connections []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range body.Connections {
			names = append(names, c.Name)
		}
		return names
	}
	if got := list(); !slices.Equal(got, []string{"xero"}) {
		t.Fatalf("serving %q, want the blob's [xero]", got)
	}

	if _, err = store.Put(ctx, connectionsJSON("xero", "sage"), etag); err != nil {
		t.Fatal(err)
	}
	r := waitEvent(t, &stdout, &stderr, done, "connections.changed", 1)
	if r["level"] != "INFO" {
		t.Errorf("connections.changed at %v, want INFO", r["level"])
	}
	// The list is cached for a few seconds (functions' statusTTL); one
	// connection's route reads the broker's set.
	if code := statusCode(t, "http://"+addr+"/api/connections/sage"); code != http.StatusOK {
		t.Fatalf("after the change GET /api/connections/sage = %d, want 200", code)
	}

	// Put refuses an invalid file; another writer may still upload one.
	if _, err := client.UploadBuffer(ctx, container, "connections.json", []byte(`{"connections":[{"name":"xero","provider":"xeroo"}]}`), nil); err != nil {
		t.Fatal(err)
	}
	r = waitEvent(t, &stdout, &stderr, done, "connections.refused", 1)
	if r["level"] != "ERROR" || !strings.Contains(r["problems"].(string), "xeroo") {
		t.Errorf("connections.refused = %v; want ERROR naming the problem", r)
	}
	// Several more polls: still one report, and the running set stays.
	// Nothing is to happen, so there is no condition to poll for: ten poll
	// periods pass.
	time.Sleep(10 * connectionsPollInterval)
	if n := countEvents(t, &stdout, &stderr, "connections.refused"); n != 1 {
		t.Errorf("connections.refused logged %d times, want once per bad version", n)
	}
	if code := statusCode(t, "http://"+addr+"/api/connections/sage"); code != http.StatusOK {
		t.Fatalf("after a refused change GET /api/connections/sage = %d, want 200: the running set stays", code)
	}
	if code := statusCode(t, "http://"+addr+"/api/connections/nosuch"); code != http.StatusNotFound {
		t.Fatalf("GET /api/connections/nosuch = %d, want 404", code)
	}
}

func statusCode(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url) // #nosec G107 -- the test server's address
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func countEvents(t *testing.T, stdout, stderr *syncBuffer, event string) int {
	n := 0
	for _, out := range []*syncBuffer{stdout, stderr} {
		for _, r := range records(t, out.String()) {
			if r["event"] == event {
				n++
			}
		}
	}
	return n
}

// waitEvent waits until the n-th record of event is logged, and returns it.
func waitEvent(t *testing.T, stdout, stderr *syncBuffer, done <-chan int, event string, n int) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		seen := 0
		for _, out := range []*syncBuffer{stdout, stderr} {
			for _, r := range records(t, out.String()) {
				if r["event"] == event {
					if seen++; seen == n {
						return r
					}
				}
			}
		}
		select {
		case code := <-done:
			t.Fatalf("Run returned %d waiting for %s; stderr:\n%s", code, event, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no %s; stdout:\n%s\nstderr:\n%s", event, stdout.String(), stderr.String())
	return nil
}
