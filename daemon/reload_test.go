package daemon

import (
	"strings"
	"testing"

	"github.com/devfsd/devfsd/config"
)

// A reload may change the reloadable keys; any other change is refused
// whole, naming the key.
func TestDiffConfig(t *testing.T) {
	old := config.Defaults()
	next := old
	next.NegativeTimeout = 0
	next.Loader = "none"
	changed, err := DiffConfig(old, next)
	if err != nil || strings.Join(changed, ",") != "loader,negative_timeout" {
		t.Fatalf("changed %q, %v", changed, err)
	}
	next.MaxNodes = 7
	next.StateDir = "/var/lib/devfsd"
	if _, err := DiffConfig(old, next); err == nil || !strings.Contains(err.Error(), "max_nodes") ||
		!strings.Contains(err.Error(), "state_dir") {
		t.Fatalf("unreloadable change: %v", err)
	}
}
