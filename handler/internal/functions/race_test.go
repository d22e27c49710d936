//go:build race

package functions_test

// poolMisses is how many more allocations a pooled path may make under the
// race detector, whose sync.Pool drops a share of what it is given on
// purpose (sync/pool.go, Put: under race.Enabled it drops one item in four): the
// status recorder, the redacting writer and the answer buffer.
const poolMisses = 3
