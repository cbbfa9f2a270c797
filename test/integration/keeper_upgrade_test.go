package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/killtest"
)

// upgrade runs `devfsd ctl upgrade --json` against the kept daemon.
func (d *keptDaemon) upgrade() wire.Upgrade {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mountDeadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, devfsdBin, "ctl", "--socket="+d.sock, "upgrade", "--json").Output()
	if err != nil {
		d.t.Fatalf("devfsd ctl upgrade: %v\n%s", err, out)
	}
	var res wire.Upgrade
	if err := json.Unmarshal(out, &res); err != nil {
		d.t.Fatalf("devfsd ctl upgrade: %v: %q", err, out)
	}
	return res
}

// probes stats the mount and the view and opens null until stopped,
// recording every call that fails or takes longer than 2 s.
type probes struct {
	stopc chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	mu    sync.Mutex
	bad   []string
	calls int
}

func startProbes(dirs ...string) *probes {
	p := &probes{stopc: make(chan struct{})}
	for _, dir := range dirs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case <-p.stopc:
					return
				default:
				}
				t0 := time.Now()
				var sb unix.Stat_t
				err := unix.Lstat(filepath.Join(dir, "null"), &sb)
				if err == nil {
					var fd int
					if fd, err = unix.Open(filepath.Join(dir, "null"), unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
						unix.Close(fd)
					}
				}
				if err == nil {
					if err = unix.Lstat(filepath.Join(dir, "nosuch-probe"), &sb); errors.Is(err, unix.ENOENT) {
						err = nil
					} else if err == nil {
						err = errors.New("nosuch-probe exists")
					}
				}
				took := time.Since(t0)
				p.mu.Lock()
				p.calls++
				if err != nil || took > 2*time.Second {
					p.bad = append(p.bad, fmt.Sprintf("%s: %v, took %v (at %s)", dir, err, took, time.Now().Format("15:04:05.000")))
				}
				p.mu.Unlock()
			}
		}()
	}
	return p
}

func (p *probes) stop() (int, []string) {
	p.once.Do(func() { close(p.stopc) })
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.bad
}

// `devfsd ctl upgrade` under the keeper keeps the keeping: the old daemon
// names its successor (MAINPID=) and exits, and the keeper (a child
// subreaper, whose child the successor becomes) follows the successor.
// Then the kill test kills the successor and its own successors with
// SIGKILL: the keeper starts each again with the kept descriptors, and no
// call fails (ENOTCONN, EIO) or takes longer than 2 s. A second upgrade
// after the kills is followed too, and SIGTERM to the keeper reaches the
// daemon of the moment, whose clean stop unmounts everything and ends the
// keeper.
func TestKeeperFollowsAnUpgrade(t *testing.T) {
	d := startKept(t, false)
	var dev0 unix.Stat_t
	if err := unix.Stat(d.mnt, &dev0); err != nil {
		t.Fatal(err)
	}
	made := filepath.Join(d.mnt, "p-before-upgrade")
	if err := unix.Mknod(made, unix.S_IFIFO|0o640, 0); err != nil {
		t.Fatal(err)
	}
	pr := startProbes(d.mnt, d.view)
	defer pr.stop()

	old, _ := d.current()
	res := d.upgrade()
	if res.OldPid != old || res.NewPid == old || res.NewPid <= 0 {
		t.Fatalf("upgrade: %+v; want pid %d replaced", res, old)
	}
	if !exitsWithin(old, condDeadline) {
		t.Fatalf("the old daemon %d did not exit after the upgrade", old)
	}
	if got := d.waitReady(old); got != res.NewPid {
		t.Fatalf("the keeper follows pid %d, want the successor %d", got, res.NewPid)
	}
	until(t, "the keeper says it follows the successor", func() bool {
		return strings.Contains(d.out.String(), "keeper: the daemon handed over to its successor; following it")
	})
	select {
	case <-d.exited:
		t.Fatalf("the keeper ended with the upgraded daemon: %v", d.err)
	default:
	}

	// The successor, killed, is started again with the kept descriptors,
	// and so are the daemons after it.
	d.killTest(killtest.Options{Seed: time.Now().UnixNano(), Kills: 5, Duration: 3 * time.Second, Ready: mountDeadline})

	// A second upgrade, after the restarts.
	cur, _ := d.current()
	res = d.upgrade()
	if res.OldPid != cur || !exitsWithin(cur, condDeadline) {
		t.Fatalf("second upgrade: %+v from pid %d", res, cur)
	}
	if got := d.waitReady(cur); got != res.NewPid {
		t.Fatalf("after the second upgrade the keeper follows pid %d, want %d", got, res.NewPid)
	}
	calls, bad := pr.stop()
	t.Logf("probes: %d calls", calls)
	for _, b := range bad {
		t.Error("probe:", b)
	}
	var sb unix.Stat_t
	if err := unix.Lstat(made, &sb); err != nil {
		t.Errorf("the node made before the upgrade: %v", err)
	}
	if err := unix.Stat(d.mnt, &sb); err != nil || sb.Dev != dev0.Dev {
		t.Errorf("the mount's device is %d (%v), was %d: it was made again", sb.Dev, err, dev0.Dev)
	}
	if err := syscall.Kill(res.NewPid, 0); err != nil {
		t.Fatalf("the successor %d: %v", res.NewPid, err)
	}
	d.stopCleanly()
	if !exitsWithin(res.NewPid, condDeadline) {
		t.Errorf("the last successor %d did not exit at the keeper's clean stop", res.NewPid)
	}
}
