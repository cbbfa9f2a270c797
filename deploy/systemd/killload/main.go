// Command killload is the kill test (package killtest) against a
// devfsd@.service run by a real systemd: run-under-systemd.sh runs it in
// the namespaces of its systemd, where it kills with SIGKILL, at random
// moments while its workers use the mount and a view, the daemon (the
// unit's keeper starts it again with the descriptors it keeps) and, for
// a few of the kills, the keeper itself (the unit's main process:
// systemd kills what is left of the unit and starts it again, and the
// new keeper gets the descriptors from the unit's file descriptor
// store). The daemon of the moment and its readiness are read from the
// keeper's log (--log). It prints the figures and every problem, and
// exits 1 if there was one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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
	logFile := flag.String("log", "", "the unit's log (the keeper's and the daemon's JSON lines)")
	keeperKills := flag.Int("keeper-kills", 4, "how many of the 20 kills go to the keeper")
	seed := flag.Int64("seed", time.Now().UnixNano(), "random seed")
	flag.Parse()
	c := client.New(*sock)
	defer c.Close()
	tg := killtest.Target{
		Mount: *mount, View: *view, ViewAllow: strings.Split(*allow, ","),
		Current: (&keeperLog{path: *logFile, ready: map[int]bool{}}).current,
		List:    func(ctx context.Context) (wire.List, error) { return c.List(ctx, "", true) },
		Keeper:  func() int { pid, _ := mainPID(*unit); return pid },
	}
	fmt.Printf("killload: seed %d\n", *seed)
	onStall := func(running time.Duration) {
		fmt.Printf("killload: a call has run for %v; where the daemons and the callers wait:\n%s", running.Round(time.Millisecond),
			killtest.DumpStacks(" mount "))
	}
	rep, err := killtest.Run(tg, killtest.Options{Seed: *seed, KeeperKills: *keeperKills, OnStall: onStall})
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

// mainPID is the unit's main pid (the keeper), and whether systemd has
// it active (Type=notify: after its READY=1).
func mainPID(unit string) (int, bool) {
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

// keeperLog follows the unit's log for the keeper's word on its daemon:
// "keeper: started the daemon" (pid), "the daemon names its successor"
// (successor) and "keeper: the daemon is ready" (pid).
type keeperLog struct {
	path  string
	off   int64
	part  []byte
	pid   int
	ready map[int]bool
}

// current is killtest.Target.Current: the daemon the keeper started or
// followed last, and whether it said READY=1.
func (l *keeperLog) current() (int, bool) {
	f, err := os.Open(l.path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, l.off, 1<<40))
	if err != nil {
		return l.pid, l.ready[l.pid]
	}
	l.off += int64(len(b))
	b = append(l.part, b...)
	lines := bytes.Split(b, []byte("\n"))
	l.part = append([]byte(nil), lines[len(lines)-1]...)
	for _, line := range lines[:len(lines)-1] {
		if !bytes.Contains(line, []byte(`"keeper: `)) {
			continue
		}
		var rec struct {
			Msg       string `json:"msg"`
			Pid       int    `json:"pid"`
			Successor int    `json:"successor"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Msg {
		case "keeper: started the daemon":
			l.pid = rec.Pid
		case "keeper: the daemon names its successor":
			l.pid = rec.Successor
		case "keeper: the daemon is ready":
			l.ready[rec.Pid] = true
		}
	}
	return l.pid, l.pid != 0 && l.ready[l.pid]
}
