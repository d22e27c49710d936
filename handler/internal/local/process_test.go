package local_test

// Cross-process tests: the test binary re-runs itself as a child process
// (TestHelperProcess, selected by an environment variable). Parent and
// children synchronise through the child's stdin and stdout, never by
// sleeping.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
)

const (
	helperModeEnv  = "TOKENREFRESHER_LOCAL_HELPER"
	helperDirEnv   = "TOKENREFRESHER_LOCAL_DIR"
	helperCountEnv = "TOKENREFRESHER_LOCAL_COUNT"
	helperValueEnv = "TOKENREFRESHER_LOCAL_VALUE"
)

// TestHelperProcess is not a test: it is the child side of the
// cross-process tests, and returns at once in a normal run.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		return
	}
	if err := runHelper(mode, os.Getenv(helperDirEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(mode, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := local.NewStore(dir)
	if err != nil {
		return err
	}
	l, err := local.NewLocker(dir, fastPoll)
	if err != nil {
		return err
	}
	in := bufio.NewReader(os.Stdin)
	switch mode {
	case "count":
		// Increment the "counter" secret n times under the lock, starting
		// when the parent says so, so that the children overlap.
		n, err := strconv.Atoi(os.Getenv(helperCountEnv))
		if err != nil {
			return err
		}
		fmt.Println("ready")
		if _, err := in.ReadByte(); err != nil {
			return fmt.Errorf("waiting for the start signal: %w", err)
		}
		for range n {
			if err := increment(ctx, s, l); err != nil {
				return err
			}
		}
		return nil
	case "hold":
		// Hold the lock until stdin closes; record the hand-over in the
		// store before releasing, so the next holder can check the order.
		lock, err := l.Lock(ctx, "held")
		if err != nil {
			return err
		}
		fmt.Println("locked")
		io.Copy(io.Discard, in)
		if err := s.Set(ctx, "handover", broker.StoredSecret{Value: "released-by-child"}); err != nil {
			return err
		}
		return lock.Release(ctx)
	case "write":
		return s.Set(ctx, "shared", broker.StoredSecret{
			Value:     broker.Secret(os.Getenv(helperValueEnv)),
			ExpiresOn: time.Date(2032, 1, 2, 3, 4, 5, 0, time.UTC),
		})
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// increment adds one to the "counter" secret under the "counter" lock.
func increment(ctx context.Context, s *local.Store, l *local.Locker) error {
	lock, err := l.Lock(ctx, "counter")
	if err != nil {
		return err
	}
	defer lock.Release(ctx)
	n := 0
	cur, err := s.Get(ctx, "counter")
	switch {
	case err == nil:
		if n, err = strconv.Atoi(cur.Value.Reveal()); err != nil {
			return err
		}
	case !errors.Is(err, broker.ErrSecretNotFound):
		return err
	}
	return s.Set(ctx, "counter", broker.StoredSecret{Value: broker.Secret(strconv.Itoa(n + 1))})
}

// child is a running helper process.
type child struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *bytes.Buffer
}

func startChild(t *testing.T, mode, dir string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), append([]string{
		helperModeEnv + "=" + mode, helperDirEnv + "=" + dir,
		// Under -race a child would otherwise sleep a second before exiting.
		"GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"),
	}, env...)...)
	c := &child{cmd: cmd, stderr: new(bytes.Buffer)}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdout = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A child that is still running here belongs to a failed test.
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return c
}

// expect reads the child's next line and fails unless it is want.
func (c *child) expect(t *testing.T, want string) {
	t.Helper()
	line, err := c.stdout.ReadString('\n')
	if strings.TrimSpace(line) != want {
		t.Fatalf("child said %q (%v), want %q; stderr: %s", line, err, want, c.stderr)
	}
}

// wait waits for the child to exit and fails unless it succeeded.
func (c *child) wait(t *testing.T) {
	t.Helper()
	c.stdin.Close()
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("child %s: %v; stderr: %s", c.cmd.Env[len(c.cmd.Env)-1], err, c.stderr)
	}
}

// TestCrossProcessCounter has three processes do read-modify-write on one
// secret under one lock; a lost update shows as a short count.
func TestCrossProcessCounter(t *testing.T) {
	dir := t.TempDir()
	const children, iterations = 3, 20
	var cs []*child
	for range children {
		c := startChild(t, "count", dir, helperCountEnv+"="+strconv.Itoa(iterations))
		c.expect(t, "ready")
		cs = append(cs, c)
	}
	for _, c := range cs {
		if _, err := c.stdin.Write([]byte("g")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		c.wait(t)
	}
	s, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(children * iterations); got.Value.Reveal() != want {
		t.Errorf("counter = %s, want %s (lost updates across processes)", got.Value.Reveal(), want)
	}
}

// TestCrossProcessLockBlocksUntilRelease checks that a lock held by a child
// keeps the parent out, and that the parent gets it once the child lets go
// and not before.
func TestCrossProcessLockBlocksUntilRelease(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir)
	s, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "hold", dir)
	c.expect(t, "locked")

	if lock, err := lockFor(l, "held", 50*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock while the child holds it = %v, %v; want ErrLockTimeout", lock, err)
	}

	var wg sync.WaitGroup
	var lock broker.Lock
	wg.Add(1)
	go func() {
		defer wg.Done()
		lock, err = lockFor(l, "held", 20*time.Second)
	}()
	c.stdin.Close() // let the child release
	wg.Wait()
	if err != nil {
		t.Fatalf("Lock after the child released = %v", err)
	}
	defer lock.Release(context.Background())
	// The child wrote this just before releasing: a parent that got the
	// lock earlier would not find it.
	if _, err := s.Get(context.Background(), "handover"); err != nil {
		t.Errorf("parent got the lock before the child released it: %v", err)
	}
	c.wait(t)
}

// TestCrossProcessCrashedHolder checks that a holder that dies without
// releasing does not wedge the lock: the OS drops it with the process.
func TestCrossProcessCrashedHolder(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, dir)
	c := startChild(t, "hold", dir)
	c.expect(t, "locked")
	if lock, err := lockFor(l, "held", 30*time.Millisecond); !errors.Is(err, broker.ErrLockTimeout) {
		t.Fatalf("Lock while the child holds it = %v, %v; want ErrLockTimeout", lock, err)
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.cmd.Wait()
	lock, err := lockFor(l, "held", 20*time.Second)
	if err != nil {
		t.Fatalf("Lock after the holder was killed = %v", err)
	}
	lock.Release(context.Background())
}

// TestCrossProcessStore checks that a value another process Set is what
// this process Gets next.
func TestCrossProcessStore(t *testing.T) {
	dir := t.TempDir()
	s, err := local.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Set(ctx, "shared", broker.StoredSecret{Value: "old"}); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "write", dir, helperValueEnv+"=new-from-child")
	c.wait(t)
	got, err := s.Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	if got.Value.Reveal() != "new-from-child" {
		t.Errorf("parent read %q after the child wrote, want new-from-child", got.Value.Reveal())
	}
	if want := time.Date(2032, 1, 2, 3, 4, 5, 0, time.UTC); !got.ExpiresOn.Equal(want) {
		t.Errorf("ExpiresOn = %v, want %v", got.ExpiresOn, want)
	}
}
