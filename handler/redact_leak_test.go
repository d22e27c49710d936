package main

// The adversarial provider: for each encoding a provider could echo a
// secret in, and for each place it could put it, on the refresh path, the
// client-credentials path and the consent exchange, no log line, HTTP
// answer, status output, CLI output or consent page may carry the secret,
// in any encoding, whole or any 12 characters of it.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/local"
	redaction "github.com/tokenrefresher/tokenrefresher/handler/internal/redact"
)

// echoEncodings are the ways a provider may echo a value: encoded, split
// in two, prefixed, or cut to a piece.
var echoEncodings = map[string]func(string) string{
	"raw":         func(s string) string { return s },
	"query":       url.QueryEscape,
	"query lower": func(s string) string { return lowerHexEscapes(url.QueryEscape(s)) },
	"base64":      func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"base64url":   func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) },
	"basic":       func(s string) string { return base64.StdEncoding.EncodeToString([]byte("someone:" + s)) },
	"json escaped": func(s string) string {
		b, _ := json.Marshal(s)
		return strings.ReplaceAll(string(b[1:len(b)-1]), "/", `\/`)
	},
	"split":    func(s string) string { return s[:len(s)/2] + " ... " + s[len(s)/2:] },
	"prefixed": func(s string) string { return "secret=x" + s + "y" },
	"piece":    func(s string) string { return "..." + s[5:5+redaction.Window] + "..." },
}

// echoPlaces are where the provider puts the echo.
var echoPlaces = map[string]func(w http.ResponseWriter, echo string){
	"error_description": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_request", "error_description": "cannot use " + echo})
	},
	"error code": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": echo, "error_uri": "https://idp.example/" + url.PathEscape(echo), "trace_id": echo})
	},
	"header": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "application/x-"+strings.Map(func(r rune) rune {
			if r == ' ' || r == '/' || r == '=' || r == '%' {
				return '-'
			}
			return r
		}, echo))
		w.Header().Set("WWW-Authenticate", `Basic error="`+echo+`"`)
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
	},
	"non-JSON body": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, "invalid_client: the secret %s is wrong", echo)
	},
	"broken JSON body": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = fmt.Fprintf(w, `{"access_token":"%s","token_type":"Bearer",`, echo)
	},
	"string expires_in": func(w http.ResponseWriter, echo string) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-plain-0000000000", "token_type": "Bearer", "expires_in": echo})
	},
}

// lowerHexEscapes writes the hex digits of s's %XX escapes in lower case,
// as some encoders do.
func lowerHexEscapes(s string) string {
	parts := strings.Split(s, "%")
	for i := 1; i < len(parts); i++ {
		if len(parts[i]) >= 2 {
			parts[i] = strings.ToLower(parts[i][:2]) + parts[i][2:]
		}
	}
	return strings.Join(parts, "%")
}

// checkNoEcho fails when output holds any 12 characters of s in any of
// the forms a provider could have echoed it in.
func checkNoEcho(t *testing.T, where, output, s string) {
	t.Helper()
	forms := []string{s, url.QueryEscape(s), lowerHexEscapes(url.QueryEscape(s))}
	b, _ := json.Marshal(s)
	forms = append(forms, string(b[1:len(b)-1]))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for pad := range 3 {
			e := enc.EncodeToString(append(make([]byte, pad), s...))
			// Only the characters that depend on s alone.
			forms = append(forms, e[(8*pad+5)/6:8*(pad+len(s))/6])
		}
	}
	for _, f := range forms {
		for i := 0; i+redaction.Window <= len(f); i++ {
			if strings.Contains(output, f[i:i+redaction.Window]) {
				t.Errorf("%s holds characters %d-%d of a form of the secret", where, i, i+redaction.Window)
				return
			}
		}
	}
}

func TestAdversarialProviderEchoesNoSecret(t *testing.T) {
	t.Parallel()
	for _, grant := range []broker.GrantType{broker.GrantRefreshToken, broker.GrantClientCredentials} {
		for ename, enc := range echoEncodings {
			for pname, place := range echoPlaces {
				t.Run(fmt.Sprintf("%s/%s/%s", grant, ename, pname), func(t *testing.T) {
					t.Parallel()
					script := func(w http.ResponseWriter, r tokenRequest, _ func(string) string) {
						echo := enc(r.clientSecret)
						if r.refreshToken != "" && pname != "header" {
							echo += " " + enc(r.refreshToken)
						}
						place(w, echo)
					}
					var w *leakWorld
					if grant == broker.GrantClientCredentials {
						w = newLeakWorld(t, script, nil, grant)
					} else {
						w = newLeakWorld(t, script, nil)
					}
					status, first := w.exercise()
					if status == http.StatusOK {
						t.Fatalf("the first token call succeeded: %v", first["error"])
					}
					w.statusOutput()
					all := w.checkNoLeaks()
					w.mu.Lock()
					secrets := w.secrets
					w.mu.Unlock()
					for _, sec := range secrets {
						if !sec.whole && !strings.ContainsAny(sec.value, "%") {
							checkNoEcho(t, "the logs, answers and status output", all, sec.value)
						}
					}
				})
			}
		}
	}
}

// TestConsentExchangeEchoesNoSecret runs `handler connect` against the
// adversarial provider, which echoes the client secret, the code and the
// verifier in its answer to the code exchange: the page the browser shows
// and what the terminal prints (the command's log included) carry none of
// them.
func TestConsentExchangeEchoesNoSecret(t *testing.T) {
	t.Parallel()
	const code = "code-0123456789abcdefghij"
	clientSecret := secretValue("cs")
	for ename, enc := range echoEncodings {
		for pname, place := range echoPlaces {
			t.Run(ename+"/"+pname, func(t *testing.T) {
				t.Parallel()
				verifiers := make(chan string, 1)
				provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_ = r.ParseForm()
					verifiers <- r.PostForm.Get("code_verifier")
					echo := enc(clientSecret) + " " + enc(r.PostForm.Get("code")) + " " + enc(r.PostForm.Get("code_verifier"))
					if pname == "header" {
						echo = enc(clientSecret)
					}
					place(w, echo)
				}))
				t.Cleanup(provider.Close)
				state := filepath.Join(t.TempDir(), "state")
				store, err := local.NewStore(state)
				if err != nil {
					t.Fatal(err)
				}
				if err := store.Set(context.Background(), leakConn+"-client-secret", broker.StoredSecret{Value: broker.Secret(clientSecret)}); err != nil {
					t.Fatal(err)
				}
				env := map[string]string{"LOCAL_STATE_DIR": state, "CONNECTIONS": fmt.Sprintf(
					`{"connections": [{"name": %q, "tokenUrl": %q, "clientAuth": "body", "clientId": %q}]}`, leakConn, provider.URL+"/token", leakClientID)}

				r := &connectRun{t: t, stdout: newLineLog(), stderr: newLineLog(), exit: make(chan int, 1)}
				go func() {
					r.exit <- run(context.Background(), []string{"connect", leakConn, "-no-browser", "-timeout", "1m",
						"-authorization-url", "https://idp.example/authorize"}, func(k string) string { return env[k] }, nil, r.stdout, r.stderr)
				}()
				urls := r.waitIndented(2)
				if len(urls) < 2 {
					t.Fatalf("handler connect printed no addresses: exit %d", r.wait())
				}
				authURL, err := url.Parse(urls[1])
				if err != nil {
					t.Fatal(err)
				}
				res, err := http.Get(urls[0] + "?state=" + url.QueryEscape(authURL.Query().Get("state")) + "&code=" + code)
				if err != nil {
					t.Fatal(err)
				}
				page, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if exit := r.wait(); exit != 1 {
					t.Fatalf("handler connect exit %d, want 1: the exchange must fail", exit)
				}
				var verifier string
				select {
				case verifier = <-verifiers:
				default:
					t.Fatal("the provider saw no code exchange")
				}
				out := string(page) + "\n" + r.stdout.String() + "\n" + r.stderr.String()
				for _, s := range []string{clientSecret, code, verifier} {
					checkNoEcho(t, "the consent page or the terminal", out, s)
				}
			})
		}
	}
}
