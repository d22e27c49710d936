package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/testprovider"
)

// consentLinkPattern finds the address `handler consent-link` prints.
var consentLinkPattern = regexp.MustCompile(`http://\S+/api/consent/\S+`)

// recoveryScene is the demo's failure and recovery: the grant of erp-demo
// (its refresh token, seeded as deadRT) is revoked at the provider, the next
// token request answers 424 with what to do, and the remedy it names, a
// consent through `handler consent-link` and the provider's consent page,
// makes the same request succeed. Each step is printed as a newcomer
// would do it.
func recoveryScene(ctx context.Context, provider *testprovider.Provider, handlerBin string, env []string, base, authURL, deadRT string) error {
	const name = "erp-demo"
	client := &http.Client{Timeout: 60 * time.Second}
	calls := func() int { return provider.Stats().TokenRequests }

	step("4. Failure and recovery. At the provider, the grant of %s is revoked (a user removed the app's access, "+
		"or a refresh token was redeemed twice and the provider revoked the whole chain).", name)
	if !provider.Revoke(deadRT) {
		return errors.New("the provider does not know erp-demo's refresh token")
	}
	n0 := calls()
	res, status, err := getJSON(client, base+"/api/token/"+name)
	if err != nil {
		return err
	}
	if status != http.StatusFailedDependency {
		return fmt.Errorf("GET /api/token/%s after the revocation: %d %s, want 424", name, status, res.Error)
	}
	step("4a. GET /api/token/%s -> %d %s; token-endpoint calls: %d\n    message:     %s\n    remediation: %s",
		name, status, res.Error, calls()-n0, res.Message, res.Remediation)
	var st struct {
		State      string `json:"state"`
		NextAction string `json:"nextAction"`
	}
	if err := getStatus(client, base+"/api/connections/"+name, &st); err != nil {
		return err
	}
	step("    GET /api/connections/%s -> state %q; nextAction: %s", name, st.State, st.NextAction)

	// The provider's app registration lists the handler's callback, as a
	// real provider's must (consent-link prints the address to register).
	provider.AllowRedirectURIs(base + "/api/consent/callback")
	step("4b. The provider's app registration lists the redirect URI %s/api/consent/callback", base)
	u, _ := url.Parse(base)
	cmd := exec.CommandContext(ctx, handlerBin, "consent-link", name, "-expires", "10m")
	cmd.Env = append(env, "LISTEN_ADDR="+u.Host)
	printed, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("handler consent-link %s: %v: %s", name, err, printed)
	}
	step("$ handler consent-link %s -expires 10m\n%s", name, indent(string(printed)))
	link := consentLinkPattern.FindString(string(printed))
	if link == "" {
		return fmt.Errorf("handler consent-link printed no address: %s", printed)
	}

	// The person who can sign in at the provider opens the link and
	// presses its button; the handler sends the browser to the provider.
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	browser := &http.Client{Timeout: 60 * time.Second, Jar: jar}
	noFollow := &http.Client{Timeout: 60 * time.Second, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, link, strings.NewReader(""))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noFollow.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	location := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(location, authURL+"?") {
		return fmt.Errorf("the consent link's button answered %d to %q, want 303 to the provider's consent page", resp.StatusCode, location)
	}
	step("4c. The link's page, button Continue (POST) -> %d to the provider's consent page %s",
		resp.StatusCode, authURL)

	// At the provider's page the person presses Allow; the provider
	// redirects to the handler's callback, which redeems the code and
	// stores the new refresh token.
	done, err := testprovider.Approve(ctx, browser, location)
	if err != nil {
		return err
	}
	var result struct {
		Message string `json:"message"`
	}
	err = json.NewDecoder(io.LimitReader(done.Body, 64<<10)).Decode(&result)
	done.Body.Close()
	if err != nil || done.StatusCode != http.StatusOK {
		return fmt.Errorf("the consent callback answered %d (%v)", done.StatusCode, err)
	}
	step("4d. The provider's consent page, button Allow -> redirect to /api/consent/callback -> %d: %s",
		done.StatusCode, result.Message)

	// Healthy again: the same request is served, with no restart.
	n1 := calls()
	res, status, err = getJSON(client, base+"/api/token/"+name)
	if err != nil {
		return err
	}
	if status != http.StatusOK || !provider.ValidAccessToken(res.AccessToken) {
		return fmt.Errorf("GET /api/token/%s after the consent: %d %s %s", name, status, res.Error, res.Message)
	}
	if err := getStatus(client, base+"/api/connections/"+name, &st); err != nil {
		return err
	}
	step("4e. GET /api/token/%s -> %d, expires_in %ds; token-endpoint calls: %d (the consent stored a fresh token); state %q: healthy again, with no restart",
		name, status, res.ExpiresIn, calls()-n1, st.State)
	if st.State != "healthy" {
		return fmt.Errorf("connection %s is %q after the consent, want healthy", name, st.State)
	}
	return nil
}

// getJSON is a GET of the token route that returns the answer whatever
// its status.
func getJSON(c *http.Client, u string) (tokenResponse, int, error) {
	var r tokenResponse
	res, err := c.Get(u)
	if err != nil {
		return r, 0, err
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&r); err != nil {
		return r, res.StatusCode, fmt.Errorf("GET %s: %d, not JSON: %w", u, res.StatusCode, err)
	}
	return r, res.StatusCode, nil
}

// getStatus reads a status route into v.
func getStatus(c *http.Client, u string, v any) error {
	res, err := c.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", u, res.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w: %s", u, err, b)
	}
	return nil
}
