package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Modes the handler runs in; see Settings.Mode.
const (
	// ModeFunctions: the Azure Functions host started the handler, forwards
	// HTTP requests to it and drives the timer.
	ModeFunctions = "functions"
	// ModeStandalone: no host; the handler listens on ListenAddr and runs
	// the sweep on its own schedule.
	ModeStandalone = "standalone"
)

// Settings is everything the handler reads from the environment (app
// settings, in Azure).
type Settings struct {
	// FunctionsPort is FUNCTIONS_CUSTOMHANDLER_PORT, set by the Functions
	// host. Set: Functions mode, listen on 127.0.0.1:FunctionsPort.
	FunctionsPort string
	// ListenAddr is LISTEN_ADDR, where standalone mode listens (default
	// 127.0.0.1:8080).
	ListenAddr string

	// ConnectionsFile is CONNECTIONS_FILE, the path of the connections
	// JSON. Exactly one of it and ConnectionsJSON is set.
	ConnectionsFile string
	// ConnectionsJSON is CONNECTIONS, the same JSON inline (Bicep passes it
	// this way).
	ConnectionsJSON string
	// ConnectionsBlob is CONNECTIONS_BLOB, "<container>/<blob>" in the
	// lock storage account: the connections file lives there and running
	// instances re-read it when it changes (package connblob). Exactly one
	// of ConnectionsFile, ConnectionsJSON and ConnectionsBlob is set.
	ConnectionsBlob string

	// KeyVaultURL is KEY_VAULT_URL. Set: secrets live in that vault;
	// empty: in the local store under LocalStateDir.
	KeyVaultURL string
	// LocalStateDir is LOCAL_STATE_DIR (default ".tokenrefresher").
	LocalStateDir string

	// StorageConnectionString is AzureWebJobsStorage. It may carry an
	// account key: Settings never prints it.
	StorageConnectionString string
	// StorageBlobServiceURI is AzureWebJobsStorage__blobServiceUri
	// (identity-based connection).
	StorageBlobServiceURI string
	// StorageAccountName is AzureWebJobsStorage__accountName
	// (identity-based connection).
	StorageAccountName string
	// LockContainer is LOCK_CONTAINER, the blob container holding the
	// lock blobs (default "token-locks").
	LockContainer string
	// AzureClientID is AZURE_CLIENT_ID, the client id of a user-assigned
	// managed identity.
	AzureClientID string

	// ProviderTimeout is PROVIDER_TIMEOUT, the budget of a whole token
	// request, retries included (default 20s).
	ProviderTimeout time.Duration
	// ProviderAttemptTimeout is PROVIDER_ATTEMPT_TIMEOUT, the budget of
	// one HTTP attempt (default 10s).
	ProviderAttemptTimeout time.Duration
	// ProviderMaxResponseBytes is PROVIDER_MAX_RESPONSE_BYTES, the most of
	// a token response that is read (default 1 MiB).
	ProviderMaxResponseBytes int64
	// LockWait is LOCK_WAIT, how long a request waits for another
	// refresh of the same connection (default 30s, below the 60 s default
	// timeout of an ADF Web activity).
	LockWait time.Duration
	// LeaseDuration is LOCK_LEASE_DURATION, the blob lease's duration
	// (15s-60s, Azure's bounds; default 30s). The lease is renewed while
	// held, so this only bounds how long a crashed instance blocks others.
	LeaseDuration time.Duration
	// SweepInterval is SWEEP_INTERVAL, how often standalone mode sweeps
	// (default 5m). In Functions mode the timer's schedule applies.
	SweepInterval time.Duration
	// KeyVaultWriteBudget is KEY_VAULT_WRITE_BUDGET, the most secret
	// writes this instance makes to Key Vault in any 10 seconds (default
	// 150, half of the vault's 300; keyvault.Pacer).
	KeyVaultWriteBudget int
	// AccessTokenStore is ACCESS_TOKEN_STORE, where the shared access
	// token is kept: AccessTokensInStore (default: the secret store, as
	// DESIGN.md lays it out) or AccessTokensInBlob (beside the lock, in
	// the lock blob, sealed under the write-ahead key: one Key Vault write
	// per rotating refresh instead of two; broker.Options.
	// AccessTokensBesideLock). Blob needs the blob lock.
	AccessTokenStore string

	// AuthEnabled is WEBSITE_AUTH_ENABLED: App Service authentication is
	// on, so X-MS-CLIENT-PRINCIPAL-ID headers come from the platform. It
	// is trusted only in Functions mode: see PrincipalHeadersTrusted.
	AuthEnabled bool
	// StatusPageGroup is STATUS_PAGE_GROUP, the object id of the Entra
	// group whose members may open the signed-in status page
	// (/api/operator/status) through App Service authentication; empty:
	// that page refuses everyone.
	StatusPageGroup string
	// TokenCallers is TOKEN_CALLERS, the object ids (comma-separated) the
	// token route serves once STATUS_PAGE_GROUP lets people through App
	// Service authentication: Data Factory's managed identity, so that a
	// signed-in operator takes no token (functions/operator.go).
	TokenCallers []string
	// APIKeySecret is API_KEY_SECRET, the name of the secret in the store
	// (Key Vault or the local store) that holds the key standalone mode
	// requires of callers, in the x-functions-key header or the code
	// query parameter, as Azure Functions takes its function keys.
	// Required when standalone mode listens beyond loopback; not used in
	// Functions mode, where the host checks the keys.
	APIKeySecret string
	// LogLevel is LOG_LEVEL: debug, info (default), warn or error.
	LogLevel slog.Level
}

// Defaults of the settings that have one.
const (
	DefaultListenAddr               = "127.0.0.1:8080"
	DefaultLocalStateDir            = ".tokenrefresher"
	DefaultLockContainer            = "token-locks"
	DefaultProviderTimeout          = 20 * time.Second
	DefaultProviderAttemptTimeout   = 10 * time.Second
	DefaultProviderMaxResponseBytes = 1 << 20
	DefaultLockWait                 = 30 * time.Second
	DefaultLeaseDuration            = 30 * time.Second
	DefaultSweepInterval            = 5 * time.Minute
	// DefaultKeyVaultWriteBudget is half of the 300 secret writes Key
	// Vault allows per 10 s per vault (keyvault.VaultWritesPer10s).
	DefaultKeyVaultWriteBudget = 150
)

// Values of ACCESS_TOKEN_STORE.
const (
	AccessTokensInStore = "keyvault"
	AccessTokensInBlob  = "blob"
)

// Bounds of the settings. The 60 s ceiling is the default timeout of an
// ADF Web activity: a caller must get an answer, even a 503, before it
// gives up.
const (
	callerTimeout            = 60 * time.Second
	minTimeout               = time.Second
	minSweepInterval         = 10 * time.Second
	maxSweepInterval         = 24 * time.Hour
	minProviderResponseBytes = 1 << 10
	// golang.org/x/oauth2 reads at most 1 MiB of a token response, so a
	// larger limit would promise what is not delivered.
	maxProviderResponseBytes = 1 << 20
)

// SettingsError reports every bad setting at once.
type SettingsError struct {
	Problems []SettingProblem
}

// Error returns one line per problem.
func (e *SettingsError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// SettingProblem is one bad setting.
type SettingProblem struct {
	// Setting is the environment variable (or, when two conflict, both
	// names joined by " and ").
	Setting string
	// Value is the value found; empty when the setting is unset or its
	// value may hold a secret.
	Value string
	// Message says what is wrong and what is allowed.
	Message string
}

// String renders the problem as one line.
func (p SettingProblem) String() string {
	if p.Value == "" {
		return p.Setting + ": " + p.Message
	}
	return fmt.Sprintf("%s=%q: %s", p.Setting, p.Value, p.Message)
}

var (
	// Storage account names: 3-24 lower-case letters and digits.
	storageAccountPattern = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	// Blob container names: 3-63 of a-z, 0-9 and -, starting and ending
	// with a letter or digit, no "--".
	containerPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$`)
)

// callerBudget is what a token request may spend in waiting for the lock
// and calling the provider: ADF's 60 s less room for the store writes.
const callerBudget = 55 * time.Second

// LoadSettings reads the settings through getenv (os.Getenv, or a map in
// tests). Values are trimmed; blank counts as unset. Every bad setting is
// reported, in one *SettingsError.
func LoadSettings(getenv func(string) string) (Settings, error) {
	l := loader{getenv: getenv}
	s := Settings{
		FunctionsPort:           l.port("FUNCTIONS_CUSTOMHANDLER_PORT"),
		ListenAddr:              l.listenAddr("LISTEN_ADDR", DefaultListenAddr),
		ConnectionsFile:         l.get("CONNECTIONS_FILE"),
		ConnectionsJSON:         l.get("CONNECTIONS"),
		ConnectionsBlob:         l.match("CONNECTIONS_BLOB", validConnectionsBlob, "must be <container>/<blob> in the lock storage account, such as token-locks/connections.json (a container name is 3-63 characters of a-z, 0-9 and -)"),
		KeyVaultURL:             l.httpsURL("KEY_VAULT_URL", `"https://<vault>.vault.azure.net/"`, false),
		LocalStateDir:           l.getOr("LOCAL_STATE_DIR", DefaultLocalStateDir),
		StorageConnectionString: l.connectionString("AzureWebJobsStorage"),
		StorageBlobServiceURI:   l.httpsURL("AzureWebJobsStorage__blobServiceUri", `"https://<account>.blob.core.windows.net"`, true),
		StorageAccountName:      l.match("AzureWebJobsStorage__accountName", storageAccountPattern.MatchString, "must be a storage account name: 3-24 lower-case letters and digits"),
		LockContainer:           l.matchOr("LOCK_CONTAINER", DefaultLockContainer, containerPattern.MatchString, "must be a blob container name: 3-63 characters of a-z, 0-9 and -, starting and ending with a letter or digit, without \"--\""),
		AzureClientID:           l.match("AZURE_CLIENT_ID", guidPattern.MatchString, "must be the client id (a GUID) of the user-assigned managed identity"),

		ProviderTimeout:          l.duration("PROVIDER_TIMEOUT", DefaultProviderTimeout, minTimeout, callerTimeout-time.Second, "the whole token request, retries included, must end before the caller's 60 s timeout"),
		ProviderAttemptTimeout:   l.duration("PROVIDER_ATTEMPT_TIMEOUT", DefaultProviderAttemptTimeout, minTimeout, callerTimeout-time.Second, ""),
		ProviderMaxResponseBytes: l.bytes("PROVIDER_MAX_RESPONSE_BYTES", DefaultProviderMaxResponseBytes, minProviderResponseBytes, maxProviderResponseBytes),
		LockWait:                 l.duration("LOCK_WAIT", DefaultLockWait, minTimeout, callerTimeout-time.Second, "a waiting caller must get an answer before ADF's 60 s default timeout"),
		LeaseDuration:            l.duration("LOCK_LEASE_DURATION", DefaultLeaseDuration, 15*time.Second, 60*time.Second, "Azure blob leases last 15 to 60 seconds"),
		SweepInterval:            l.duration("SWEEP_INTERVAL", DefaultSweepInterval, minSweepInterval, maxSweepInterval, ""),
		KeyVaultWriteBudget:      l.integer("KEY_VAULT_WRITE_BUDGET", DefaultKeyVaultWriteBudget, 1, 300, "Key Vault allows 300 secret writes per 10 seconds per vault, shared by every instance"),
		AccessTokenStore: l.matchOr("ACCESS_TOKEN_STORE", AccessTokensInStore, func(v string) bool { return v == AccessTokensInStore || v == AccessTokensInBlob },
			`must be "keyvault" (the access token in the secret store, the default) or "blob" (beside the connection's lock in the lock storage account)`),

		AuthEnabled:     l.boolean("WEBSITE_AUTH_ENABLED"),
		StatusPageGroup: strings.ToLower(l.match("STATUS_PAGE_GROUP", guidPattern.MatchString, "must be the object id (a GUID) of the Entra group whose members may open the signed-in status page")),
		TokenCallers:    l.guidList("TOKEN_CALLERS"),
		APIKeySecret:    l.match("API_KEY_SECRET", broker.ValidSecretName, "must be the name of a secret in the store: 1-127 letters, digits and '-', starting with a letter"),
		LogLevel:        l.logLevel("LOG_LEVEL"),
	}

	// A group let through App Service authentication reaches the token
	// route too (its policy is the app's, not a route's): the handler then
	// serves tokens to the listed callers only, so the list must exist.
	if s.StatusPageGroup != "" && len(s.TokenCallers) == 0 && l.ok("TOKEN_CALLERS") {
		l.problem("TOKEN_CALLERS", "", "is empty, but STATUS_PAGE_GROUP lets the group's members through App Service authentication: set it to the object id of Data Factory's managed identity (the template sets both from statusPageGroupId and adfPrincipalId), so that a signed-in operator takes no token")
	}

	switch sources := countSet(s.ConnectionsFile, s.ConnectionsJSON, l.get("CONNECTIONS_BLOB")); {
	case sources == 0:
		l.problem("CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB", "", "none is set; set exactly one: CONNECTIONS_FILE to the path of the connections JSON, CONNECTIONS to the JSON itself, or CONNECTIONS_BLOB to <container>/<blob> in the lock storage account")
	case sources > 1:
		l.problem("CONNECTIONS_FILE, CONNECTIONS and CONNECTIONS_BLOB", "", "more than one is set; set exactly one, so there is no doubt which connections are served")
	}
	if s.ConnectionsBlob != "" && !s.UsesBlobLock() {
		l.problem("CONNECTIONS_BLOB", s.ConnectionsBlob, "needs the lock storage account (AzureWebJobsStorage, or AzureWebJobsStorage__blobServiceUri / __accountName), which holds the blob")
	}
	if s.AccessTokenStore == AccessTokensInBlob && !s.UsesBlobLock() && l.ok("ACCESS_TOKEN_STORE") {
		// Locally there is no blob beside the lock to keep it in, and the
		// local store has no write budget to save.
		l.problem("ACCESS_TOKEN_STORE", s.AccessTokenStore, "blob keeps access tokens in the lock storage account, and none is set (AzureWebJobsStorage, or AzureWebJobsStorage__blobServiceUri / __accountName); unset it to keep them in the secret store")
	}
	if s.ProviderAttemptTimeout > s.ProviderTimeout && l.ok("PROVIDER_TIMEOUT") && l.ok("PROVIDER_ATTEMPT_TIMEOUT") {
		l.problem("PROVIDER_ATTEMPT_TIMEOUT", l.get("PROVIDER_ATTEMPT_TIMEOUT"),
			fmt.Sprintf("must not exceed PROVIDER_TIMEOUT (%s), the budget of the whole request", formatDuration(s.ProviderTimeout)))
	}

	if s.LeaseDuration%time.Second != 0 && l.ok("LOCK_LEASE_DURATION") {
		l.problem("LOCK_LEASE_DURATION", l.get("LOCK_LEASE_DURATION"), "must be whole seconds: blob leases are granted in seconds")
	}

	// A waiter that finally gets the lock may still have to call the
	// provider itself (the holder failed): both budgets together must end
	// before ADF gives up, with room for the store writes.
	if s.LockWait+s.ProviderTimeout > callerBudget && l.ok("LOCK_WAIT") && l.ok("PROVIDER_TIMEOUT") {
		l.problem("LOCK_WAIT", l.get("LOCK_WAIT"),
			fmt.Sprintf("LOCK_WAIT (%s) plus PROVIDER_TIMEOUT (%s) must not exceed %s, so a caller that waited for the lock and then refreshes itself still answers before ADF's 60 s timeout",
				formatDuration(s.LockWait), formatDuration(s.ProviderTimeout), formatDuration(callerBudget)))
	}

	// Standalone mode has no host in front of it to check keys: beyond
	// loopback, anyone who can reach the port could take tokens.
	if s.Mode() == ModeStandalone && s.APIKeySecret == "" && l.ok("LISTEN_ADDR") && l.ok("API_KEY_SECRET") && !isLoopbackListenAddr(s.ListenAddr) {
		l.problem("LISTEN_ADDR and API_KEY_SECRET", "",
			fmt.Sprintf("LISTEN_ADDR %q accepts connections from other machines, and API_KEY_SECRET is not set, so anyone who can reach the port could take tokens; "+
				"set API_KEY_SECRET to the name of a secret in the store that holds a key of at least %d characters (callers send it in the x-functions-key header), "+
				"or listen on loopback only, such as %q", s.ListenAddr, MinAPIKeyLength, DefaultListenAddr))
	}

	if len(l.problems) > 0 {
		return Settings{}, &SettingsError{Problems: l.problems}
	}
	return s, nil
}

// MinAPIKeyLength is the shortest key the secret named by API_KEY_SECRET
// may hold: 32 characters of a random key are beyond guessing, even at
// the rate a listener on a network can be asked.
const MinAPIKeyLength = 32

// isLoopbackListenAddr reports whether addr (host:port, checked already)
// accepts connections from this machine only: a host of localhost,
// 127.0.0.0/8 or ::1. An empty host is every interface.
func isLoopbackListenAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return broker.LoopbackHost(host)
}

// Mode returns ModeFunctions when the Functions host started the handler,
// ModeStandalone otherwise.
func (s Settings) Mode() string {
	if s.FunctionsPort != "" {
		return ModeFunctions
	}
	return ModeStandalone
}

// Addr returns the address to listen on: the host's port on 127.0.0.1 in
// Functions mode, ListenAddr otherwise.
func (s Settings) Addr() string {
	if s.FunctionsPort != "" {
		return net.JoinHostPort("127.0.0.1", s.FunctionsPort)
	}
	return s.ListenAddr
}

// PrincipalHeadersTrusted reports whether the X-MS-CLIENT-PRINCIPAL-ID
// header identifies the caller: App Service authentication is on
// (WEBSITE_AUTH_ENABLED) and the handler runs behind the Functions host,
// whose front end strips copies of that header sent by clients. In
// standalone mode nothing strips them, so WEBSITE_AUTH_ENABLED set by hand
// would let any caller claim any identity.
func (s Settings) PrincipalHeadersTrusted() bool {
	return s.AuthEnabled && s.Mode() == ModeFunctions
}

// UsesBlobLock reports whether any of the storage settings is set, so the
// lock is a blob lease rather than a local lock.
func (s Settings) UsesBlobLock() bool {
	return s.StorageConnectionString != "" || s.StorageBlobServiceURI != "" || s.StorageAccountName != ""
}

// BlobServiceURL returns the blob endpoint of an identity-based storage
// connection: AzureWebJobsStorage__blobServiceUri, or the public-cloud
// endpoint of AzureWebJobsStorage__accountName. It returns "" when a
// connection string is set (it takes precedence, as in the Functions host)
// or no storage is configured.
func (s Settings) BlobServiceURL() string {
	switch {
	case s.StorageConnectionString != "":
		return ""
	case s.StorageBlobServiceURI != "":
		return s.StorageBlobServiceURI
	case s.StorageAccountName != "":
		return "https://" + s.StorageAccountName + ".blob.core.windows.net/"
	}
	return ""
}

// validConnectionsBlob reports whether v is "<container>/<blob>", the
// form connblob.ParseLocation reads (config cannot import connblob, which
// imports config).
func validConnectionsBlob(v string) bool {
	container, name, ok := strings.Cut(v, "/")
	return ok && containerPattern.MatchString(container) && name != "" && len(name) <= 1024
}

// countSet counts the values that are not empty.
func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

// UsesKeyVault reports whether secrets live in Key Vault rather than the
// local store.
func (s Settings) UsesKeyVault() bool { return s.KeyVaultURL != "" }

// ReadConnections reads and parses the connections from CONNECTIONS_FILE
// or CONNECTIONS, whichever is set. A bad file yields an error wrapping
// *ValidationError.
func (s Settings) ReadConnections() ([]broker.Connection, error) {
	source, data := "CONNECTIONS", []byte(s.ConnectionsJSON)
	if s.ConnectionsFile != "" {
		source = fmt.Sprintf("CONNECTIONS_FILE %q", s.ConnectionsFile)
		var err error
		if data, err = os.ReadFile(s.ConnectionsFile); err != nil {
			return nil, fmt.Errorf("reading %s: %w", source, err)
		}
	} else if s.ConnectionsJSON == "" {
		return nil, fmt.Errorf("no connections: set CONNECTIONS_FILE or CONNECTIONS (CONNECTIONS_BLOB is read by package connblob)")
	}
	conns, err := ParseConnections(data)
	if err != nil {
		return nil, fmt.Errorf("connections from %s:\n%w", source, err)
	}
	if err := s.checkAPIKeySecret(conns); err != nil {
		return nil, fmt.Errorf("connections from %s:\n%w", source, err)
	}
	return conns, nil
}

// checkAPIKeySecret refuses connections that name the secret holding the
// API key (standalone mode): read as a client secret it would be sent to
// the provider, written as a token it would be replaced, and the
// operator's key would stop working at the next restart.
func (s Settings) checkAPIKeySecret(conns []broker.Connection) error {
	if s.Mode() != ModeStandalone || s.APIKeySecret == "" {
		return nil
	}
	var problems []Problem
	for i, c := range conns {
		for _, u := range []struct{ role, name string }{
			{"clientId", c.Secrets.ClientID}, {"clientSecret", c.Secrets.ClientSecret},
			{"refreshToken", c.Secrets.RefreshToken}, {"accessToken", c.Secrets.AccessToken},
		} {
			if strings.EqualFold(u.name, s.APIKeySecret) {
				problems = append(problems, Problem{Connection: c.Name, Index: i, Field: "secrets." + u.role,
					Message: fmt.Sprintf("secret %q is the API key's secret (API_KEY_SECRET), which the handler keeps for itself; name another secret", u.name)})
			}
		}
	}
	if len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	return nil
}

// String describes the settings without the values that may hold secrets
// (the storage connection string) or are too long to be useful in a log
// line (inline connections).
func (s Settings) String() string {
	var b strings.Builder
	for i, a := range s.attrs() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.String())
	}
	return b.String()
}

// LogValue implements slog.LogValuer with the same redactions as String.
func (s Settings) LogValue() slog.Value {
	return slog.GroupValue(s.attrs()...)
}

func (s Settings) attrs() []slog.Attr {
	connections := "CONNECTIONS_FILE " + s.ConnectionsFile
	switch {
	case s.ConnectionsBlob != "":
		connections = "CONNECTIONS_BLOB " + s.ConnectionsBlob
	case s.ConnectionsFile == "":
		connections = fmt.Sprintf("CONNECTIONS (%d bytes inline)", len(s.ConnectionsJSON))
	}
	store := "local " + s.LocalStateDir
	if s.KeyVaultURL != "" {
		store = "keyvault " + s.KeyVaultURL
	}
	lock := "local"
	switch {
	case s.StorageConnectionString != "":
		lock = "blob (connection string) container " + s.LockContainer
	case s.UsesBlobLock():
		lock = "blob " + s.BlobServiceURL() + " container " + s.LockContainer
	}
	return []slog.Attr{
		slog.String("mode", s.Mode()),
		slog.String("addr", s.Addr()),
		slog.String("connections", connections),
		slog.String("store", store),
		slog.String("lock", lock),
		slog.String("managedIdentity", s.AzureClientID),
		slog.Duration("providerTimeout", s.ProviderTimeout),
		slog.Duration("providerAttemptTimeout", s.ProviderAttemptTimeout),
		slog.Int64("providerMaxResponseBytes", s.ProviderMaxResponseBytes),
		slog.Duration("lockWait", s.LockWait),
		slog.Duration("leaseDuration", s.LeaseDuration),
		slog.Duration("sweepInterval", s.SweepInterval),
		slog.Int("keyVaultWriteBudget", s.KeyVaultWriteBudget),
		slog.String("accessTokenStore", s.AccessTokenStore),
		slog.Bool("authEnabled", s.AuthEnabled),
		slog.String("apiKeySecret", s.APIKeySecret),
		slog.String("logLevel", s.LogLevel.String()),
	}
}

// loader reads settings and collects their problems.
type loader struct {
	getenv   func(string) string
	problems []SettingProblem
	bad      map[string]bool
}

func (l *loader) problem(setting, value, message string) {
	l.problems = append(l.problems, SettingProblem{Setting: setting, Value: value, Message: message})
	if l.bad == nil {
		l.bad = map[string]bool{}
	}
	l.bad[setting] = true
}

// ok reports whether the setting had no problem.
func (l *loader) ok(setting string) bool { return !l.bad[setting] }

func (l *loader) get(name string) string { return strings.TrimSpace(l.getenv(name)) }

func (l *loader) getOr(name, def string) string {
	if v := l.get(name); v != "" {
		return v
	}
	return def
}

func (l *loader) port(name string) string {
	v := l.get(name)
	if v == "" {
		return ""
	}
	if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 {
		l.problem(name, v, "must be a TCP port number between 1 and 65535")
		return ""
	}
	return v
}

func (l *loader) listenAddr(name, def string) string {
	v := l.getOr(name, def)
	host, port, err := net.SplitHostPort(v)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = strconv.ErrRange
		}
	}
	if err != nil || strings.ContainsAny(host, " /") {
		l.problem(name, v, `must be host:port, such as "127.0.0.1:8080" or ":8080"`)
		return ""
	}
	return v
}

// httpsURL accepts an https URL with a host, and, when loopbackHTTP is
// set, http on a loopback host (Azurite).
func (l *loader) httpsURL(name, example string, loopbackHTTP bool) string {
	v := l.get(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	valid := err == nil && u.Host != "" && u.User == nil && u.RawQuery == "" && u.Fragment == "" &&
		(u.Scheme == "https" || (loopbackHTTP && u.Scheme == "http" && broker.LoopbackHost(u.Hostname())))
	if !valid {
		msg := "must be an https URL such as " + example
		if loopbackHTTP {
			msg += " (http only on 127.0.0.1 or localhost, for Azurite)"
		}
		if err == nil && (u.User != nil || u.RawQuery != "") {
			// A SAS token or a password: not repeated.
			l.problem(name, "", msg+", without credentials or a query string (the value is not shown)")
			return ""
		}
		l.problem(name, v, msg)
		return ""
	}
	return v
}

// connectionString checks the shape of a storage connection string
// without ever repeating it: it may hold an account key.
func (l *loader) connectionString(name string) string {
	v := l.get(name)
	if v == "" {
		return ""
	}
	for part := range strings.SplitSeq(v, ";") {
		if part == "" {
			continue
		}
		if key, _, found := strings.Cut(part, "="); !found || strings.TrimSpace(key) == "" {
			l.problem(name, "", "is not a storage connection string (key=value pairs separated by ';', or \"UseDevelopmentStorage=true\"); the value is not shown because it may contain an account key")
			return ""
		}
	}
	return v
}

// guidList reads a comma-separated list of object ids, lower-cased as
// X-MS-CLIENT-PRINCIPAL-ID carries them.
func (l *loader) guidList(name string) []string {
	v := l.get(name)
	if v == "" {
		return nil
	}
	var ids []string
	for _, id := range strings.Split(v, ",") {
		id = strings.TrimSpace(id)
		if !guidPattern.MatchString(id) {
			l.problem(name, v, fmt.Sprintf("must be object ids (GUIDs) separated by commas; %q is not one", id))
			return nil
		}
		ids = append(ids, strings.ToLower(id))
	}
	return ids
}

func (l *loader) match(name string, valid func(string) bool, msg string) string {
	v := l.get(name)
	if v == "" || valid(v) {
		return v
	}
	l.problem(name, v, msg)
	return ""
}

func (l *loader) matchOr(name, def string, valid func(string) bool, msg string) string {
	if l.get(name) == "" {
		return def
	}
	return l.match(name, valid, msg)
}

// duration parses a Go duration in [lo, hi]; why explains the bound.
func (l *loader) duration(name string, def, lo, hi time.Duration, why string) time.Duration {
	v := l.get(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err == nil && d >= lo && d <= hi {
		return d
	}
	msg := fmt.Sprintf("must be a duration between %s and %s", formatDuration(lo), formatDuration(hi))
	if err != nil {
		msg = fmt.Sprintf("must be a Go duration such as %q, between %s and %s", formatDuration(def), formatDuration(lo), formatDuration(hi))
	}
	if why != "" {
		msg += " (" + why + ")"
	}
	l.problem(name, v, msg)
	return def
}

func (l *loader) bytes(name string, def, lo, hi int64) int64 {
	v := l.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err == nil && n >= lo && n <= hi {
		return n
	}
	l.problem(name, v, fmt.Sprintf("must be a whole number of bytes between %d and %d (golang.org/x/oauth2 reads no more than %d)", lo, hi, hi))
	return def
}

// integer reads a whole number between lo and hi; why says where the
// bounds come from.
func (l *loader) integer(name string, def, lo, hi int, why string) int {
	v := l.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err == nil && n >= lo && n <= hi {
		return n
	}
	l.problem(name, v, fmt.Sprintf("must be a whole number between %d and %d (%s)", lo, hi, why))
	return def
}

func (l *loader) boolean(name string) bool {
	v := l.get(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.problem(name, v, `must be "true" or "false"`)
		return false
	}
	return b
}

func (l *loader) logLevel(name string) slog.Level {
	v := l.get(name)
	switch strings.ToLower(v) {
	case "", "info":
		return slog.LevelInfo
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	l.problem(name, v, "must be one of debug, info, warn, error")
	return slog.LevelInfo
}
