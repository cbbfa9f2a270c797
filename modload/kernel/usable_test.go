package kernel

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestIsIdentityMap(t *testing.T) {
	for m, want := range map[string]bool{
		"         0          0 4294967295\n": true,
		"0 100000 65536\n":                   false,
		"0 0 1000\n":                         false,
		"":                                   false,
		"0 0 4294967295\n1 1 1\n":            false,
	} {
		if got := isIdentityMap(m); got != want {
			t.Errorf("isIdentityMap(%q) = %v", m, got)
		}
	}
}

func TestUsable(t *testing.T) {
	if ok, why := Usable(t.TempDir()); ok {
		t.Errorf("a sysfs without dev/char usable: %s", why)
	}
	f := fakeMachine(t)
	initial, err := initialUserNS()
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := Usable(f.root); ok != initial {
		t.Errorf("Usable(fake sysfs) = %v (%s); initial user namespace: %v", ok, why, initial)
	}
	// In a new user namespace, never (this test binary run there: see
	// TestMain).
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare")
	}
	self, err := os.Executable()
	must(t, err)
	out, err := exec.Command("unshare", "--user", "--map-root-user", "env", "KERNEL_TEST_USABLE=1", self).CombinedOutput()
	if err != nil && strings.Contains(string(out), "Operation not permitted") {
		t.Skipf("user namespaces not available: %s", out)
	}
	if err != nil || string(out) != "usable false: not in the initial user namespace\n" {
		t.Fatalf("in a user namespace: %v\n%s", err, out)
	}
}
