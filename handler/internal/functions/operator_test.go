package functions_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/functions"
)

const (
	operatorsGroup = "6a1f0c2e-0d7b-4f6e-9a51-3c2b1e0f9d84"
	otherGroup     = "0b7e9d21-5c3a-4e8f-8d10-2f6a7c9e1b35"
	operatorOID    = "2f9c4d8e-1a7b-4c3e-b5d6-8e0f1a2b3c4d"
	adfOID         = "9d8c7b6a-5f4e-4d3c-a2b1-0e9f8d7c6b5a"
)

// principalHeader is an X-MS-CLIENT-PRINCIPAL as App Service
// authentication writes it: base64 of {"auth_typ","claims":[{"typ","val"}]}
// (learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
func principalHeader(t *testing.T, claims ...[2]string) string {
	t.Helper()
	type claim struct {
		Typ string `json:"typ"`
		Val string `json:"val"`
	}
	p := struct {
		AuthTyp string  `json:"auth_typ"`
		Claims  []claim `json:"claims"`
	}{AuthTyp: "aad"}
	for _, c := range claims {
		p.Claims = append(p.Claims, claim{c[0], c[1]})
	}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// restrictedBroker is the page's broker with xero restricted to Data
// Factory's identity (allowedCallers).
type restrictedBroker struct{ *pageBroker }

func (b restrictedBroker) Connection(name string) (broker.Connection, bool) {
	c, ok := b.pageBroker.Connection(name)
	if name == "xero" {
		c.AllowedCallers = []string{adfOID}
	}
	return c, ok
}

// newOperatorServer serves the page's connections as App Service
// authentication would be in front (authEnabled), with the operators'
// group group (empty: none) and Data Factory as the token route's caller.
func newOperatorServer(t *testing.T, authEnabled bool, group string) (*pageBroker, *httptest.Server) {
	t.Helper()
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	b := newPageBroker(t, now)
	srv := httptest.NewServer(functions.NewServer(restrictedBroker{b}, functions.Options{
		AuthEnabled: authEnabled, StatusPageGroup: group, TokenCallers: []string{adfOID}, Now: func() time.Time { return now },
	}))
	t.Cleanup(srv.Close)
	return b, srv
}

// TestSignedInStatusPage: /api/operator/status serves a member of the
// operators' group signed in through App Service authentication, and
// nobody else: not a forged principal without App Service authentication,
// not Data Factory's identity, not a member of another group. With a group
// configured, the token route serves Data Factory only.
func TestSignedInStatusPage(t *testing.T) {
	member := principalHeader(t, [2]string{"http://schemas.microsoft.com/identity/claims/objectidentifier", operatorOID},
		[2]string{"groups", otherGroup}, [2]string{"groups", strings.ToUpper(operatorsGroup)})
	tests := []struct {
		name        string
		authEnabled bool
		group       string
		path        string
		principalID string
		principals  []string
		want        int
		wantText    string
	}{
		{"member", true, operatorsGroup, "/api/operator/status", operatorOID, []string{member}, http.StatusOK, `id="row-xero"`},
		{"non-member", true, operatorsGroup, "/api/operator/status", operatorOID, []string{principalHeader(t, [2]string{"groups", otherGroup})}, http.StatusForbidden, "does not show membership"},
		{"groups overage", true, operatorsGroup, "/api/operator/status", operatorOID, []string{principalHeader(t, [2]string{"hasgroups", "true"})}, http.StatusForbidden, "overage"},
		{"no header", true, operatorsGroup, "/api/operator/status", "", nil, http.StatusForbidden, "no sign-in"},
		{"not base64 JSON", true, operatorsGroup, "/api/operator/status", operatorOID, []string{"not base64!"}, http.StatusForbidden, "not base64 JSON"},
		{"two principals", true, operatorsGroup, "/api/operator/status", operatorOID, []string{member, member}, http.StatusForbidden, "repeated"},
		{"auth off, forged member", false, operatorsGroup, "/api/operator/status", operatorOID, []string{member}, http.StatusForbidden, "WEBSITE_AUTH_ENABLED"},
		{"no group configured", true, "", "/api/operator/status", operatorOID, []string{member}, http.StatusForbidden, "STATUS_PAGE_GROUP"},
		{"Data Factory on the page", true, operatorsGroup, "/api/operator/status", adfOID,
			[]string{principalHeader(t, [2]string{"http://schemas.microsoft.com/identity/claims/objectidentifier", adfOID})}, http.StatusForbidden, "does not show membership"},
		{"operator on the token route", true, operatorsGroup, "/api/token/outage", operatorOID, []string{member}, http.StatusForbidden, "TOKEN_CALLERS"},
		{"Data Factory on the token route", true, operatorsGroup, "/api/token/outage", adfOID, nil, http.StatusServiceUnavailable, "not in this test"},
		{"operator on the token route, no group", true, "", "/api/token/outage", operatorOID, []string{member}, http.StatusServiceUnavailable, "not in this test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := newOperatorServer(t, tt.authEnabled, tt.group)
			req, err := http.NewRequest(http.MethodGet, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.principalID != "" {
				req.Header.Set("X-MS-CLIENT-PRINCIPAL-ID", tt.principalID)
			}
			for _, p := range tt.principals {
				req.Header.Add("X-MS-CLIENT-PRINCIPAL", p)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, res)
			if res.StatusCode != tt.want || !strings.Contains(body, tt.wantText) {
				t.Fatalf("GET %s: %d, want %d with %q: %s", tt.path, res.StatusCode, tt.want, tt.wantText, body)
			}
		})
	}
}

// TestSignedInStatusPageShowsEveryConnection: the signed-in page lists a
// connection whose allowedCallers leave the operator out (they say who
// takes tokens; the page serves none), where the admin-key page, with no
// principal, does not.
func TestSignedInStatusPageShowsEveryConnection(t *testing.T) {
	_, srv := newOperatorServer(t, true, operatorsGroup)
	get := func(path string, header http.Header) string {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, res)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d: %s", path, res.StatusCode, body)
		}
		return body
	}
	signedIn := get("/api/operator/status", http.Header{"X-Ms-Client-Principal": {principalHeader(t, [2]string{"groups", operatorsGroup})}})
	keyPage := get("/api/status", http.Header{})
	if !strings.Contains(signedIn, `id="row-xero"`) || !strings.Contains(signedIn, `id="row-outage"`) {
		t.Errorf("the signed-in page leaves out a connection")
	}
	if strings.Contains(keyPage, `id="row-xero"`) || !strings.Contains(keyPage, `id="row-outage"`) {
		t.Errorf("the admin-key page changed what it shows")
	}
}

// TestSignedInStatusPageButtons: the signed-in page's buttons keep the
// page's CSRF defence and need the sign-in as well.
func TestSignedInStatusPageButtons(t *testing.T) {
	b, srv := newOperatorServer(t, true, operatorsGroup)
	member := principalHeader(t, [2]string{"groups", operatorsGroup})
	res, page, token, ok := getPageToken(t, srv.URL+"/api/operator/status", http.Header{"X-Ms-Client-Principal": {member}})
	if !ok {
		t.Fatalf("GET /api/operator/status: %d, no token: %s", res.StatusCode, page)
	}

	tests := []struct {
		name, principal, token, origin string
		want                           int
	}{
		{"member, the page's token", member, token, srv.URL, http.StatusOK},
		{"member, no token", member, "", srv.URL, http.StatusForbidden},
		{"member, another origin", member, token, "https://evil.example", http.StatusForbidden},
		{"not signed in", "", token, srv.URL, http.StatusForbidden},
		{"non-member", principalHeader(t, [2]string{"groups", otherGroup}), token, srv.URL, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/operator/status/xero/refresh", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.principal != "" {
				req.Header.Set("X-MS-CLIENT-PRINCIPAL", tt.principal)
			}
			req.Header.Set("X-Status-Page-Token", tt.token)
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			pressButton(t, b, req, tt.want)
		})
	}
}
