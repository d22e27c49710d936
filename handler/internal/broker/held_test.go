package broker_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryTokenRequestChecksTheLock (issue 15, defect 1): the broker's
// only call of Grant.Token is in redeem, which checks that the lock is
// held right before it. A new path (a retry, a standby, a sweep) that
// called the grant itself could redeem a refresh token after its lock was
// lost.
func TestEveryTokenRequestChecksTheLock(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || fn.Name.Name == "redeem" {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Token" {
					return true
				}
				if inner, ok := sel.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "grant" {
					t.Errorf("%s: %s calls the grant itself; call b.redeem, which checks that the lock is held right before the request",
						fset.Position(call.Pos()), fn.Name.Name)
				}
				return true
			})
		}
	}
}
