package broker

import "time"

// Peek returns the named connection's token when Token would serve it from
// this instance's memory for minValidity at now: the same test as Token's
// first step (fromMemory), and the same observation (TokenServed with
// SourceMemory). now is the caller's reading of the broker's clock
// (Options.Now), the time its request arrived: the HTTP route reads the
// clock once per request and judges, observes and answers by that one
// reading (functions/token.go).
// It never waits, reads the store or takes a lock, so a caller may try it
// before preparing for a call that can (the HTTP route arms its request
// deadline only when Peek misses: functions/token.go).
//
// ok is false whenever Token would do anything else: the connection is
// unknown, minValidity is out of range or more than the provider's tokens
// live (Token's errors), or no token in memory is valid long enough (a
// refresh or a store read). Then nothing was observed, and the caller asks
// Token, which answers as it always has. A failure recorded for the
// connection does not stop a hit here, as it does not stop Token's first
// step: a valid token is served whatever happened since it was issued.
func (b *Broker) Peek(name string, minValidity time.Duration, now time.Time) (tok AccessToken, ok bool) {
	st, found := b.lookup(name)
	if !found || minValidity < 0 || minValidity > MaxMinValidity {
		return AccessToken{}, false
	}
	ct, served, _ := b.fromMemory(st, want{minValidity: minValidity}, now)
	if !served {
		return AccessToken{}, false
	}
	return ct.token, true
}
