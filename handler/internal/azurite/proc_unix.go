//go:build unix && !linux

package azurite

import (
	"os"
	"syscall"
)

// sysProcAttr puts Azurite in its own process group, so that killGroup
// reaches anything it starts. Without Linux's Pdeathsig, an Azurite whose
// test binary died without running its cleanups outlives it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
