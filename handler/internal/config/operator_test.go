package config

import (
	"slices"
	"strings"
	"testing"
)

// TestStatusPageGroupSettings: STATUS_PAGE_GROUP and TOKEN_CALLERS are
// object ids (lower-cased, as X-MS-CLIENT-PRINCIPAL-ID carries them), and
// a group without token callers fails start-up: the group's members pass
// App Service authentication on every route, the token route included.
func TestStatusPageGroupSettings(t *testing.T) {
	const group = "6A1F0C2E-0D7B-4F6E-9A51-3C2B1E0F9D84"
	const adf = "9d8c7b6a-5f4e-4d3c-a2b1-0e9f8d7c6b5a"
	tests := []struct {
		name        string
		env         map[string]string
		wantGroup   string
		wantCallers []string
		wantProblem string
	}{
		{"neither", nil, "", nil, ""},
		{"both", map[string]string{"STATUS_PAGE_GROUP": group, "TOKEN_CALLERS": " " + strings.ToUpper(adf) + " , " + adf}, strings.ToLower(group), []string{adf, adf}, ""},
		{"callers alone", map[string]string{"TOKEN_CALLERS": adf}, "", []string{adf}, ""},
		{"group without callers", map[string]string{"STATUS_PAGE_GROUP": group}, "", nil, "TOKEN_CALLERS"},
		{"group not a GUID", map[string]string{"STATUS_PAGE_GROUP": "operators", "TOKEN_CALLERS": adf}, "", nil, "STATUS_PAGE_GROUP"},
		{"caller not a GUID", map[string]string{"STATUS_PAGE_GROUP": group, "TOKEN_CALLERS": adf + ",adf"}, "", nil, "TOKEN_CALLERS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := LoadSettings(env(with(minimalEnv, tt.env)))
			if tt.wantProblem != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantProblem) {
					t.Fatalf("err %v, want a problem with %s", err, tt.wantProblem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.StatusPageGroup != tt.wantGroup || !slices.Equal(s.TokenCallers, tt.wantCallers) {
				t.Errorf("group %q, callers %v; want %q, %v", s.StatusPageGroup, s.TokenCallers, tt.wantGroup, tt.wantCallers)
			}
		})
	}
}
