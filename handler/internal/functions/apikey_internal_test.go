package functions

import "testing"

// TestKeyMatches: the key comparison without a hash accepts the key and
// nothing else: no prefix, no extension, no other byte.
func TestKeyMatches(t *testing.T) {
	const key = "a-function-key-longer-than-32-bytes-0123456789"
	tests := []struct {
		got  string
		want bool
	}{
		{key, true},
		{key[:len(key)-1], false},
		{key + "0", false},
		{key[:10], false},
		{"", false},
		{"b" + key[1:], false},
		{key[:len(key)-1] + "8", false},
		{key + "\x00", false},
		{string(make([]byte, len(key))), false},
	}
	for _, tt := range tests {
		if got := keyMatches(tt.got, key); got != tt.want {
			t.Errorf("keyMatches(%q) = %v, want %v", tt.got, got, tt.want)
		}
	}
	if keyMatches("", "") != true {
		t.Error("two empty strings differ") // requireAPIKey never compares an empty key
	}
}
