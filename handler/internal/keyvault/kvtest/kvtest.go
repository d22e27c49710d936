// Package kvtest provides an in-process Azure Key Vault for tests: an
// httptest server that speaks the secrets REST API the way azsecrets uses it,
// and a ready azsecrets.Client pointed at it.
//
// The double keeps every version of every secret in memory, counts the
// requests it serves per operation (so a test can count Key Vault traffic),
// and can be told to misbehave: fail the next requests with a status and
// Key Vault's error codes, hold or slow requests, disable or soft-delete a
// secret. It serves
//
//	GET  /secrets/{name}/[{version}]   get (latest when version is empty)
//	PUT  /secrets/{name}               set: a new version
//	GET  /secrets                      list, paged through nextLink
//
// and answers everything else 400 or 404 with Key Vault's error body. Every
// request must carry an api-version, as Key Vault requires.
//
// By default it serves plain HTTP and the client has no credential (azcore
// then sends no Authorization header, and the Key Vault challenge never
// happens). With Options.TLS it serves HTTPS and answers an unauthenticated
// request with Key Vault's 401 challenge, so the client's real challenge flow
// runs, against a fake credential.
package kvtest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// Op is a Key Vault operation the double serves.
type Op string

const (
	// OpGet reads a secret: GET /secrets/{name}/{version}.
	OpGet Op = "get"
	// OpSet writes a new version: PUT /secrets/{name}.
	OpSet Op = "set"
	// OpList reads one page of the secret list: GET /secrets. A list of
	// n pages is n requests.
	OpList Op = "list"
)

// TenantID is the tenant the TLS challenge names, a fixed GUID.
const TenantID = "3c6e4fbb-4a1c-4b93-9c05-6e3d1f1f2a7d"

// Resource is the resource the TLS challenge names: the one every public
// cloud vault names. Clients must set DisableChallengeResourceVerification,
// since the double's host is not under vault.azure.net.
const Resource = "https://vault.azure.net"

// MaxValueBytes is the largest value the double stores, Key Vault's 25 KB.
const MaxValueBytes = 25 * 1024

// DefaultPageSize is how many secrets one list page holds unless
// Options.PageSize says otherwise: small, so that tests exercise paging
// (Key Vault's own pages hold 25).
const DefaultPageSize = 3

// Options configure a Vault. The zero value is a plain-HTTP vault with
// pages of DefaultPageSize.
type Options struct {
	// TLS serves HTTPS and requires a bearer token, answering requests
	// without one with Key Vault's challenge. The Vault's Client then has
	// a fake credential and DisableChallengeResourceVerification set.
	TLS bool
	// PageSize is how many secrets a list page holds; zero means
	// DefaultPageSize. A maxresults query parameter overrides it.
	PageSize int
	// Now is the vault's clock, used for the created and updated
	// attributes. Nil means time.Now.
	Now func() time.Time
	// ClientOptions replace the options the Client is made with. The
	// Transport (in TLS mode) and DisableChallengeResourceVerification
	// are set regardless. Nil means retries that are fast and bounded:
	// two retries of a retryable status, delays of milliseconds, and none
	// at all after a Retry-After longer than 20 ms (azcore gives up rather
	// than wait longer than its cap), so a fault with a Retry-After reaches
	// the caller at once.
	ClientOptions *azsecrets.ClientOptions
	// Credential is the Client's credential in TLS mode. Nil means an
	// azcore/fake.TokenCredential, whose token is "fake_token". Ignored
	// without TLS.
	Credential azcore.TokenCredential
	// Limits makes the vault enforce Key Vault's documented limits per
	// vault: beyond WritesPer10s secret writes, or OthersPer10s other
	// requests, in the last 10 seconds (on the vault's clock), a request
	// is answered 429 Throttled with a Retry-After of the whole seconds
	// until it would fit, and is not counted towards the limit, as Key
	// Vault does not count it.
	Limits bool
	// InProcess serves the Client without a socket: its transport calls
	// the vault's handler directly. A synctest bubble's clock stands still
	// while a goroutine waits on a real socket, so a test in a bubble
	// needs this. URL is then a placeholder; HTTPClient is unusable.
	// Incompatible with TLS.
	InProcess bool
	// Certificate, in TLS mode, is the server's certificate instead of
	// httptest's (which names only 127.0.0.1 and example.com): a test
	// that reaches the vault under a Key Vault host name, through a
	// proxy, gives one for that name.
	Certificate *tls.Certificate
	// LatestOnly keeps only the latest version of each secret, for tests
	// that write hundreds of thousands of versions. Versions and Writes
	// then see only the latest.
	LatestOnly bool
}

// Key Vault's limits for secrets per vault per region, in any 10 seconds:
// 300 secret writes and 4,000 other transactions
// (https://learn.microsoft.com/azure/key-vault/general/service-limits,
// "Secrets, managed storage account keys, and vault transactions"). A
// throttled request does not count towards them
// (https://learn.microsoft.com/azure/key-vault/general/overview-throttling).
const (
	WritesPer10s = 300
	OthersPer10s = 4000
)

// Version is one version of a secret as the vault keeps it.
type Version struct {
	// Name is the secret's name as first written (names are
	// case-insensitive).
	Name string
	// ID is the version identifier: 32 hex digits.
	ID          string
	Value       string
	ContentType string
	Tags        map[string]string
	Enabled     bool
	// Expires and NotBefore are zero when not set. The wire format keeps
	// whole seconds, and so do these.
	Expires   time.Time
	NotBefore time.Time
	// Created is when the version was written; Updated when its
	// attributes last changed (the same, unless it was disabled since).
	Created time.Time
	Updated time.Time
	// Seq orders writes across the whole vault: the first version
	// written, of any secret, has Seq 1.
	Seq int
}

// Counts is how many requests of each operation the vault has served,
// failed ones included. Requests answered with the TLS challenge count as
// Challenges only.
type Counts struct {
	Gets, Sets, Lists int
	// KeyGets and Signs count the keys API's requests (keys.go).
	KeyGets, Signs int
	Challenges     int
	// Throttled counts the requests answered 429 under Options.Limits
	// (also counted in Gets, Sets or Lists).
	Throttled int
}

// Fault is an error response the vault sends instead of serving a request.
type Fault struct {
	// Secret limits the fault to requests for this secret (compared
	// case-insensitively). Empty matches any. Ignored for OpList.
	Secret string
	// Status is the HTTP status, e.g. 403.
	Status int
	// Code is error.code in the body, e.g. "Forbidden".
	Code string
	// InnerCode is error.innererror.code, e.g. "ForbiddenByRbac"; empty
	// sends no innererror.
	InnerCode string
	// Message is error.message.
	Message string
	// RetryAfter, when positive, is sent as a Retry-After header in whole
	// seconds (rounded up).
	RetryAfter time.Duration
	// Skip lets this many matching requests through before the fault
	// applies, e.g. Skip 1 on OpList fails the second page.
	Skip int
}

// Faults Key Vault is known to send, with its codes and the shape of its
// messages.
var (
	// ForbiddenByRbac: the caller has no role that allows the operation.
	ForbiddenByRbac = Fault{Status: http.StatusForbidden, Code: "Forbidden", InnerCode: "ForbiddenByRbac",
		Message: "Caller is not authorized to perform action on resource. If role assignments, deny assignments or role definitions were changed recently, please observe propagation time. Caller: appid=00000000-0000-0000-0000-000000000000;oid=11111111-1111-1111-1111-111111111111 Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action' Assignment: (not found) Vault: kvtest;location=westeurope"}
	// ForbiddenByFirewall: the vault's network rules refuse the caller's
	// address.
	ForbiddenByFirewall = Fault{Status: http.StatusForbidden, Code: "Forbidden", InnerCode: "ForbiddenByFirewall",
		Message: "Client address is not authorized and caller is not a trusted service. Client address: 203.0.113.7 Caller: appid=00000000-0000-0000-0000-000000000000 Vault: kvtest;location=westeurope"}
	// Unauthorized: the token was refused, e.g. issued by another tenant.
	Unauthorized = Fault{Status: http.StatusUnauthorized, Code: "Unauthorized",
		Message: "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/" + TenantID + "/, found https://sts.windows.net/00000000-0000-0000-0000-000000000000/."}
	// ServiceUnavailable: a transient service failure.
	ServiceUnavailable = Fault{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable",
		Message: "The service is temporarily unavailable."}
)

// Throttled is Key Vault's 429, with a Retry-After of d (none when d is 0).
func Throttled(d time.Duration) Fault {
	return Fault{Status: http.StatusTooManyRequests, Code: "Throttled", RetryAfter: d,
		Message: "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}
}

// Vault is a running Key Vault double. Its methods are safe for concurrent
// use, with each other and with the requests it serves.
type Vault struct {
	// URL is the vault URL: http://127.0.0.1:port, or https:// with TLS.
	URL string
	// Client is an azsecrets client for URL.
	Client *azsecrets.Client

	srv      *httptest.Server
	tls      bool
	pageSize int
	now      func() time.Time

	limits     bool
	latestOnly bool

	mu      sync.Mutex
	secrets map[string]*secret // by lower-case name
	// gets counts the reads of each secret, by lower-case name.
	gets map[string]int
	// keys are the keys API's keys, by lower-case name (keys.go).
	keys map[string]*key
	// names is every key of secrets, sorted, for the list's pages; nil
	// when a secret was added or purged since it was sorted.
	names []string
	// writes and others are the times of the requests served in the last
	// 10 seconds, oldest first (with Options.Limits).
	writes, others []time.Time
	seq            int
	counts         Counts
	faults         map[Op][]*pendingFault
	gates          map[Op]*Gate
	delays         map[Op]time.Duration
	closed         bool
}

type secret struct {
	versions []*Version // oldest first
	deleted  bool
}

type pendingFault struct {
	Fault
	left int
}

// New starts a Vault and closes it when the test ends. o may be nil.
func New(t testing.TB, o *Options) *Vault {
	t.Helper()
	if o == nil {
		o = &Options{}
	}
	v := &Vault{
		tls:      o.TLS,
		pageSize: o.PageSize,
		now:      o.Now,
		secrets:  map[string]*secret{},
		gets:     map[string]int{},
		keys:     map[string]*key{},
		faults:   map[Op][]*pendingFault{},
		gates:    map[Op]*Gate{},
		delays:   map[Op]time.Duration{},
	}
	if v.pageSize <= 0 {
		v.pageSize = DefaultPageSize
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.limits, v.latestOnly = o.Limits, o.LatestOnly
	h := http.HandlerFunc(v.serveHTTP)
	switch {
	case o.InProcess:
		v.URL = "http://kvtest.invalid"
	case o.TLS && o.Certificate != nil:
		v.srv = httptest.NewUnstartedServer(h)
		v.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*o.Certificate}, MinVersion: tls.VersionTLS12}
		v.srv.StartTLS()
	case o.TLS:
		v.srv = httptest.NewTLSServer(h)
	default:
		v.srv = httptest.NewServer(h)
	}
	if v.srv != nil {
		v.URL = v.srv.URL
	}
	t.Cleanup(v.Close)

	var co azsecrets.ClientOptions
	if o.ClientOptions != nil {
		co = *o.ClientOptions
	} else {
		co.Retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: time.Millisecond, MaxRetryDelay: 20 * time.Millisecond}
	}
	var cred azcore.TokenCredential
	if o.TLS {
		cred = o.Credential
		if cred == nil {
			cred = &fake.TokenCredential{}
		}
		co.Transport = v.srv.Client()
		co.DisableChallengeResourceVerification = true
	}
	if o.InProcess {
		co.Transport = inProcess{h}
	}
	c, err := azsecrets.NewClient(v.URL, cred, &co)
	if err != nil {
		t.Fatalf("kvtest: azsecrets.NewClient: %v", err)
	}
	v.Client = c
	return v
}

// HTTPClient returns an http.Client that trusts the vault's certificate
// (in TLS mode), for a client made with other options than Client's: pass
// it as azcore.ClientOptions.Transport.
func (v *Vault) HTTPClient() *http.Client { return v.srv.Client() }

// Close releases every held request and shuts the server down. New
// arranges for it to run when the test ends; calling it again does
// nothing.
func (v *Vault) Close() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	gates := slices.Collect(maps.Values(v.gates))
	v.mu.Unlock()
	for _, g := range gates {
		g.Release()
	}
	if v.srv != nil {
		v.srv.Close()
	}
}

// inProcess is a transport that serves a request by calling the handler.
type inProcess struct{ h http.Handler }

func (t inProcess) Do(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// throttle applies Options.Limits to a request of op: it reports the
// Retry-After of a 429, or zero after counting the request in its window.
func (v *Vault) throttle(op Op) time.Duration {
	if !v.limits {
		return 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	window, limit := &v.others, OthersPer10s
	if op == OpSet {
		window, limit = &v.writes, WritesPer10s
	}
	cut := 0
	for cut < len(*window) && !(*window)[cut].After(now.Add(-10*time.Second)) {
		cut++
	}
	*window = (*window)[cut:]
	if len(*window) >= limit {
		v.counts.Throttled++
		// Fits once the oldest requests in the window have left it.
		return max((*window)[len(*window)-limit].Add(10*time.Second).Sub(now), time.Millisecond)
	}
	*window = append(*window, now)
	return 0
}

// Put stores a new version of name directly, as an operator would with
// the portal: no request is counted and no fault applies. A zero expires
// sets no expiry. It returns the version written.
func (v *Vault) Put(name, value string, expires time.Time) Version {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.write(name, value, "", nil, true, expires, time.Time{}).clone()
}

// Value returns the value of the latest version of name; false if there is
// none or the secret is deleted.
func (v *Vault) Value(name string) (string, bool) {
	ver, ok := v.Latest(name)
	return ver.Value, ok
}

// Latest returns the latest version of name; false if there is none or the
// secret is deleted.
func (v *Vault) Latest(name string) (Version, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil || s.deleted || len(s.versions) == 0 {
		return Version{}, false
	}
	return s.versions[len(s.versions)-1].clone(), true
}

// Versions returns every version of name, oldest first, deleted or not.
func (v *Vault) Versions(name string) []Version {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil {
		return nil
	}
	out := make([]Version, len(s.versions))
	for i, ver := range s.versions {
		out[i] = ver.clone()
	}
	return out
}

// Writes returns every version of every secret in the order written
// (by Seq), so a test can check which secret was written first.
func (v *Vault) Writes() []Version {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []Version
	for _, s := range v.secrets {
		for _, ver := range s.versions {
			out = append(out, ver.clone())
		}
	}
	slices.SortFunc(out, func(a, b Version) int { return a.Seq - b.Seq })
	return out
}

// GetsOf returns how many times the secret name was read (a get of any
// version), whatever the answer.
func (v *Vault) GetsOf(name string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gets[strings.ToLower(name)]
}

// Counts returns how many requests the vault has served.
func (v *Vault) Counts() Counts {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.counts
}

// ResetCounts sets every count to zero.
func (v *Vault) ResetCounts() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.counts = Counts{}
}

// Fail makes the next n requests of op that match f.Secret fail with f.
// Faults queue: a second Fail applies once the first is used up. Every
// attempt counts, including the azcore client's own retries.
func (v *Vault) Fail(op Op, n int, f Fault) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.faults[op] = append(v.faults[op], &pendingFault{Fault: f, left: n})
}

// Disable disables the latest version of name, as an operator would. Key
// Vault then refuses to read it (403 SecretDisabled) until a new version
// is written. It reports whether there was a version to disable.
func (v *Vault) Disable(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil || s.deleted || len(s.versions) == 0 {
		return false
	}
	latest := s.versions[len(s.versions)-1]
	latest.Enabled = false
	latest.Updated = v.now().Truncate(time.Second)
	return true
}

// SoftDelete deletes name the way a vault with soft delete does: reads
// answer 404 SecretNotFound, the list leaves it out, and writes answer 409
// ObjectIsDeletedButRecoverable until Recover or Purge. It reports whether
// the secret existed.
func (v *Vault) SoftDelete(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil || s.deleted {
		return false
	}
	s.deleted = true
	return true
}

// Recover undoes SoftDelete.
func (v *Vault) Recover(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.secrets[strings.ToLower(name)]; s != nil {
		s.deleted = false
	}
}

// Purge removes name and all its versions.
func (v *Vault) Purge(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.secrets, strings.ToLower(name))
	v.names = nil
}

// Delay makes every later request of op wait d before it is served (or
// until the client gives up). Zero removes the delay.
func (v *Vault) Delay(op Op, d time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.delays[op] = d
}

// Gate holds requests of one operation until released.
type Gate struct {
	arrived chan string
	release chan struct{}
	once    sync.Once
}

// Arrived receives the secret name of each request that starts waiting at
// the gate ("" for a list), so a test can wait until a request is in
// flight. It buffers 64 arrivals and drops any beyond.
func (g *Gate) Arrived() <-chan string { return g.arrived }

// Release lets every waiting and later request through. It may be called
// more than once.
func (g *Gate) Release() { g.once.Do(func() { close(g.release) }) }

// Hold makes requests of op wait at a gate, after they are counted and
// before any fault or work, until the gate is released or the request's
// client gives up. Holding an op that is already held returns the same
// gate. Close releases every gate.
func (v *Vault) Hold(op Op) *Gate {
	v.mu.Lock()
	defer v.mu.Unlock()
	if g := v.gates[op]; g != nil {
		return g
	}
	g := &Gate{arrived: make(chan string, 64), release: make(chan struct{})}
	if v.closed {
		g.Release()
	}
	v.gates[op] = g
	return g
}

// write adds a version. The caller holds v.mu.
func (v *Vault) write(name, value, contentType string, tags map[string]string, enabled bool, expires, notBefore time.Time) *Version {
	key := strings.ToLower(name)
	s := v.secrets[key]
	if s == nil {
		s = &secret{}
		v.secrets[key] = s
		v.names = nil
	} else if len(s.versions) > 0 {
		name = s.versions[0].Name
	}
	v.seq++
	now := v.now().Truncate(time.Second)
	ver := &Version{
		Name: name, ID: fmt.Sprintf("%032x", v.seq), Value: value, ContentType: contentType,
		Tags: maps.Clone(tags), Enabled: enabled, Created: now, Updated: now, Seq: v.seq,
	}
	if !expires.IsZero() {
		ver.Expires = expires.Truncate(time.Second)
	}
	if !notBefore.IsZero() {
		ver.NotBefore = notBefore.Truncate(time.Second)
	}
	if v.latestOnly {
		s.versions = s.versions[:0]
	}
	s.versions = append(s.versions, ver)
	return ver
}

func (ver *Version) clone() Version {
	c := *ver
	c.Tags = maps.Clone(ver.Tags)
	return c
}

// serveHTTP routes a request the way Key Vault's secrets API does.
func (v *Vault) serveHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var op Op
	var name, version string
	switch {
	case len(parts) == 1 && parts[0] == "secrets" && r.Method == http.MethodGet:
		op = OpList
	case len(parts) == 2 && parts[0] == "secrets" && r.Method == http.MethodPut:
		op, name = OpSet, parts[1]
	case (len(parts) == 2 || len(parts) == 3) && parts[0] == "secrets" && r.Method == http.MethodGet:
		op, name = OpGet, parts[1]
		if len(parts) == 3 {
			version = parts[2]
		}
	case len(parts) >= 2 && parts[0] == "keys":
		// The keys API (keys.go).
		if !v.challenged(w, r) {
			v.serveKeys(w, r, parts[1:])
		}
		return
	default:
		writeError(w, http.StatusNotFound, "NotFound", "", fmt.Sprintf("kvtest: no route for %s %s", r.Method, r.URL.Path), 0)
		return
	}
	if v.challenged(w, r) {
		return
	}

	v.mu.Lock()
	switch op {
	case OpGet:
		v.counts.Gets++
		v.gets[strings.ToLower(name)]++
	case OpSet:
		v.counts.Sets++
	case OpList:
		v.counts.Lists++
	}
	gate, delay := v.gates[op], v.delays[op]
	v.mu.Unlock()

	if gate != nil {
		select {
		case gate.arrived <- name:
		default:
		}
		select {
		case <-gate.release:
		case <-r.Context().Done():
			return
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	if r.URL.Query().Get("api-version") == "" {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid or missing api-version.", 0)
		return
	}
	if d := v.throttle(op); d > 0 {
		f := Throttled(d)
		writeError(w, f.Status, f.Code, "", f.Message, f.RetryAfter)
		return
	}
	if f, ok := v.takeFault(op, name); ok {
		writeError(w, f.Status, f.Code, f.InnerCode, f.Message, f.RetryAfter)
		return
	}
	if op != OpList && !validName(name) {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "The request URI contains an invalid name: "+name, 0)
		return
	}
	switch op {
	case OpGet:
		v.serveGet(w, name, version)
	case OpSet:
		v.serveSet(w, r, name)
	case OpList:
		v.serveList(w, r)
	}
}

// challenged answers a request without a bearer token, in TLS mode, with
// Key Vault's 401 challenge, and reports whether it did.
func (v *Vault) challenged(w http.ResponseWriter, r *http.Request) bool {
	if !v.tls || strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		return false
	}
	v.mu.Lock()
	v.counts.Challenges++
	v.mu.Unlock()
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, TenantID, Resource))
	writeError(w, http.StatusUnauthorized, "Unauthorized", "", "AKV10000: Request is missing a Bearer or PoP token.", 0)
	return true
}

func (v *Vault) takeFault(op Op, name string) (Fault, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	q := v.faults[op]
	for i, f := range q {
		if op != OpList && f.Secret != "" && !strings.EqualFold(f.Secret, name) {
			continue
		}
		if f.Skip > 0 {
			f.Skip--
			return Fault{}, false
		}
		f.left--
		if f.left <= 0 {
			v.faults[op] = slices.Delete(q, i, i+1)
		}
		return f.Fault, true
	}
	return Fault{}, false
}

func (v *Vault) serveGet(w http.ResponseWriter, name, version string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.secrets[strings.ToLower(name)]
	if s == nil || s.deleted || len(s.versions) == 0 {
		writeError(w, http.StatusNotFound, "SecretNotFound", "", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", name), 0)
		return
	}
	ver := s.versions[len(s.versions)-1]
	if version != "" {
		i := slices.IndexFunc(s.versions, func(x *Version) bool { return x.ID == version })
		if i < 0 {
			writeError(w, http.StatusNotFound, "SecretNotFound", "", fmt.Sprintf("A secret with (name/id) %s/%s was not found in this key vault.", name, version), 0)
			return
		}
		ver = s.versions[i]
	}
	if !ver.Enabled {
		writeError(w, http.StatusForbidden, "Forbidden", "SecretDisabled", "Operation get is not allowed on a disabled secret.", 0)
		return
	}
	writeJSON(w, v.bundle(ver, true))
}

// setRequest is the body of PUT /secrets/{name}.
type setRequest struct {
	Value       *string `json:"value"`
	ContentType string  `json:"contentType"`
	Attributes  *struct {
		Enabled *bool  `json:"enabled"`
		Exp     *int64 `json:"exp"`
		Nbf     *int64 `json:"nbf"`
	} `json:"attributes"`
	Tags map[string]string `json:"tags"`
}

func (v *Vault) serveSet(w http.ResponseWriter, r *http.Request, name string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req setRequest
	if err := json.Unmarshal(body, &req); err != nil || req.Value == nil {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Property value is required.", 0)
		return
	}
	if len(*req.Value) > MaxValueBytes {
		writeError(w, http.StatusBadRequest, "BadParameter", "", "Secret value is too large.", 0)
		return
	}
	enabled := true
	var expires, notBefore time.Time
	if a := req.Attributes; a != nil {
		if a.Enabled != nil {
			enabled = *a.Enabled
		}
		if a.Exp != nil {
			expires = time.Unix(*a.Exp, 0).UTC()
		}
		if a.Nbf != nil {
			notBefore = time.Unix(*a.Nbf, 0).UTC()
		}
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.secrets[strings.ToLower(name)]; s != nil && s.deleted {
		writeError(w, http.StatusConflict, "Conflict", "ObjectIsDeletedButRecoverable", fmt.Sprintf("Secret %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged.", name), 0)
		return
	}
	ver := v.write(name, *req.Value, req.ContentType, req.Tags, enabled, expires, notBefore)
	writeJSON(w, v.bundle(ver, true))
}

// listResult is a page of GET /secrets. NextLink is null on the last page,
// as Key Vault sends it.
type listResult struct {
	Value    []secretBundle `json:"value"`
	NextLink *string        `json:"nextLink"`
}

func (v *Vault) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := v.pageSize
	if n, err := strconv.Atoi(q.Get("maxresults")); err == nil && n > 0 {
		size = n
	}
	// The skip token is the last name served: stable under concurrent
	// writes, unlike an offset.
	after := q.Get("$skiptoken")

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.names == nil {
		v.names = slices.Sorted(maps.Keys(v.secrets))
	}
	// One page and whether another follows: a page costs its size, not
	// the vault's, so a walk of a large vault stays linear.
	var keys []string
	i, _ := slices.BinarySearch(v.names, after)
	for ; i < len(v.names) && len(keys) <= size; i++ {
		k := v.names[i]
		if s := v.secrets[k]; k > after && !s.deleted && len(s.versions) > 0 {
			keys = append(keys, k)
		}
	}
	page := listResult{Value: []secretBundle{}}
	for _, k := range keys[:min(size, len(keys))] {
		s := v.secrets[k]
		page.Value = append(page.Value, v.bundle(s.versions[len(s.versions)-1], false))
	}
	if len(keys) > size {
		next := url.Values{"api-version": {q.Get("api-version")}, "$skiptoken": {keys[size-1]}}
		if q.Has("maxresults") {
			next.Set("maxresults", q.Get("maxresults"))
		}
		link := v.URL + "/secrets?" + next.Encode()
		page.NextLink = &link
	}
	writeJSON(w, page)
}

type attributes struct {
	Enabled         bool   `json:"enabled"`
	Exp             *int64 `json:"exp,omitempty"`
	Nbf             *int64 `json:"nbf,omitempty"`
	Created         int64  `json:"created"`
	Updated         int64  `json:"updated"`
	RecoveryLevel   string `json:"recoveryLevel"`
	RecoverableDays int    `json:"recoverableDays"`
}

// secretBundle is Key Vault's SecretBundle (with a value) and SecretItem
// (without, and with an ID that names no version).
type secretBundle struct {
	Value       *string           `json:"value,omitempty"`
	ID          string            `json:"id"`
	ContentType string            `json:"contentType,omitempty"`
	Attributes  attributes        `json:"attributes"`
	Tags        map[string]string `json:"tags,omitempty"`
}

func (v *Vault) bundle(ver *Version, withValue bool) secretBundle {
	b := secretBundle{
		ID:          v.URL + "/secrets/" + ver.Name,
		ContentType: ver.ContentType,
		Tags:        ver.Tags,
		Attributes: attributes{
			Enabled: ver.Enabled, Created: ver.Created.Unix(), Updated: ver.Updated.Unix(),
			RecoveryLevel: "Recoverable+Purgeable", RecoverableDays: 90,
		},
	}
	if withValue {
		b.ID += "/" + ver.ID
		value := ver.Value
		b.Value = &value
	}
	if !ver.Expires.IsZero() {
		exp := ver.Expires.Unix()
		b.Attributes.Exp = &exp
	}
	if !ver.NotBefore.IsZero() {
		nbf := ver.NotBefore.Unix()
		b.Attributes.Nbf = &nbf
	}
	return b
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(body)
}

// writeError sends Key Vault's error body:
// {"error":{"code":..., "message":..., "innererror":{"code":...}}}.
func writeError(w http.ResponseWriter, status int, code, inner, message string, retryAfter time.Duration) {
	type innerError struct {
		Code string `json:"code"`
	}
	type errorBody struct {
		Code       string      `json:"code"`
		Message    string      `json:"message"`
		InnerError *innerError `json:"innererror,omitempty"`
	}
	e := errorBody{Code: code, Message: message}
	if inner != "" {
		e.InnerError = &innerError{Code: inner}
	}
	body, _ := json.Marshal(struct {
		Error errorBody `json:"error"`
	}{e})
	if retryAfter > 0 {
		secs := int64((retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// validName applies Key Vault's rule: 1-127 characters of 0-9, a-z, A-Z
// and '-', starting with a letter.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 127 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9') && c != '-') {
			return false
		}
	}
	return true
}
