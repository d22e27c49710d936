// Command bench measures the built handler binary as an operator would
// meet it: its size, how fast it answers after start, its memory idle and
// with 1,000 connections, and the token endpoint's throughput and tail
// latency under load from hey (github.com/rakyll/hey), an established Go
// load tool used here as a library. `make bench` runs it after the Go
// benchmarks; every figure is printed beside the command behind it.
//
// Usage: go run ./handler/cmd/bench -handler bin/handler
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rakyll/hey/requester"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

func main() {
	if file := os.Getenv(bareEnv); file != "" { // hitpath.go re-executes this program as the bare server
		if err := serveBare(file); err != nil {
			fmt.Fprintln(os.Stderr, "bench: bare server:", err)
			os.Exit(1)
		}
		return
	}
	bin := flag.String("handler", "bin/handler", "the handler binary to measure")
	duration := flag.Duration("duration", 10*time.Second, "how long hey loads the token endpoint")
	concurrency := flag.Int("c", 16, "concurrent connections of the load tool")
	tool := flag.String("load", "auto", `load tool: "wrk" (apt install wrk), "hey" (built in), or "auto": wrk when on PATH`)
	// Many short rounds rather than a few long ones: on a shared virtual
	// machine both servers' pace drifts over tens of seconds (the bare
	// server alone ranged 49,000-74,000 requests/s between rounds), and a
	// median of ratios of neighbouring runs cancels that drift best.
	hitRounds := flag.Int("hit-rounds", 15, "rounds of the hit-path comparison (handler ÷ bare net/http); 0 skips it")
	hitDuration := flag.Duration("hit-duration", 2*time.Second, "how long each side of a hit-path round is loaded")
	flag.Parse()
	if *tool == "auto" {
		*tool = "hey"
		if _, err := exec.LookPath("wrk"); err == nil {
			*tool = "wrk"
		}
	}
	if err := run(*bin, *duration, *concurrency, *tool, *hitRounds, *hitDuration); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(bin string, duration time.Duration, concurrency int, tool string, hitRounds int, hitDuration time.Duration) error {
	fi, err := os.Stat(bin)
	if err != nil {
		return fmt.Errorf("%w (run make build first)", err)
	}
	fmt.Printf("tokenrefresher bench: %s, %d CPUs, %s/%s, %s\n\n", bin, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("== binary size (make build: -trimpath not set, -ldflags '-s -w'): %.1f MB\n", float64(fi.Size())/1e6)

	provider := testprovider.New(testprovider.Config{ClientID: "client", ClientSecret: "bench-secret", AuthStyle: broker.AuthBasic, Rotate: true})
	ps := httptest.NewServer(provider)
	defer ps.Close()

	one, err := newState(provider, ps.URL+"/token", 1)
	if err != nil {
		return err
	}
	defer os.RemoveAll(one.dir)
	var starts []time.Duration
	for range 10 {
		h, took, err := start(bin, one)
		if err != nil {
			return err
		}
		starts = append(starts, took)
		h.stop()
	}
	slices.Sort(starts)
	fmt.Printf("== cold start, process start to first answer (GET /), 10 runs: median %v, max %v (target < 50 ms)\n",
		starts[len(starts)/2].Round(100*time.Microsecond), starts[len(starts)-1].Round(100*time.Microsecond))

	h, _, err := start(bin, one)
	if err != nil {
		return err
	}
	idle, err := rss(h.cmd.Process.Pid)
	h.stop()
	if err != nil {
		return err
	}
	fmt.Printf("== memory idle, 1 connection (VmRSS from /proc): %.1f MB\n", float64(idle)/1e6)

	// The load tool runs on the same machine. Given one core each
	// (GOMAXPROCS=1 for the handler, one wrk thread), neither steals the
	// other's; with the default, both fight over both cores, which says
	// more about the machine than about the handler.
	for _, procs := range []string{"1", ""} {
		env := []string{}
		label := "handler GOMAXPROCS=1, the load tool on the other core"
		if procs != "" {
			env = append(env, "GOMAXPROCS="+procs)
		} else {
			label = "handler with the default GOMAXPROCS, sharing both cores with the load tool"
		}
		h, _, err := start(bin, one, env...)
		if err != nil {
			return err
		}
		url := "http://" + h.addr + "/api/token/c0000"
		if code, err := get(url); err != nil || code != http.StatusOK {
			h.stop()
			return fmt.Errorf("first token: %d %v", code, err)
		}
		var report loadReport
		var command string
		if tool == "wrk" {
			command = fmt.Sprintf("wrk -t1 -c%d -d%v --latency", concurrency, duration)
			report, err = loadWrk(url, duration, concurrency)
		} else {
			command = fmt.Sprintf("hey -z %v -c %d", duration, concurrency)
			report, err = load(url, duration, concurrency)
		}
		h.stop()
		if err != nil {
			return err
		}
		fmt.Printf("== token endpoint, cached token, %s, keep-alive; %s:\n", command, label)
		fmt.Printf("   %.0f requests/s, p99 %.2f ms, %d non-200 (targets: >= 20,000 requests/s, p99 < 5 ms)\n", report.rps, report.p99*1000, report.errors)
	}

	if hitRounds > 0 {
		fmt.Printf("== hit path: token endpoint, cached token, handler ÷ the lightest net/http server answering the same bytes (ReadHeaderTimeout only, as the handler's server in net/http); each pinned to CPU 0 with GOMAXPROCS=1 (taskset), the load tool on CPU 1 (%s), alternating, %d rounds of %v each:\n",
			map[string]string{"wrk": fmt.Sprintf("wrk -t1 -c%d", concurrency), "hey": fmt.Sprintf("hey -c %d", concurrency)}[tool], hitRounds, hitDuration)
		if err := hitPath(bin, one, hitRounds, hitDuration, concurrency, tool); err != nil {
			return err
		}
	}

	many, err := newState(provider, ps.URL+"/token", 1000)
	if err != nil {
		return err
	}
	defer os.RemoveAll(many.dir)
	h, took, err := start(bin, many)
	if err != nil {
		return err
	}
	defer h.stop()
	before, _ := rss(h.cmd.Process.Pid)
	for i := range 1000 {
		if code, err := get(fmt.Sprintf("http://%s/api/token/c%04d", h.addr, i)); err != nil || code != http.StatusOK {
			return fmt.Errorf("token c%04d: %d %v", i, code, err)
		}
	}
	after, err := rss(h.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("== 1,000 connections: start to first answer %v; VmRSS %.1f MB configured, %.1f MB with all 1,000 tokens refreshed and cached\n",
		took.Round(100*time.Microsecond), float64(before)/1e6, float64(after)/1e6)
	return nil
}

// state is a local state directory with n seeded connections and the
// environment that points a handler at it.
type state struct {
	dir string
	env []string
}

func newState(p *testprovider.Provider, tokenURL string, n int) (*state, error) {
	dir, err := os.MkdirTemp("", "tokenrefresher-bench-")
	if err != nil {
		return nil, err
	}
	store, err := local.NewStore(filepath.Join(dir, "state"))
	if err != nil {
		return nil, err
	}
	type conn struct {
		Name       string `json:"name"`
		TokenURL   string `json:"tokenUrl"`
		ClientAuth string `json:"clientAuth"`
		ClientID   string `json:"clientId"`
		Rotating   bool   `json:"rotating"`
	}
	var conns []conn
	ctx := context.Background()
	for i := range n {
		name := fmt.Sprintf("c%04d", i)
		conns = append(conns, conn{Name: name, TokenURL: tokenURL, ClientAuth: "basic", ClientID: "client", Rotating: true})
		for secret, value := range map[string]string{name + "-client-secret": "bench-secret", name + "-refresh-token": p.IssueRefreshToken()} {
			if err := store.Set(ctx, secret, broker.StoredSecret{Value: broker.Secret(value)}); err != nil {
				return nil, err
			}
		}
	}
	data, err := json.Marshal(map[string]any{"connections": conns})
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "connections.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		return nil, err
	}
	return &state{dir: dir, env: []string{
		"CONNECTIONS_FILE=" + file, "LOCAL_STATE_DIR=" + filepath.Join(dir, "state"),
		"LISTEN_ADDR=127.0.0.1:0", "SWEEP_INTERVAL=24h", "LOG_LEVEL=warn",
	}}, nil
}

type handler struct {
	cmd  *exec.Cmd
	addr string
}

func (h *handler) stop() {
	_ = h.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// start runs the handler on a free port and returns once GET / answers,
// with the time from exec to that answer. It waits for the handler's
// handler.start log line (no polling), then asks once.
func start(bin string, s *state, env ...string) (*handler, time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin)
	cmd.Env = append(append(append(os.Environ(), s.env...), "LISTEN_ADDR="+addr, "LOG_LEVEL=info"), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	h := &handler{cmd: cmd, addr: addr}
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), `"event":"handler.start"`) {
				found = true
				listening <- true
			}
		}
		if !found {
			listening <- false
		}
	}()
	select {
	case ok := <-listening:
		if !ok {
			h.stop()
			return nil, 0, fmt.Errorf("the handler exited before listening: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		h.stop()
		return nil, 0, fmt.Errorf("the handler did not listen within 20 s: %s", stderr.String())
	}
	res, err := http.Get("http://" + addr + "/")
	if err != nil {
		h.stop()
		return nil, 0, err
	}
	res.Body.Close()
	return h, time.Since(began), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func get(url string) (int, error) {
	res, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// rss is the process's resident set size in bytes, from /proc.
func rss(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("memory figures need Linux's /proc: %w", err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		return 0, errors.New("no VmRSS in /proc status")
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb * 1000, nil
}

type loadReport struct {
	rps    float64
	p99    float64 // seconds
	errors int
}

// load runs hey against url and reads its summary.
func load(url string, d time.Duration, c int) (loadReport, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return loadReport{}, err
	}
	var out bytes.Buffer
	w := &requester.Work{Request: req, N: 1 << 30, C: c, Timeout: 5, Writer: &out}
	w.Init()
	time.AfterFunc(d, w.Stop)
	w.Run()
	text := out.String()
	var r loadReport
	if m := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(text); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := regexp.MustCompile(`99%+ in ([\d.]+) secs`).FindStringSubmatch(text); m != nil {
		r.p99, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := regexp.MustCompile(`\[(\d+)\]\s+(\d+) responses`).FindAllStringSubmatch(text, -1); m != nil {
		for _, s := range m {
			if s[1] != "200" {
				n, _ := strconv.Atoi(s[2])
				r.errors += n
			}
		}
	}
	if r.rps == 0 {
		return r, fmt.Errorf("could not read hey's report:\n%s", text)
	}
	if strings.Contains(text, "Error distribution") {
		r.errors++
	}
	return r, nil
}

// loadWrk runs wrk (one thread: the handler needs the other CPU) and
// reads its summary.
func loadWrk(url string, d time.Duration, c int) (loadReport, error) {
	out, err := exec.Command("wrk", "-t1", fmt.Sprintf("-c%d", c), fmt.Sprintf("-d%ds", int(d.Seconds())), "--latency", url).CombinedOutput()
	text := string(out)
	if err != nil {
		return loadReport{}, fmt.Errorf("wrk: %v\n%s", err, text)
	}
	var r loadReport
	if m := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(text); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := regexp.MustCompile(`\s99%\s+([\d.]+)(us|ms|s)`).FindStringSubmatch(text); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		r.p99 = v * map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1}[m[2]]
	}
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(text); m != nil {
		r.errors, _ = strconv.Atoi(m[1])
	}
	if r.rps == 0 {
		return r, fmt.Errorf("could not read wrk's report:\n%s", text)
	}
	return r, nil
}
