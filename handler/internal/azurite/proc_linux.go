package azurite

import (
	"os"
	"syscall"
)

// sysProcAttr puts Azurite in its own process group, so that killGroup
// reaches anything it starts, and has the kernel kill it if the test
// binary dies first (a test timeout panics past every t.Cleanup): an
// orphaned Azurite would hold its memory and port until someone noticed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(p *os.Process) {
	// A negative pid names the process group, which Setpgid made the
	// child's own.
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
