package functions

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// TestRequestDeadline: the lazily armed deadline behaves as
// context.WithDeadline does for everyone who looks at it, and arms its
// timer only for someone who waits (issue 20 §4).
func TestRequestDeadline(t *testing.T) {
	tests := []struct {
		name string
		// do uses the context as a route would; it returns the error the
		// context ends with, nil if it was not ended.
		do        func(t *testing.T, c *requestDeadline, cancelParent context.CancelFunc) error
		wantErr   error
		wantArmed bool
	}{
		{"a hit only reads the deadline: nothing armed", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			if d, ok := c.Deadline(); !ok || !d.Equal(c.deadline) {
				t.Errorf("Deadline() = %v, %t; want %v, true", d, ok, c.deadline)
			}
			return c.Err()
		}, nil, false},
		{"a wait ends at the deadline", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			began := time.Now()
			<-c.Done()
			if took := time.Since(began); took != time.Minute {
				t.Errorf("Done closed after %v; want 1m0s", took)
			}
			return c.Err()
		}, context.DeadlineExceeded, true},
		{"Err after the deadline, no one waiting", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			time.Sleep(time.Minute) // the synctest bubble's clock
			if cause := context.Cause(c); !errors.Is(cause, context.DeadlineExceeded) {
				t.Errorf("Cause = %v; want the deadline", cause)
			}
			return c.Err()
		}, context.DeadlineExceeded, true},
		{"the client goes away", func(t *testing.T, c *requestDeadline, cancelParent context.CancelFunc) error {
			cancelParent()
			<-c.Done()
			return c.Err()
		}, context.Canceled, true},
		{"the request ended before anyone waited", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			c.release()
			select {
			case <-c.Done():
			default:
				t.Error("Done is open after the request ended")
			}
			return c.Err()
		}, context.Canceled, true},
		{"a child context follows it", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			child, cancel := context.WithTimeout(c, time.Hour)
			defer cancel()
			if d, _ := child.Deadline(); !d.Equal(c.deadline) {
				t.Errorf("child deadline %v; want the request's %v", d, c.deadline)
			}
			<-child.Done()
			return child.Err()
		}, context.DeadlineExceeded, true},
		{"a parent deadline that comes first", func(t *testing.T, c *requestDeadline, _ context.CancelFunc) error {
			early, cancel := context.WithTimeout(c.parent, time.Second)
			defer cancel()
			c.parent = early
			if d, _ := c.Deadline(); !d.Before(c.deadline) {
				t.Errorf("Deadline() = %v; want the parent's, before %v", d, c.deadline)
			}
			<-c.Done()
			return c.Err()
		}, context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				parent, cancelParent := context.WithCancel(context.Background())
				defer cancelParent()
				c := &requestDeadline{parent: parent, deadline: time.Now().Add(time.Minute)}
				err := tt.do(t, c, cancelParent)
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Errorf("ended with %v; want %v", err, tt.wantErr)
				}
				if armed := c.armed != nil; armed != tt.wantArmed {
					t.Errorf("armed %t; want %t", armed, tt.wantArmed)
				}
				c.release()
				if err := c.Err(); !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("after the request, Err() = %v; want it ended", err)
				}
			})
		})
	}
}
