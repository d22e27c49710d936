//go:build !race

package functions_test

// poolMisses is 0 without the race detector: every pool keeps what it is
// given (race_test.go).
const poolMisses = 0
