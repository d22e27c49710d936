package main

// The soak test of issue 14: three handler processes under 30 callers, a
// strict rotating provider without reuse grace, and a SIGKILL every
// soakKillEvery. A kill that lands between the provider's commit of a
// rotation and the write-ahead record loses the primary family (the next
// holder redeems the old token, and reuse detection revokes the family);
// every connection has a standby grant, so the broker promotes it and no
// caller sees 424. The test plays the person who consents to a new standby
// when the status says standby_used, and counts the families lost and the
// grants lost (a 424, or a connection that cannot be served at the end).

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

const (
	soakConnections = 6
	soakCallers     = 30
	soakProcesses   = 3
	soakFor         = 20 * time.Second
	soakKillEvery   = 1500 * time.Millisecond
	// soakLifetime is short so that refreshes, and with them loss
	// windows, come often.
	soakLifetime = 2 * time.Second
	// soakAnswerDelay is how long the provider takes to answer after it
	// committed a rotation (the rest of its handler, the network): the
	// loss window a kill can land in.
	soakAnswerDelay = 50 * time.Millisecond
)

// commitThenAnswer runs the provider's token endpoint to completion (the
// rotation is committed), then waits delay before the answer leaves.
func commitThenAnswer(p http.Handler, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			p.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, r)
		time.Sleep(delay) // models the answer's way back, not a wait for a condition
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

func TestSoakKillsWithStandbyGrants(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: 20 s of SIGKILLs under load")
	}
	const clientID = "soak-client"
	clientSecret := "cs_" + rand.Text()
	provider := testprovider.New(testprovider.Config{
		ClientID: clientID, ClientSecret: clientSecret, AuthStyle: broker.AuthBasic,
		Rotate: true, AccessTokenLifetime: soakLifetime,
	})
	ps := httptest.NewServer(commitThenAnswer(provider, soakAnswerDelay))
	t.Cleanup(ps.Close)

	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	store, err := local.NewStore(state)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	set := func(name, value string) {
		t.Helper()
		if err := store.Set(ctx, name, broker.StoredSecret{Value: broker.Secret(value), UpdatedOn: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	var conns []string
	var entries []string
	for i := range soakConnections {
		name := fmt.Sprintf("soak%d", i)
		conns = append(conns, name)
		entries = append(entries, fmt.Sprintf(`{"name": %q, "tokenUrl": %q, "clientAuth": "basic", "clientId": %q, "rotating": true, "refreshBefore": "1s", "standby": true}`,
			name, ps.URL+"/token", clientID))
		set(name+"-client-secret", clientSecret)
		set(name+"-refresh-token", provider.IssueRefreshToken())
		set(broker.DefaultStandbySecretName(name), provider.IssueRefreshToken())
	}
	connFile := writeFile(t, dir, "connections.json", `{"connections": [`+strings.Join(entries, ",\n")+`]}`)
	env := []string{"LOCAL_STATE_DIR=" + state, "CONNECTIONS_FILE=" + connFile, "LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h"}

	client := newClient(t, soakCallers)
	var mu sync.Mutex
	procs := make([]*handlerProcess, soakProcesses)
	started := 0
	start := func() *handlerProcess {
		started++
		p := startHandler(t, fmt.Sprintf("handler %d", started), env, dir)
		p.waitListening(t, 30*time.Second)
		waitReady(t, client, p, 30*time.Second)
		return p
	}
	for i := range procs {
		procs[i] = start()
	}

	// 30 callers, each asking a random connection of a random process.
	var (
		stop     atomic.Bool
		requests atomic.Int64
		served   atomic.Int64
		refused  = map[string]int{} // connection -> 424s
		other    = map[int]int{}    // status -> count, besides 200 and 424
	)
	var wg sync.WaitGroup
	for range soakCallers {
		wg.Go(func() {
			for !stop.Load() {
				mu.Lock()
				addr := procs[mrand.N(len(procs))].addr
				mu.Unlock()
				conn := conns[mrand.N(len(conns))]
				requests.Add(1)
				res, err := client.Get("http://" + addr + "/api/token/" + conn)
				if err != nil {
					continue // the process was killed under us
				}
				_ = res.Body.Close()
				mu.Lock()
				switch res.StatusCode {
				case http.StatusOK:
					served.Add(1)
				case http.StatusFailedDependency:
					refused[conn]++
				default:
					other[res.StatusCode]++
				}
				mu.Unlock()
			}
		})
	}

	// The person: consents to a new standby whenever one was used up.
	minted := map[string]int{}
	person := func() {
		for _, c := range conns {
			s, err := store.Get(ctx, broker.DefaultStandbySecretName(c))
			if err == nil && s.Value.IsZero() {
				set(broker.DefaultStandbySecretName(c), provider.IssueRefreshToken())
				minted[c]++
			}
		}
	}

	kills := 0
	deadline := time.Now().Add(soakFor)
	for time.Now().Before(deadline) {
		time.Sleep(soakKillEvery) // the kill rate, not a wait for a condition
		person()
		i := mrand.N(len(procs))
		mu.Lock()
		victim := procs[i]
		mu.Unlock()
		_ = victim.cmd.Process.Kill() // SIGKILL, as the host ends workers
		<-victim.exited
		kills++
		next := start()
		mu.Lock()
		procs[i] = next
		mu.Unlock()
	}
	stop.Store(true)
	wg.Wait()
	person()

	// Every connection must still be served.
	lost := map[string]bool{}
	for c, n := range refused {
		if n > 0 {
			lost[c] = true
		}
	}
	for _, c := range conns {
		res, err := client.Get("http://" + procs[0].addr + "/api/token/" + c)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(res.Body).Decode(&body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			lost[c] = true
			t.Errorf("%s at the end: %d %v", c, res.StatusCode, body["message"])
		}
	}
	promoted := 0
	for _, n := range minted {
		promoted += n
	}
	st := provider.Stats()
	summary := fmt.Sprintf("soak: %d kills in %s, %d requests (%d served, other answers %v), %d refreshes, primary families lost and promoted: %d, families revoked by reuse detection: %d, grants lost: %d",
		kills, soakFor, requests.Load(), served.Load(), other, st.RefreshGrants, promoted, st.ReuseDetected, len(lost))
	fmt.Println(summary)
	t.Log(summary)
	if len(lost) != 0 {
		t.Errorf("grants lost with standby grants: %v (424s per connection: %v); want none", lost, refused)
	}
	if served.Load() == 0 {
		t.Error("no caller was served")
	}
}
