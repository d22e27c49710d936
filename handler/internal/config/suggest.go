package config

import (
	"strings"
)

// Suggest returns the candidate that got most likely misspells, or "" when
// none is close, by the rule of the connections file's did-you-mean: case,
// '_' and '-' ignored, at most two edits and fewer for short names. The
// token route uses it for its query parameters.
func Suggest(got string, candidates []string) string { return suggest(got, candidates) }

// suggest returns the candidate that got most likely misspells, or "" when
// none is close. Case, '_' and '-' are ignored, so "tokenURL" and
// "token_url" both find "tokenUrl".
func suggest(got string, candidates []string) string {
	n := foldName(got)
	if n == "" {
		return ""
	}
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(n, foldName(c))
		if d == 0 {
			return c
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// Two edits at most, and fewer for short names: "id" is not a typo of
	// "name".
	if bestDist < 0 || bestDist > 2 || bestDist > max(1, len(n)/3) {
		return ""
	}
	return best
}

// foldName lower-cases s and drops the separators people vary between
// naming conventions.
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', ' ', '.':
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// editDistance is the Levenshtein distance between a and b, in bytes; the
// names compared here are ASCII.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
