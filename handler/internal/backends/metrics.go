package backends

import (
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
	"github.com/tokenrefresher/tokenrefresher/handler/internal/metrics"
)

// Option adjusts the broker NewBroker builds.
type Option func(*broker.Options)

// WithObserver has the broker report to o (package metrics).
func WithObserver(o broker.Observer) Option {
	return func(bo *broker.Options) { bo.Observer = o }
}

// Metrics makes the handler's instruments. With
// APPLICATIONINSIGHTS_CONNECTION_STRING set (the Bicep sets it on Azure),
// they are also exported to that Application Insights every minute as
// customMetrics (metrics/appinsights.go says why this way). When
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING says Authorization=AAD, the
// posts carry a token of the managed identity it names (ClientId=...), or
// of the system-assigned one; the Functions host reads the same two
// settings for its own telemetry.
func Metrics(getenv func(string) string, role, instance string) (*metrics.Metrics, error) {
	cs := getenv("APPLICATIONINSIGHTS_CONNECTION_STRING")
	if cs == "" {
		return metrics.New(metrics.Options{})
	}
	conn, err := metrics.ParseConnectionString(cs)
	if err != nil {
		return nil, err
	}
	exp := &metrics.AppInsights{Conn: conn, Role: role, RoleInstance: instance}
	if clientID, aad := aadAuthentication(getenv("APPLICATIONINSIGHTS_AUTHENTICATION_STRING")); aad {
		o := &azidentity.ManagedIdentityCredentialOptions{}
		if clientID != "" {
			o.ID = azidentity.ClientID(clientID)
		}
		cred, err := azidentity.NewManagedIdentityCredential(o)
		if err != nil {
			return nil, err
		}
		exp.Credential = cred
	}
	return metrics.New(metrics.Options{Exporter: exp})
}

// aadAuthentication reads APPLICATIONINSIGHTS_AUTHENTICATION_STRING:
// "Authorization=AAD", with "ClientId=<id>" for a user-assigned identity
// (https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication).
func aadAuthentication(s string) (clientID string, aad bool) {
	for part := range strings.SplitSeq(s, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "authorization":
			aad = strings.EqualFold(strings.TrimSpace(v), "AAD")
		case "clientid":
			clientID = strings.TrimSpace(v)
		}
	}
	return clientID, aad
}
