package diagnose

import (
	"reflect"
	"testing"
)

func TestParseBody(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Body
	}{
		{name: "Entra", body: `{"error":"invalid_grant","error_description":"AADSTS700082: expired","error_codes":[700082],"trace_id":"x"}`,
			want: Body{Code: "invalid_grant", Description: "AADSTS700082: expired", ErrorCodes: []int{700082}}},
		{name: "Entra wrapper codes", body: `{"error":"invalid_grant","error_codes":[70002,500133]}`,
			want: Body{Code: "invalid_grant", ErrorCodes: []int{70002, 500133}}},
		{name: "codes as strings", body: `{"error":"invalid_client","error_codes":["7000222", "x", 7000215]}`,
			want: Body{Code: "invalid_client", ErrorCodes: []int{7000222, 7000215}}},
		{name: "HubSpot legacy", body: `{"status":"BAD_REFRESH_TOKEN","message":"missing or invalid refresh token"}`,
			want: Body{Status: "BAD_REFRESH_TOKEN", Description: "missing or invalid refresh token"}},
		{name: "HubSpot both", body: `{"error":"invalid_grant","error_description":"d","status":"BAD_REFRESH_TOKEN","message":"m"}`,
			want: Body{Code: "invalid_grant", Description: "d", Status: "BAD_REFRESH_TOKEN"}},
		{name: "form encoded", body: "error=invalid_grant&error_description=bad+token&error_codes=70008%2C50173",
			want: Body{Code: "invalid_grant", Description: "bad token", ErrorCodes: []int{70008, 50173}}},
		{name: "leading whitespace", body: "\n  {\"error\":\"invalid_scope\"}\n", want: Body{Code: "invalid_scope"}},
		{name: "error as an object", body: `{"error":{"code":"Unauthorized","message":"no"}}`, want: Body{}},
		{name: "wrong types", body: `{"error":42,"error_description":["x"],"error_codes":"70008"}`, want: Body{}},
		{name: "HTML", body: "<html><body>Bad gateway</body></html>", want: Body{}},
		{name: "plain text", body: "Service Unavailable", want: Body{}},
		{name: "truncated JSON", body: `{"error":"invalid_gra`, want: Body{}},
		{name: "empty", body: "", want: Body{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseBody([]byte(tt.body)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseBody = %#v, want %#v", got, tt.want)
			}
		})
	}
}
