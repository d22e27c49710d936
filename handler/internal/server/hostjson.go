package server

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

// assumedFunctionTimeout is what the handler assumes when it cannot read
// host.json's functionTimeout: the smallest of the host's defaults, 5
// minutes on the Consumption plan (ScriptJobHostOptionsSetup.
// DefaultConsumptionFunctionTimeout; Flex, Premium and Dedicated default to
// 30). Too short a guess costs nothing but pace: the sweep defers what it
// could not start to the next tick. Too long a guess would let the host
// cancel the invocation.
const assumedFunctionTimeout = 5 * time.Minute

// sweepTimeout is the timer invocation's deadline: host.json's
// functionTimeout less functions.SweepMargin. The host counts
// functionTimeout for every invocation, the timer's included, and cancels
// it then (JobHostFunctionTimeoutOptionsSetup: ThrowOnTimeout); its
// HttpClient to this handler waits one minute more (DefaultHttpWorkerService
// constructor: FunctionTimeout + 1 min). So the sweep must answer before
// functionTimeout, and host.json sets it explicitly (the Flex Consumption
// default, 30 minutes) so that both read the same figure.
//
// host.json is read from FUNCTIONS_APP_ROOT_PATH, which the host sets for
// its custom handler (HttpWorkerProcess.CreateWorkerProcess,
// HttpWorkerConstants.FunctionAppRootVarName). Without it (standalone
// mode) the default applies. warning, when not empty, says why
// assumedFunctionTimeout was used instead of host.json's value.
func sweepTimeout(getenv func(string) string) (timeout time.Duration, warning string) {
	root := getenv("FUNCTIONS_APP_ROOT_PATH")
	if root == "" {
		return functions.DefaultSweepTimeout, ""
	}
	path := filepath.Join(root, "host.json")
	ft, err := readFunctionTimeout(path)
	switch {
	case err != nil:
		return sweepBudget(assumedFunctionTimeout), fmt.Sprintf("%v; the timer's sweep assumes functionTimeout %s, the smallest of the host's defaults", err, assumedFunctionTimeout)
	case ft < 0:
		// -1: no limit (Flex, Premium, Dedicated). The sweep still ends
		// in the default time, and the next tick carries on.
		return functions.DefaultSweepTimeout, ""
	}
	return sweepBudget(ft), ""
}

// sweepBudget is functionTimeout less the margin; a functionTimeout of two
// margins or less keeps half of itself.
func sweepBudget(functionTimeout time.Duration) time.Duration {
	if functionTimeout <= 2*functions.SweepMargin {
		return functionTimeout / 2
	}
	return functionTimeout - functions.SweepMargin
}

// readFunctionTimeout returns host.json's functionTimeout, negative for no
// limit.
func readFunctionTimeout(path string) (time.Duration, error) {
	b, err := os.ReadFile(path) // #nosec G304 -- the host's own host.json, under the app root the host names
	if err != nil {
		return 0, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var h struct {
		FunctionTimeout *string `json:"functionTimeout"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return 0, fmt.Errorf("%s is not plain JSON (%v)", path, err)
	}
	if h.FunctionTimeout == nil {
		return 0, fmt.Errorf("%s sets no functionTimeout; set it (the shipped host.json has \"00:30:00\")", path)
	}
	d, err := parseTimeSpan(*h.FunctionTimeout)
	if err != nil {
		return 0, fmt.Errorf("%s: functionTimeout %q: %w", path, *h.FunctionTimeout, err)
	}
	return d, nil
}

// timeSpan is the constant format of .NET's TimeSpan, as host.json's
// functionTimeout is written: [-][d.]hh:mm[:ss[.fffffff]], or whole days.
var timeSpan = regexp.MustCompile(`^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$`)

// parseTimeSpan parses a TimeSpan; any negative value means no limit, as
// the host reads "-1" (ScriptJobHostOptionsSetup.ConfigureFunctionTimeout).
func parseTimeSpan(s string) (time.Duration, error) {
	if days, err := strconv.Atoi(s); err == nil {
		if days < 0 {
			return -1, nil
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	m := timeSpan.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("not a TimeSpan such as \"00:30:00\" or \"-1\"")
	}
	if m[1] == "-" {
		return -1, nil
	}
	num := func(v string) int {
		n, _ := strconv.Atoi(v) // digits only, by the pattern
		return n
	}
	h, mi, sec := num(m[3]), num(m[4]), num(m[5])
	if h > 23 || mi > 59 || sec > 59 {
		return 0, fmt.Errorf("hours must be 0-23, minutes and seconds 0-59")
	}
	d := time.Duration(num(m[2]))*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(sec)*time.Second
	if f := m[6]; f != "" {
		frac, _ := strconv.Atoi(f + "0000000"[len(f):]) // ticks of 100 ns
		d += time.Duration(frac) * 100 * time.Nanosecond
	}
	return d, nil
}
