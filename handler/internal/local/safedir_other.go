//go:build !unix

package local

// On systems without Unix permissions (Windows) the directory's ACL is
// the operator's to set; nothing is checked.
func checkOwnDir(string) error  { return nil }
func checkParents(string) error { return nil }
