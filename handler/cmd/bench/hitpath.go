package main

// The hit path side by side: the handler answering a cached token against
// a bare net/http server answering the same bytes, so that what is left
// between them is the handler's own work (issue 20 §4). Each server runs
// pinned to CPU 0 with GOMAXPROCS=1, the load tool pinned to CPU 1
// (taskset, from util-linux), the two servers alternating, round after
// round; the figure is the median of the rounds' ratios, which cancels
// most of what other work on the machine does to both.
//
// The bare server is the lightest server net/http makes (ReadHeaderTimeout
// alone): the limit of net/http. It is also what the handler's own server
// sets in net/http (server.httpServer); the rest of its bounds (idle
// connections, bodies, stalled writes) are the handler's connection guard
// (server/connguard.go), so their cost is counted on the handler's side.
// (Until issue 20 §4 the handler's server set ReadTimeout and IdleTimeout,
// which move the connection's deadlines on every request; the bench then
// had a second bare server with them.)

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// bareEnv names the file of the answer a re-executed bench serves as the
// bare server (serveBare).
const bareEnv = "TOKENREFRESHER_BENCH_BARE_ANSWER"

// answer is one captured HTTP answer.
type answer struct {
	Header http.Header
	Body   []byte
}

// hitPathRound is one round: the bare server, then the handler.
type hitPathRound struct {
	bare, handler loadRun
}

// loadRun is one server under load.
type loadRun struct {
	rps float64
	cpu float64 // the server's CPU seconds per second of load
}

// cpuPerRequest is the server's CPU time per request, in microseconds.
func (r loadRun) cpuPerRequest() float64 { return r.cpu / r.rps * 1e6 }

// hitPath measures rounds of bare server and handler, d each, and prints
// each round and the medians.
func hitPath(bin string, s *state, rounds int, d time.Duration, concurrency int, tool string) error {
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("the hit-path comparison pins each side to its own CPU with taskset (util-linux: apt install util-linux)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The load tool on CPU 1: this process, hey inside it and wrk, its
	// child. Each server is moved to CPU 0 once started.
	if err := pin(os.Getpid(), "1"); err != nil {
		return err
	}
	defer func() { _ = pin(os.Getpid(), "0-"+strconv.Itoa(runtime.NumCPU()-1)) }()

	h, _, err := start(bin, s, "GOMAXPROCS=1")
	if err != nil {
		return err
	}
	url := "http://" + h.addr + "/api/token/c0000"
	ans, err := capture(url)
	h.stop()
	if err != nil {
		return err
	}
	file, err := os.CreateTemp("", "tokenrefresher-bench-answer-")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	if err := json.NewEncoder(file).Encode(ans); err != nil {
		return err
	}
	file.Close()

	var all []hitPathRound
	for i := range rounds {
		var r hitPathRound
		if r.bare, err = loadBare(self, file.Name(), d, concurrency, tool); err != nil {
			return err
		}
		if r.handler, err = loadHandler(bin, s, d, concurrency, tool); err != nil {
			return err
		}
		fmt.Printf("   round %d: bare %s; handler %s: %.3f× the bare server's requests/s (%.3f× its CPU per request)\n",
			i+1, r.bare, r.handler, r.handler.rps/r.bare.rps, r.handler.cpuPerRequest()/r.bare.cpuPerRequest())
		all = append(all, r)
	}
	ratio := median(all, func(r hitPathRound) float64 { return r.handler.rps / r.bare.rps })
	cpu := median(all, func(r hitPathRound) float64 { return r.handler.cpuPerRequest() / r.bare.cpuPerRequest() })
	lo, hi := spread(all, func(r hitPathRound) float64 { return r.handler.rps / r.bare.rps })
	fmt.Printf("   median of %d rounds: handler %.3f× the bare server's requests/s (rounds %.3f–%.3f; target >= 0.95), %.3f× its CPU per request\n",
		rounds, ratio, lo, hi, cpu)
	if m := median(all, func(r hitPathRound) float64 { return r.bare.cpu }); m < 0.9 {
		fmt.Printf("   note: the bare server used %.0f%% of its CPU: the load tool, not the server, set the pace, so the CPU per request says more than requests/s\n", m*100)
	}
	return nil
}

// capture fetches url once and keeps what a bare server must send back.
func capture(url string) (answer, error) {
	res, err := http.Get(url)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{}, err
	}
	if res.StatusCode != http.StatusOK {
		return answer{}, fmt.Errorf("first token: %d", res.StatusCode)
	}
	h := http.Header{}
	for _, k := range []string{"Cache-Control", "Pragma", "Content-Type", "X-Content-Type-Options"} {
		if v := res.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	return answer{Header: h, Body: body}, nil
}

// loadHandler starts the handler on CPU 0 and loads its token route.
func loadHandler(bin string, s *state, d time.Duration, c int, tool string) (loadRun, error) {
	h, _, err := start(bin, s, "GOMAXPROCS=1")
	if err != nil {
		return loadRun{}, err
	}
	defer h.stop()
	if err := pin(h.cmd.Process.Pid, "0"); err != nil {
		return loadRun{}, err
	}
	url := "http://" + h.addr + "/api/token/c0000"
	if code, err := get(url); err != nil || code != http.StatusOK {
		return loadRun{}, fmt.Errorf("first token: %d %v", code, err)
	}
	return loadServer(h.cmd.Process.Pid, url, d, c, tool)
}

// String is the run as a round's line shows it.
func (r loadRun) String() string {
	return fmt.Sprintf("%.0f requests/s (%.2f CPU, %.1f µs/request)", r.rps, r.cpu, r.cpuPerRequest())
}

// loadBare starts this program as the bare server on CPU 0 and loads it.
func loadBare(self, answerFile string, d time.Duration, c int, tool string) (loadRun, error) {
	port, err := freePort()
	if err != nil {
		return loadRun{}, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), bareEnv+"="+answerFile, "LISTEN_ADDR="+addr, "GOMAXPROCS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return loadRun{}, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return loadRun{}, err
	}
	h := &handler{cmd: cmd, addr: addr}
	defer h.stop()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening") {
		return loadRun{}, fmt.Errorf("the bare server did not start: %q %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	if err := pin(cmd.Process.Pid, "0"); err != nil {
		return loadRun{}, err
	}
	return loadServer(cmd.Process.Pid, "http://"+addr+"/api/token/c0000", d, c, tool)
}

// loadServer loads url for d and reads the server's CPU time from /proc.
func loadServer(pid int, url string, d time.Duration, c int, tool string) (loadRun, error) {
	before, err := cpuTime(pid)
	if err != nil {
		return loadRun{}, err
	}
	began := time.Now()
	var report loadReport
	if tool == "wrk" {
		report, err = loadWrk(url, d, c)
	} else {
		report, err = load(url, d, c)
	}
	if err != nil {
		return loadRun{}, err
	}
	wall := time.Since(began)
	after, err := cpuTime(pid)
	if err != nil {
		return loadRun{}, err
	}
	if report.errors > 0 {
		return loadRun{}, fmt.Errorf("%d non-200 answers from %s", report.errors, url)
	}
	return loadRun{rps: report.rps, cpu: (after - before).Seconds() / wall.Seconds()}, nil
}

// serveBare is the bare server: net/http answering every request with the
// captured answer's headers and body, as cheaply as net/http allows (the
// header values shared, not built per request).
func serveBare(answerFile string) error {
	data, err := os.ReadFile(answerFile) // #nosec G703 -- the file hitPath wrote and named to its own child in bareEnv
	if err != nil {
		return err
	}
	var a answer
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", os.Getenv("LISTEN_ADDR"))
	if err != nil {
		return err
	}
	fmt.Println("listening on", ln.Addr())
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range a.Header {
			h[k] = v
		}
		_, _ = w.Write(a.Body)
	})}
	return srv.Serve(ln)
}

// pin moves every thread of process pid to the CPUs in list.
func pin(pid int, list string) error {
	if out, err := exec.Command("taskset", "-a", "-p", "-c", list, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		return fmt.Errorf("taskset -a -p -c %s %d: %v: %s", list, pid, err, out)
	}
	return nil
}

// cpuTime is the user and system CPU time process pid has used, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s: USER_HZ
// is 100 on Linux).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU figures need Linux's /proc: %w", err)
	}
	// The command name (field 2) may hold spaces; fields count from its ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

func median(rounds []hitPathRound, f func(hitPathRound) float64) float64 {
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func spread(rounds []hitPathRound, f func(hitPathRound) float64) (lo, hi float64) {
	for i, r := range rounds {
		v := f(r)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}
