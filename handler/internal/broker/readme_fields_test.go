package broker_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/tokenrefresher/tokenrefresher/handler/internal/broker"
)

// TestREADMENamesEveryStatusField: the README's row for
// GET /api/connections names every JSON field of a connection's status,
// so a field added to ConnectionStatus is documented where operators read.
func TestREADMENamesEveryStatusField(t *testing.T) {
	raw, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if strings.HasPrefix(line, "| `GET /api/connections`") {
			row = line
			break
		}
	}
	if row == "" {
		t.Fatal("README.md has no row for GET /api/connections")
	}
	typ := reflect.TypeFor[broker.ConnectionStatus]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		if !strings.Contains(row, "`"+name+"`") {
			t.Errorf("README's GET /api/connections row does not name field %q (ConnectionStatus.%s)", name, typ.Field(i).Name)
		}
	}
}
