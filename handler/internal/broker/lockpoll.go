package broker

import (
	"context"
	"math/rand/v2"
	"time"
)

// LockPoller paces a Locker's attempts at a lock another holder has: each
// wait lasts between half and one and a half of the interval, so that
// waiters on many instances do not poll in step. Both Locker
// implementations (blob lease, local file lock) wait this way. Not safe
// for concurrent use: one poller per attempt to take a lock.
type LockPoller struct {
	every time.Duration
	timer *time.Timer
}

// NewLockPoller returns a LockPoller that waits about every interval.
func NewLockPoller(every time.Duration) *LockPoller {
	return &LockPoller{every: every}
}

// Wait waits one jittered interval, or until ctx is done, whose error it
// returns.
func (p *LockPoller) Wait(ctx context.Context) error {
	d := p.every/2 + rand.N(p.every) // #nosec G404 -- jitter that spreads the waiters' polls; nothing depends on it being unpredictable
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-p.timer.C:
		return nil
	}
}

// Stop releases the poller's timer.
func (p *LockPoller) Stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
