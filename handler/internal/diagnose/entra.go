package diagnose

// Remediation for Microsoft Entra ID codes. Portal paths are those of the
// Microsoft Entra admin center.
const (
	fixEntraInactive = "The refresh token of connection {connection} went unused for too long and expired: " +
		"re-authorize and write the new refresh token to {refresh_token}{connect}. Keep the timer function " +
		"running so that the token is used often enough to stay alive."
	fixEntraRevoked = "The account's password was changed or reset, or an administrator revoked its sessions, " +
		"which ended the grant of connection {connection}: re-authorize and write the new refresh token to " +
		"{refresh_token}{connect}."
	fixEntraBadRefreshToken = "Entra cannot use the value in {refresh_token} as a refresh token (truncated, " +
		"quoted, or issued to another app): re-authorize connection {connection} and write the new refresh " +
		"token, exactly as issued, to {refresh_token}{connect}."
	fixEntraSignInFrequency = "A Conditional Access sign-in frequency policy ended the grant of connection " +
		"{connection}: re-authorize and write the new refresh token to {refresh_token}{connect}. It recurs at " +
		"that frequency unless an Entra administrator exempts this account or app from the policy."
	fixEntraSPA = "The refresh token of connection {connection} was issued to a single-page app, so its lifetime " +
		"is fixed: register the redirect URI under the Web platform of the app registration instead, then " +
		"re-authorize and write the new refresh token to {refresh_token}{connect}."
	fixEntraUserGone = "The account that authorized connection {connection} no longer exists in the tenant: " +
		"re-authorize with an existing account and write the new refresh token to {refresh_token}{connect}."
	fixEntraDeclined = "The person who signed in for connection {connection} declined consent: re-authorize, " +
		"accept the requested permissions, and write the new refresh token to {refresh_token}{connect}."
	fixEntraCodeRedeemed = "The authorization code for connection {connection} was already redeemed: start the " +
		"authorization again for a fresh code, and redeem it once."

	fixEntraSecretExpired = "The client secret in {client_secret} has expired: create a new client secret for " +
		"the app registration of connection {connection} (App registrations > Certificates & secrets), write " +
		"its Value to {client_secret}, and record its expiry date with the secret so that the sweep warns " +
		"before the next one runs out."
	fixEntraSecretInvalid = "The value in {client_secret} is not a valid client secret of the app registration " +
		"of connection {connection} (storing the secret's ID instead of its Value is a common slip): write the " +
		"secret's Value to {client_secret}, or create a new one under App registrations > Certificates & secrets."
	fixEntraCredentials = "Entra rejected the client credentials of connection {connection}: check that " +
		"{client_id} holds the app registration's Application (client) ID and {client_secret} the Value of a " +
		"current client secret; if the secret expired or was deleted, create a new one under App registrations " +
		"> Certificates & secrets."
	fixEntraNoSecret = "Entra received no client secret for connection {connection}, and its app registration " +
		"requires one: write the client secret's Value to {client_secret} (it is missing or empty) and check " +
		"that clientAuth {client_auth} sends it."
	fixEntraPublicClient = "The app registration of connection {connection} is a public client, which may not " +
		"use a client secret: register the app as a Web application (a confidential client) and store its " +
		"client id in {client_id} and its secret in {client_secret}."
	fixEntraAssertion = "Entra rejected the client assertion of connection {connection} (its signature, or its " +
		"validity period): check the certificate registered for the app and the clock of the machine that signs " +
		"the assertions."

	fixEntraAppNotFound = "Entra has no app with the client id of connection {connection} in the tenant of its " +
		"token URL: check {client_id} against the app registration's Application (client) ID, and the tenant in " +
		"the token URL; an app registered in another tenant must first be consented to in this one."
	fixEntraAppDisabled = "The app of connection {connection} is disabled in the tenant: an Entra administrator " +
		"must enable it again (Enterprise applications > the app > Properties)."
	fixEntraTenant = "The tenant in the token URL of connection {connection} does not exist in this cloud: " +
		"correct \"tenant\" (the directory ID or a verified domain) in the connections file."
	fixEntraCommon = "Connection {connection} uses the /common or /consumers endpoint, which this app or grant " +
		"cannot use: set \"tenant\" to the directory ID or a verified domain in the connections file."
	fixEntraScope = "Correct the scopes of connection {connection} in the connections file: Entra does not accept " +
		"them (v2.0 scopes look like https://graph.microsoft.com/.default, and one request may name only one API)."
	fixEntraResource = "The API named by the scopes of connection {connection} is not available to its app in " +
		"this tenant: check the scopes, add the API under App registrations > API permissions, and have an " +
		"administrator grant consent."
	fixEntraMissingParam = "The token request of connection {connection} lacks a parameter Entra requires: check " +
		"its scopes and params in the connections file, and that {client_secret} is not empty."
	fixEntraGrantType = "Entra does not accept the grant of connection {connection}: correct \"grant\" in the " +
		"connections file (refresh_token or client_credentials)."
	fixEntraRedirect = "The redirect URI used to authorize connection {connection} is not registered for its " +
		"app: add it under App registrations > Authentication, then authorize again."
	fixEntraAdminConsent = "An Entra administrator must grant consent to the app of connection {connection} " +
		"(App registrations > API permissions > Grant admin consent); then re-authorize and write the new " +
		"refresh token to {refresh_token}{connect}."
	fixEntraAdminConsentApp = "An Entra administrator must grant consent for the API permissions of the app of " +
		"connection {connection} (App registrations > API permissions > Grant admin consent)."
	fixEntraUserNotAssigned = "The account behind connection {connection} is not assigned to its app: an Entra " +
		"administrator must assign it (Enterprise applications > the app > Users and groups); then re-authorize " +
		"and write the new refresh token to {refresh_token}{connect}."

	fixEntraMFA = "Entra now requires multi-factor authentication for the account behind connection " +
		"{connection}, which a background refresh cannot provide: re-authorize interactively, completing MFA, " +
		"and write the new refresh token to {refresh_token}{connect}. To stop this recurring, ask an Entra " +
		"administrator to review the Conditional Access policy that applies to this account and app."
	fixEntraMFAEnroll = "The account behind connection {connection} must register for multi-factor " +
		"authentication: have its owner do so, then re-authorize interactively and write the new refresh token " +
		"to {refresh_token}{connect}."
	fixEntraCA = "A Conditional Access policy blocks token issuance for connection {connection}: ask an Entra " +
		"administrator to find the policy in the sign-in logs for this app and exempt this account or allow the " +
		"function app's location; then retry, and re-authorize if it still fails."
	fixEntraCAApp = "A Conditional Access policy blocks the app of connection {connection}: ask an Entra " +
		"administrator to find the policy in the service principal sign-in logs and exempt this workload or " +
		"allow the function app's location."

	fixEntraLocked = "Entra locked the account behind connection {connection} after repeated failed sign-ins, or " +
		"blocked the sign-in's IP address: an administrator can tell which from the sign-in logs and unblock it, " +
		"and a lockout also lifts on its own. Do not retry in a loop meanwhile."
	fixEntraDisabled = "The account behind connection {connection} is disabled: an Entra administrator must " +
		"enable it, or someone must re-authorize the connection with another account and write the new refresh " +
		"token to {refresh_token}{connect}."
	fixEntraPasswordExpired = "The password of the account behind connection {connection} has expired: its " +
		"owner must set a new one, then re-authorize and write the new refresh token to {refresh_token}{connect} " +
		"(the password change ends the old grant)."

	fixEntraTransient = "Nothing to change in connection {connection}: Entra reported a temporary problem and the " +
		"request is retried."
	fixEntraThrottled = "Nothing to change if this passes: Entra is throttling token requests for connection " +
		"{connection}, which resume {wait}. If it persists, look for something else requesting tokens with the " +
		"same client id in a loop."
)

var (
	adviceEntraAdminConsentApp = &advice{category: FixConfiguration,
		what: "admin consent for the app's permissions is missing", fix: fixEntraAdminConsentApp}
	adviceEntraCAApp = &advice{category: FixConfiguration,
		what: "a Conditional Access policy blocks the app", fix: fixEntraCAApp}
)

// entraWrappers are the generic codes Entra puts before the specific one
// ("AADSTS70002: Error validating credentials. AADSTS500133: Assertion is
// not within its valid time range", github.com/MicrosoftDocs/azure-docs/issues/16399).
// A more specific code in the same answer is diagnosed instead.
var entraWrappers = map[int]bool{70002: true}

// entraCodes are the AADSTS codes that matter to refresh-token and
// client-credentials requests and to the consent that precedes them. Unless
// noted, each meaning is from
// https://learn.microsoft.com/entra/identity-platform/reference-error-codes,
// put in our own words.
var entraCodes = map[int]advice{
	// The grant is over.
	70008: {category: Reauthorize, deadRT: true,
		what: "the refresh token or authorization code expired or was revoked", fix: fixReauthorize},
	// 90 days without use: github.com/Azure/azure-cli/issues/14244 ("was
	// inactive for 90.00:00:00").
	700082: {category: Reauthorize, deadRT: true,
		what: "the refresh token expired after going unused", fix: fixEntraInactive},
	50173: {category: Reauthorize, deadRT: true,
		what: "the grant was revoked by a password change or an administrator", fix: fixEntraRevoked},
	50089: {category: Reauthorize, deadRT: true,
		what: "the grant expired", fix: fixReauthorize},
	50132: {category: Reauthorize, deadRT: true,
		what: "the session ended after a password change or expiry", fix: fixEntraRevoked},
	50133: {category: Reauthorize, deadRT: true,
		what: "the session was revoked after a password change or expiry", fix: fixEntraRevoked},
	70000: {category: Reauthorize, deadRT: true,
		what: "the refresh token or code is invalid", fix: fixEntraBadRefreshToken},
	// Answered with invalid_grant to a refresh token Entra cannot parse:
	// github.com/MicrosoftDocs/azure-docs/issues/63819.
	9002313: {category: Reauthorize, deadRT: true,
		what: "the request, usually its refresh token, is malformed", fix: fixEntraBadRefreshToken},
	50034: {category: Reauthorize, deadRT: true,
		what: "the account behind the grant no longer exists", fix: fixEntraUserGone},
	65001: {category: Reauthorize, deadRT: true,
		what: "consent to the app's permissions is missing", fix: fixConsent, appOnly: adviceEntraAdminConsentApp},
	65004: {category: Reauthorize, deadRT: true,
		what: "the user declined consent", fix: fixEntraDeclined},
	54005: {category: Reauthorize,
		what: "the authorization code was already redeemed", fix: fixEntraCodeRedeemed},

	// Policies that want a person.
	70043: {category: UserInteractionRequired, deadRT: true,
		what: "a Conditional Access sign-in frequency policy ended the grant", fix: fixEntraSignInFrequency},
	50076: {category: UserInteractionRequired, deadRT: true,
		what: "multi-factor authentication is now required", fix: fixEntraMFA},
	50078: {category: UserInteractionRequired, deadRT: true,
		what: "the multi-factor authentication presented earlier has expired", fix: fixEntraMFA},
	50079: {category: UserInteractionRequired, deadRT: true,
		what: "the account must register for multi-factor authentication", fix: fixEntraMFAEnroll},
	53003: {category: UserInteractionRequired,
		what: "a Conditional Access policy blocks token issuance", fix: fixEntraCA, appOnly: adviceEntraCAApp},
	53000: {category: UserInteractionRequired,
		what: "a Conditional Access policy requires a compliant device", fix: fixEntraCA, appOnly: adviceEntraCAApp},
	530032: {category: UserInteractionRequired,
		what: "a tenant security policy blocks the request", fix: fixEntraCA, appOnly: adviceEntraCAApp},

	// The account.
	50053: {category: AccountLocked,
		what: "the account is locked after repeated failed sign-ins, or the sign-in's IP address is blocked",
		fix:  fixEntraLocked},
	50057: {category: AccountLocked,
		what: "the account is disabled", fix: fixEntraDisabled},
	50055: {category: AccountLocked, deadRT: true,
		what: "the account's password has expired", fix: fixEntraPasswordExpired},
	50144: {category: AccountLocked, deadRT: true,
		what: "the account's on-premises password has expired", fix: fixEntraPasswordExpired},

	// The client secret.
	// Described as an invalid client_secret since 2019, and a generic
	// wrapper before (see entraWrappers).
	70002: {category: RotateClientSecret,
		what: "the client credentials could not be validated", fix: fixEntraCredentials},
	// The secret ID stored instead of its Value is a common cause:
	// github.com/OfficeDev/microsoft-365-agents-toolkit/issues/8621.
	7000215: {category: RotateClientSecret,
		what: "the client secret is not valid", fix: fixEntraSecretInvalid},
	7000222: {category: RotateClientSecret,
		what: "the client secret has expired", fix: fixEntraSecretExpired},

	// The app registration and the request.
	7000218: {category: FixConfiguration,
		what: "no client secret or assertion was sent", fix: fixEntraNoSecret},
	700025: {category: FixConfiguration,
		what: "the app is a public client and may not send a client secret", fix: fixEntraPublicClient},
	700027: {category: FixConfiguration,
		what: "the client assertion failed signature validation", fix: fixEntraAssertion},
	500133: {category: FixConfiguration,
		what: "the assertion is not within its valid time range", fix: fixEntraAssertion},
	700016: {category: FixConfiguration,
		what: "the app was not found in the tenant", fix: fixEntraAppNotFound},
	700011: {category: FixConfiguration,
		what: "the app was not found in the directory", fix: fixEntraAppNotFound},
	70001: {category: FixConfiguration,
		what: "the app is disabled", fix: fixEntraAppDisabled},
	7000112: {category: FixConfiguration,
		what: "the app is disabled", fix: fixEntraAppDisabled},
	700084: {category: FixConfiguration, deadRT: true,
		what: "the refresh token was issued to a single-page app and has expired", fix: fixEntraSPA},
	90002: {category: FixConfiguration,
		what: "the tenant was not found", fix: fixEntraTenant},
	9001023: {category: FixConfiguration,
		what: "the grant is not supported on the /common or /consumers endpoint", fix: fixEntraCommon},
	50194: {category: FixConfiguration,
		what: "a single-tenant app cannot use the /common endpoint", fix: fixEntraCommon},
	70011: {category: FixConfiguration,
		what: "the requested scope is invalid", fix: fixEntraScope},
	28002: {category: FixConfiguration,
		what: "the requested scope is invalid", fix: fixEntraScope},
	28003: {category: FixConfiguration,
		what: "the requested scope is empty", fix: fixEntraScope},
	700022: {category: FixConfiguration,
		what: "the scope names more than one API", fix: fixEntraScope},
	500011: {category: FixConfiguration,
		what: "the API the scopes name is not in the tenant", fix: fixEntraResource},
	650056: {category: FixConfiguration,
		what: "the app registration lacks the permissions asked for, or admin consent", fix: fixEntraResource},
	650057: {category: FixConfiguration,
		what: "the API is not among the app's configured permissions", fix: fixEntraResource},
	90094: {category: FixConfiguration,
		what: "administrator consent is required", fix: fixEntraAdminConsent, appOnly: adviceEntraAdminConsentApp},
	50105: {category: FixConfiguration,
		what: "the account is not assigned to the app", fix: fixEntraUserNotAssigned},
	70003: {category: FixConfiguration,
		what: "the grant type is not supported", fix: fixEntraGrantType},
	900144: {category: FixConfiguration,
		what: "the request lacks a required parameter", fix: fixEntraMissingParam},
	90014: {category: FixConfiguration,
		what: "the request lacks a required field", fix: fixEntraMissingParam},
	90100: {category: FixConfiguration,
		what: "a request parameter is empty or invalid", fix: fixEntraMissingParam},
	50011: {category: FixConfiguration,
		what: "the redirect URI is not registered for the app", fix: fixEntraRedirect},

	// Entra's own trouble.
	50196: {category: Throttled,
		what: "the same request was repeated too often (loop detected)", fix: fixEntraThrottled},
	90055: {category: Throttled,
		what: "the tenant is being throttled", fix: fixEntraThrottled},
	50000: {category: ProviderOutage,
		what: "the sign-in service failed to issue a token", fix: fixOutage},
	90006: {category: ProviderOutage,
		what: "a service Entra depends on is temporarily unavailable", fix: fixOutage},
	90033: {category: ProviderOutage,
		what: "the directory service is unavailable", fix: fixOutage},
	50033: {category: Transient,
		what: "a transient error occurred", fix: fixEntraTransient},
	90024: {category: Transient,
		what: "a transient error occurred", fix: fixEntraTransient},
	90012: {category: Transient,
		what: "the request timed out", fix: fixEntraTransient},
	70012: {category: Transient,
		what: "a server error occurred for a Microsoft account", fix: fixEntraTransient},
}
