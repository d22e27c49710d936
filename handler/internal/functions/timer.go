package functions

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// invocationRequest is the envelope the Functions host posts for a
// non-HTTP trigger: {"Data":{"timer":{...}},"Metadata":{...}}.
type invocationRequest struct {
	Data     map[string]json.RawMessage `json:"Data"`
	Metadata json.RawMessage            `json:"Metadata"`
}

// timerInfo is the host's TimerInfo. ScheduleStatus is null when schedule
// monitoring is off.
type timerInfo struct {
	IsPastDue bool `json:"IsPastDue"`
	// ScheduleStatus (Last, Next, LastUpdated) is not used; its dates may
	// come without a zone, which time.Time would refuse, so it is left
	// undecoded rather than fail the sweep over it.
	ScheduleStatus json.RawMessage `json:"ScheduleStatus"`
}

// invocationResponse is what the host expects back. Any non-2xx answer
// fails the invocation; Logs go to the invocation's log (Application
// Insights traces).
type invocationResponse struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// timerBinding is the binding name in functions/refresh/function.json.
const timerBinding = "timer"

// timerRoute is where the host posts the timer's envelope: the function's
// name, functions/refresh.
const timerRoute = "/refresh"

func handleTimer(b Broker, o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, err := decodeTimer(w, r, o.MaxBodyBytes)
		if err != nil {
			encodeError(w, err)
			return
		}
		var logs []string
		if info.IsPastDue {
			logs = append(logs, "timer is past due (the app was idle or restarting); sweeping now")
		}
		start := time.Now()
		// The request's context ends at the timer's deadline (deadline.go):
		// the sweep starts nothing it could not finish by then, and
		// returns the rest as deferred, so the host gets this answer in
		// time, with its logs, instead of cancelling the invocation.
		results := b.Sweep(r.Context(), o.SweepHorizon)
		failed, warnings, deferred := 0, 0, 0
		for _, res := range results {
			line := sweepLine(res)
			logs = append(logs, line)
			switch res.Action {
			case broker.SweepFailed:
				failed++
				o.Logger.Error(line, "event", "sweep.failed", "connection", res.Connection, "code", string(res.Err.Code), "category", res.Err.Category)
			case broker.SweepDeferred:
				deferred++
				o.Logger.Info(line, "event", "sweep.deferred", "connection", res.Connection)
			default:
				o.Logger.Info(line, "event", "sweep."+string(res.Action), "connection", res.Connection)
			}
			for _, w := range res.Warnings {
				logs = append(logs, res.Connection+": warning: "+w)
				warnings++
			}
		}
		took := time.Since(start).Round(time.Millisecond)
		if deferred > 0 {
			summary := fmt.Sprintf("sweep stopped at the end of its period or before its deadline: %d of %d connections done, %d left for the next tick, which starts with them; %d failed, %d warnings, %s",
				len(results)-deferred, len(results), deferred, failed, warnings, took)
			logs = append(logs, summary)
			o.Logger.Warn(summary, "event", "sweep.incomplete", "done", len(results)-deferred, "left", deferred,
				"connections", len(results), "sweep_timeout", o.SweepTimeout.String())
		} else {
			logs = append(logs, fmt.Sprintf("sweep done: %d connections, %d failed, %d warnings, %s", len(results), failed, warnings, took))
		}
		encode(w, http.StatusOK, invocationResponse{Outputs: map[string]any{}, Logs: logs})
	})
}

func sweepLine(r broker.SweepResult) string {
	switch r.Action {
	case broker.SweepFailed:
		return fmt.Sprintf("%s: refresh failed: %s %s", r.Connection, r.Err.Message, r.Err.Remediation)
	case broker.SweepRefreshed:
		return fmt.Sprintf("%s: refreshed (%s); valid until %s", r.Connection, r.Reason, r.ExpiresOn.UTC().Format(time.RFC3339))
	case broker.SweepKeptAlive:
		return fmt.Sprintf("%s: refresh token kept alive (%s); valid until %s", r.Connection, r.Reason, r.ExpiresOn.UTC().Format(time.RFC3339))
	case broker.SweepDeferred:
		if r.ExpiresOn.IsZero() {
			return fmt.Sprintf("%s: deferred to the next tick (the sweep's time ran out); no access token is stored", r.Connection)
		}
		return fmt.Sprintf("%s: deferred to the next tick (the sweep's time ran out); valid until %s", r.Connection, r.ExpiresOn.UTC().Format(time.RFC3339))
	case broker.SweepFresh:
		if r.ExpiresOn.IsZero() {
			return fmt.Sprintf("%s: nothing to do; no access token is stored, callers will fetch one", r.Connection)
		}
		return fmt.Sprintf("%s: fresh; valid until %s", r.Connection, r.ExpiresOn.UTC().Format(time.RFC3339))
	default:
		return fmt.Sprintf("%s: %s", r.Connection, r.Action)
	}
}

func decodeTimer(w http.ResponseWriter, r *http.Request, maxBody int64) (timerInfo, *broker.Error) {
	var info timerInfo
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return info, &broker.Error{Code: codeTooLarge, Message: fmt.Sprintf("the invocation envelope exceeds %d bytes", maxBody)}
		}
		return info, badRequest("the invocation envelope could not be read", "")
	}
	var env invocationRequest
	if err := json.Unmarshal(bytes.TrimSpace(body), &env); err != nil {
		return info, badRequest("the timer invocation envelope is not valid JSON: "+truncate(err.Error(), 160),
			`The Functions host sends {"Data":{"timer":{...}},"Metadata":{...}}; to trigger a sweep by hand, POST that shape.`)
	}
	raw, ok := env.Data[timerBinding]
	if !ok {
		return info, badRequest(`the timer invocation envelope has no Data.timer`,
			`Check that functions/refresh/function.json names its binding "timer".`)
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, badRequest("Data.timer is not a timer trigger payload: "+truncate(err.Error(), 160), "")
	}
	return info, nil
}
