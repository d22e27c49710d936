package keyvault

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// Key Vault's error codes that Error explains. Code holds the top-level
// ones, InnerCode the innererror ones.
const (
	CodeSecretNotFound                = "SecretNotFound"                // 404
	CodeThrottled                     = "Throttled"                     // 429
	CodeForbiddenByRbac               = "ForbiddenByRbac"               // 403, inner: no role allows the operation
	CodeAccessDenied                  = "AccessDenied"                  // 403, inner: no access policy allows it
	CodeForbiddenByFirewall           = "ForbiddenByFirewall"           // 403, inner: network rules refuse the caller
	CodeSecretDisabled                = "SecretDisabled"                // 403, inner: the version is disabled
	CodeObjectIsDeletedButRecoverable = "ObjectIsDeletedButRecoverable" // 409, inner: the name is soft-deleted
	CodeObjectIsBeingDeleted          = "ObjectIsBeingDeleted"          // 409, inner: a delete is in progress
)

// SecretsRole is the built-in role the handler's identity needs on the
// vault: it reads, lists and writes secrets.
const SecretsRole = "Key Vault Secrets Officer"

// Error is a failed Key Vault operation. Error() says what failed, why, and
// what to do, in terms a data engineer can act on; it never contains a
// secret value.
type Error struct {
	// Op is "get", "set" or "list".
	Op string
	// Secret is the secret's name; empty for a list.
	Secret string
	// Vault is the vault's host name; empty when unknown.
	Vault string
	// StatusCode is Key Vault's HTTP status; zero when no response came
	// (network, credential, timeout) or the response was refused here.
	StatusCode int
	// Code is Key Vault's error code (error.code), e.g. "Forbidden".
	Code string
	// InnerCode is the innermost error.innererror.code, e.g.
	// "ForbiddenByRbac"; empty when Key Vault sent none.
	InnerCode string
	// Message is Key Vault's error.message on one line, shortened. It often
	// names the caller's object ID and the action refused.
	Message string
	// RetryAfter is the wait Key Vault asked for (Retry-After), zero when
	// it asked for none.
	RetryAfter time.Duration
	// Err is the cause: an *azcore.ResponseError when Key Vault answered
	// (its own Error text includes the raw response body; log this Error
	// instead), otherwise the transport, credential or context error.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("keyvault: ")
	if e.Op == opList {
		b.WriteString("list secrets")
	} else {
		fmt.Fprintf(&b, "%s secret %q", e.Op, e.Secret)
	}
	if e.Vault != "" {
		b.WriteString(" in vault " + e.Vault)
	}
	b.WriteString(": ")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
		if codes := strings.Join(slices.DeleteFunc([]string{e.Code, e.InnerCode}, func(s string) bool { return s == "" }), "/"); codes != "" {
			b.WriteString(" " + codes)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.summary())
	if e.StatusCode == 0 && e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Retryable() {
		b.WriteString(" (retryable")
		if e.RetryAfter > 0 {
			b.WriteString(" after " + e.RetryAfter.String())
		}
		b.WriteString(")")
	}
	if r := e.Remediation(); r != "" {
		b.WriteString(". " + r)
	}
	if e.Message != "" {
		b.WriteString(". Key Vault said: " + strconv.Quote(e.Message))
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether e is Key Vault's "secret not found", so that
// errors.Is(err, broker.ErrSecretNotFound) holds for it.
func (e *Error) Is(target error) bool {
	return target == broker.ErrSecretNotFound && e.StatusCode == http.StatusNotFound && e.Code == CodeSecretNotFound
}

// Retryable reports whether the same request may succeed later without
// anyone acting: Key Vault throttled it or failed, or it never arrived.
func (e *Error) Retryable() bool {
	switch s := e.StatusCode; {
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		return true
	case s != 0:
		return false
	}
	var ne net.Error
	return errors.As(e.Err, &ne) || errors.Is(e.Err, context.DeadlineExceeded)
}

// summary says what happened, in a phrase.
func (e *Error) summary() string {
	switch e.kind() {
	case kindNotFound:
		return "the secret does not exist"
	case kindDisabled:
		return "the secret is disabled"
	case kindRBAC:
		return "this app's identity has no role on the vault that allows it"
	case kindAccessPolicy:
		return "no access policy of the vault allows this app's identity to do it"
	case kindFirewall:
		return "the vault's firewall refuses this app's network address"
	case kindDeleted:
		return "the secret is deleted but recoverable (soft delete), and a deleted name cannot be reused"
	case kindBeingDeleted:
		return "the secret is being deleted"
	case kindThrottled:
		return "Key Vault is throttling requests to this vault"
	case kindUnauthorized:
		return "Key Vault did not accept this app's token"
	case kindCredential:
		return "could not get a token for Key Vault"
	case kindUnreached:
		if errors.Is(e.Err, context.Canceled) || errors.Is(e.Err, context.DeadlineExceeded) {
			return "gave up waiting for Key Vault"
		}
		return "could not reach Key Vault"
	}
	switch {
	case e.StatusCode == http.StatusForbidden:
		return "Key Vault refused the request"
	case e.StatusCode >= 500:
		return "Key Vault failed"
	case e.StatusCode == http.StatusBadRequest:
		return "Key Vault found the request invalid"
	case e.StatusCode == http.StatusNotFound:
		return "Key Vault has no such resource; the vault URL may be wrong"
	}
	return "Key Vault refused the request"
}

// Remediation says what to do about the failure; empty when waiting is
// all there is to it.
func (e *Error) Remediation() string {
	v, n := e.vaultName(), e.Secret
	switch e.kind() {
	case kindNotFound:
		return fmt.Sprintf("Create it: az keyvault secret set --vault-name %s --name %s --file <file holding the value> (a file keeps the value out of your shell history)", v, n)
	case kindDisabled:
		return fmt.Sprintf("Someone disabled it on purpose; enable it (az keyvault secret set-attributes --vault-name %s --name %s --enabled true) or store a new value", v, n)
	case kindRBAC:
		return fmt.Sprintf("Grant the function app's managed identity the %q role on vault %s (az role assignment create --role %q --assignee <principal id> --scope <vault resource id>); a new assignment can take a few minutes to apply", SecretsRole, v, SecretsRole)
	case kindAccessPolicy:
		return fmt.Sprintf("Give the function app's managed identity get, list and set permissions on secrets: az keyvault set-policy --name %s --object-id <principal id> --secret-permissions get list set (or switch the vault to Azure RBAC and grant %q)", v, SecretsRole)
	case kindFirewall:
		return fmt.Sprintf("Add the function app's outbound IP addresses or its virtual network to vault %s's network rules (az keyvault network-rule add --name %s ...), or reach the vault through a private endpoint", v, v)
	case kindDeleted, kindBeingDeleted:
		return fmt.Sprintf("Recover it (az keyvault secret recover --vault-name %s --name %s) to keep its history, or purge it (az keyvault secret purge --vault-name %s --name %s) to start afresh; then retry", v, n, v, n)
	case kindThrottled:
		return "Key Vault counts every client of the vault against its limits; if this persists, look for other heavy users of the vault"
	case kindUnauthorized:
		return "Check that the identity belongs to the vault's tenant, and that AZURE_CLIENT_ID names a managed identity assigned to the function app"
	case kindCredential:
		return "Check the function app's managed identity (AZURE_CLIENT_ID for a user-assigned one), or sign in with 'az login' on a workstation"
	case kindUnreached:
		if errors.Is(e.Err, context.Canceled) {
			return ""
		}
		return "Check KEY_VAULT_URL and that the vault is reachable from the function app"
	}
	if e.StatusCode == http.StatusNotFound {
		return "Check that KEY_VAULT_URL is the vault's URL, https://<vault>.vault.azure.net/"
	}
	return ""
}

type kind int

const (
	kindOther kind = iota
	kindNotFound
	kindDisabled
	kindRBAC
	kindAccessPolicy
	kindFirewall
	kindDeleted
	kindBeingDeleted
	kindThrottled
	kindUnauthorized
	kindCredential
	kindUnreached
)

func (e *Error) kind() kind {
	switch {
	case e.InnerCode == CodeSecretDisabled:
		return kindDisabled
	case e.StatusCode == http.StatusNotFound && e.Code == CodeSecretNotFound:
		return kindNotFound
	case e.StatusCode == http.StatusForbidden && e.InnerCode == CodeForbiddenByRbac:
		return kindRBAC
	case e.StatusCode == http.StatusForbidden && e.InnerCode == CodeAccessDenied:
		return kindAccessPolicy
	case e.StatusCode == http.StatusForbidden && e.InnerCode == CodeForbiddenByFirewall:
		return kindFirewall
	case e.StatusCode == http.StatusConflict && e.InnerCode == CodeObjectIsDeletedButRecoverable:
		return kindDeleted
	case e.StatusCode == http.StatusConflict && e.InnerCode == CodeObjectIsBeingDeleted:
		return kindBeingDeleted
	case e.StatusCode == http.StatusTooManyRequests:
		return kindThrottled
	case e.StatusCode == http.StatusUnauthorized:
		return kindUnauthorized
	case e.StatusCode != 0:
		return kindOther
	}
	var af *azidentity.AuthenticationFailedError
	if errors.As(e.Err, &af) {
		return kindCredential
	}
	return kindUnreached
}

// vaultName is the name to put in an az command: the first label of a Key
// Vault host, or a placeholder.
func (e *Error) vaultName() string {
	host := strings.ToLower(e.Vault)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, d := range vaultDomains {
		if name, ok := strings.CutSuffix(host, d); ok && name != "" && !strings.Contains(name, ".") {
			return name
		}
	}
	return "<vault>"
}

// fail turns an azsecrets error into an *Error. value is the value being
// written, if any: a message that quotes it is withheld.
func (s *Store) fail(op, name string, err error, value string) error {
	e := &Error{Op: op, Secret: name, Vault: s.vault, Err: err}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		e.StatusCode = re.StatusCode
		e.Code = re.ErrorCode
		if resp := re.RawResponse; resp != nil {
			if e.Vault == "" && resp.Request != nil {
				e.Vault = resp.Request.URL.Host
			}
			e.RetryAfter = retryAfter(resp.Header, s.now())
			// azcore has already read and kept the body (NewResponseError
			// parses the top-level code from it); Payload returns the copy.
			if body, err := runtime.Payload(resp); err == nil {
				var kv struct{ Error *serviceError }
				if json.Unmarshal(body, &kv) == nil && kv.Error != nil {
					e.Code = cmp.Or(e.Code, kv.Error.Code)
					e.InnerCode = kv.Error.innermostCode()
					e.Message = oneLine(kv.Error.Message)
				}
			}
		}
	}
	if value != "" {
		if strings.Contains(e.Message, value) {
			e.Message = "(withheld: it quoted the secret value)"
		}
		if e.StatusCode == 0 && e.Err != nil && strings.Contains(e.Err.Error(), value) {
			e.Err = errors.New("(detail withheld: it quoted the secret value)")
		}
	}
	return e
}

// serviceError is Key Vault's error object:
// {"code": ..., "message": ..., "innererror": {"code": ...}}.
type serviceError struct {
	Code       string        `json:"code"`
	Message    string        `json:"message"`
	InnerError *serviceError `json:"innererror"`
}

func (se *serviceError) innermostCode() string {
	code := ""
	for e := se.InnerError; e != nil; e = e.InnerError {
		if e.Code != "" {
			code = e.Code
		}
	}
	return code
}

// maxMessage bounds how much of Key Vault's message an Error keeps: enough
// for the caller, action and vault it names.
const maxMessage = 600

// oneLine collapses Key Vault's multi-line message and shortens it.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// retryAfter reads the wait a response asks for, in the headers azcore
// honours: retry-after-ms, x-ms-retry-after-ms, then Retry-After in
// seconds or as an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	for _, name := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if ms, err := strconv.Atoi(h.Get(name)); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// MaxNameLen is the longest secret name Key Vault accepts.
const MaxNameLen = broker.MaxSecretNameLen

// NameError reports a secret name that breaks Key Vault's naming rules.
// Get and Set return it without making a request.
type NameError struct {
	Name string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("keyvault: invalid secret name %q: want 1-%d characters of 0-9, a-z, A-Z and '-', starting with a letter", e.Name, MaxNameLen)
}

// ValidateName returns a *NameError unless name is 1-127 characters of
// 0-9, a-z, A-Z and '-', starting with a letter: Key Vault's rules for a
// secret name.
func ValidateName(name string) error {
	if !broker.ValidSecretName(name) {
		return &NameError{Name: name}
	}
	return nil
}

// ValueError reports a value Set refused to send, because Key Vault could
// not store it as given. It carries the size, never the value.
type ValueError struct {
	Secret string
	// Size is the value's length in bytes.
	Size int
	// InvalidUTF8 is true when the value is not valid UTF-8; otherwise it
	// is larger than MaxValueBytes.
	InvalidUTF8 bool
}

func (e *ValueError) Error() string {
	if e.InvalidUTF8 {
		return fmt.Sprintf("keyvault: set secret %q: the value (%d bytes) is not valid UTF-8; Key Vault stores text", e.Secret, e.Size)
	}
	return fmt.Sprintf("keyvault: set secret %q: the value is %d bytes, over Key Vault's limit of %d", e.Secret, e.Size, MaxValueBytes)
}
