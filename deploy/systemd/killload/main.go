// Command killload is the kill test (package killtest) against a
// devfsd@.service run by a real systemd: run-under-systemd.sh runs it in
// the namespaces of its systemd, where it kills the unit's main process
// with SIGKILL at random moments while its workers use the mount and a
// view, and systemd starts the daemon again with the descriptors of the
// unit's file descriptor store. It prints the figures and every problem,
// and exits 1 if there was one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/killtest"
)

func main() {
	unit := flag.String("unit", "", "the devfsd@ unit")
	mount := flag.String("mount", "", "its mount point")
	view := flag.String("view", "", "a view of it")
	allow := flag.String("view-allow", "", "the view's allow globs, comma-separated")
	sock := flag.String("socket", "", "its control socket")
	seed := flag.Int64("seed", time.Now().UnixNano(), "random seed")
	flag.Parse()
	c := client.New(*sock)
	defer c.Close()
	tg := killtest.Target{
		Mount: *mount, View: *view, ViewAllow: strings.Split(*allow, ","),
		Current: func() (int, bool) { return current(*unit) },
		List:    func(ctx context.Context) (wire.List, error) { return c.List(ctx, "", true) },
	}
	fmt.Printf("killload: seed %d\n", *seed)
	rep, err := killtest.Run(tg, killtest.Options{Seed: *seed})
	fmt.Println("killload:", rep.Summary())
	bad := rep.Problems()
	for _, p := range bad {
		fmt.Println("killload: FAIL:", p)
	}
	if err != nil {
		fmt.Println("killload: FAIL:", err)
		os.Exit(1)
	}
	if len(bad) > 0 {
		os.Exit(1)
	}
	fmt.Println("killload: PASS")
}

// current is the unit's main pid, and whether systemd has it active
// (Type=notify: after READY=1).
func current(unit string) (int, bool) {
	out, err := exec.Command("systemctl", "show", "-p", "MainPID", "-p", "ActiveState", "-p", "SubState", unit).Output()
	if err != nil {
		return 0, false
	}
	props := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			props[k] = v
		}
	}
	pid, _ := strconv.Atoi(props["MainPID"])
	return pid, props["ActiveState"] == "active" && props["SubState"] == "running"
}
