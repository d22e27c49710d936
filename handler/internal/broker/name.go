package broker

// MaxConnectionNameLen is the longest connection name. With the longest
// suffix DefaultSecretNames adds ("-refresh-token", 14) a name stays well
// inside Key Vault's 127 characters for a secret name, and it is one DNS
// label long.
const MaxConnectionNameLen = 63

// ConnectionNamePattern is the connection-name rule as a regular
// expression, for documents and for tools that read the rule from here
// (adf_test.go). ValidConnectionName is the same rule as a byte loop;
// FuzzValidConnectionName holds the two to each other.
const ConnectionNamePattern = `^[a-z][a-z0-9-]{0,62}$`

// ValidConnectionName reports whether name is a connection name: 1-63
// characters of a-z, 0-9 and '-', starting with a letter (DESIGN.md), so
// that it is valid in a Key Vault secret name, a blob name and a URL path
// segment as it is. config refuses any other name in the connections
// file, and the HTTP routes any other name in a request, by this one rule.
//
// It is a byte loop, not a regular expression: the token route checks
// every request's name on its hit path.
func ValidConnectionName(name string) bool {
	if len(name) == 0 || len(name) > MaxConnectionNameLen || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
