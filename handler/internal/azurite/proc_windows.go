package azurite

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup kills Azurite's process tree: npm's azurite-blob.cmd runs node
// as a child of cmd.exe, which killing cmd.exe alone would leave running.
func killGroup(p *os.Process) {
	if err := exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(p.Pid)).Run(); err != nil {
		_ = p.Kill()
	}
}
