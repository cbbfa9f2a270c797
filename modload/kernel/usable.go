package kernel

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Usable reports whether the kernel source can show this machine's
// devices: sysfsRoot/dev/char lists devices, and this process runs in
// the initial user namespace (the kernel sends its uevents only to
// sockets of the initial user namespace's network namespaces, and sysfs
// of another namespace is not the machine's). why says what was found,
// for the log line that names the device source chosen at start.
func Usable(sysfsRoot string) (ok bool, why string) {
	if sysfsRoot == "" {
		sysfsRoot = "/sys"
	}
	ents, err := os.ReadDir(filepath.Join(sysfsRoot, "dev", "char"))
	if err != nil || len(ents) == 0 {
		return false, fmt.Sprintf("%s/dev/char lists no devices (%v)", sysfsRoot, err)
	}
	initial, err := initialUserNS()
	if err != nil {
		return false, fmt.Sprintf("cannot tell the user namespace: %v", err)
	}
	if !initial {
		return false, "not in the initial user namespace"
	}
	return true, fmt.Sprintf("%s/dev/char lists %d devices, initial user namespace", sysfsRoot, len(ents))
}

// initialUserNS reports whether this process is in the initial user
// namespace: its uid_map is the identity over all 2^32-1 ids.
func initialUserNS() (bool, error) {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false, err
	}
	return isIdentityMap(string(b)), nil
}

func isIdentityMap(m string) bool {
	f := strings.Fields(m)
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}
