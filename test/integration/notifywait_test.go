package integration

// Seed 003's deadlock one layer up (issue 17, item 2): while a lookup
// waits for its loader the kernel holds the lookup's directory, so an
// entry notify for that directory cannot complete until the lookup's
// reply. A registration through the socket made by, or for, the loader
// serving that lookup must not wait for that notify (package lookup's
// "Notifies that cannot be delivered"). The tests judge by the daemon's
// count of notify waits that ran out (GET /v1/stats, extra
// notify_wait_timeouts), never by wall time: without the fix (build tag
// mutant_notifywait) each such registration waits out the 2 s bound and
// counts one; a busy machine makes nothing here fail.

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// extras returns the extra counters of d's GET /v1/stats.
func (d *ctlDaemon) extras(t *testing.T) map[string]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	st, err := d.c.Stats(ctx)
	if err != nil {
		t.Fatalf("GET /v1/stats: %v", err)
	}
	return st.Extra
}

// statDone waits, bounded, for a stat started by statInBackground.
func statDone(t *testing.T, res <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(condDeadline):
		t.Fatalf("%s did not return within %v", what, condDeadline)
		return nil
	}
}

// An exec loader program that provides the name it was run for by
// running the real `devfsd ctl register` (its process group is the
// loader's) answers the stat from the test process with the node, and its
// registrations did not wait for the kernel notify the lookup's directory
// keeps back: neither that of a companion name first (no lookup waits for
// it: it skips because the loader makes it), nor that of the name itself.
func TestExecLoaderCtlRegisterDoesNotWaitForItsNotify(t *testing.T) {
	ctl := `"` + devfsdBin + `" ctl --socket="$DEVFSD_SOCKET" register`
	prog := writeScript(t, ctl+` "${DEVNAME}-companion" char 1 5 || exit 1`+"\n"+
		`exec `+ctl+` "$DEVNAME" char 1 3`+"\n")
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=20s",
		"--loader-timeout=20s", "--negative-timeout=0s")
	before := d.extras(t)
	for i, name := range []string{"viactl0", "viactl1"} {
		err := statDone(t, statInBackground(d.path(name)), "stat of "+name)
		if err != nil {
			t.Fatalf("stat %s: %v (the program registers it through ctl)", name, err)
		}
		if _, err := os.Lstat(d.path(name + "-companion")); err != nil {
			t.Fatalf("lstat %s-companion: %v (the program registered it first)", name, err)
		}
		after := d.extras(t)
		if n := after["notify_wait_timeouts"] - before["notify_wait_timeouts"]; n != 0 {
			t.Fatalf("after %d misses answered through ctl, %d notify waits ran out: "+
				"the loader's registration waited for a notify its own lookup blocks", i+1, n)
		}
		if n := after["notify_wait_skipped"] - before["notify_wait_skipped"]; n != 2 {
			t.Fatalf("the loader's two registrations for %s skipped %d notify waits, want 2", name, n)
		}
		before = after
	}
}

// A registration by someone else (not the loader) of the name a lookup is
// loading does not wait either: the lookup's reply installs the entry, and
// a lookup of it meanwhile joins the load. The loader here is a program
// that waits, reading a FIFO, until the test has registered the name.
func TestRegisterOfALoadingNameDoesNotWaitForItsNotify(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	prog := writeScript(t, `read line < "`+fifo+`"`+"\n")
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=20s",
		"--loader-timeout=20s", "--negative-timeout=0s")
	before := d.extras(t)
	res := statInBackground(d.path("byother0"))
	until(t, "the lookup of byother0 to wait for its program", func() bool {
		return d.extras(t)["lookup_in_flight"] == 1
	})
	d.mustCtl(t, "register", "byother0", "char", "1", "3")
	// Release the program: it exits 0, the lookup answers from the tree.
	// Opening the FIFO for writing blocks until the program reads it.
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("done\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := statDone(t, res, "stat of byother0"); err != nil {
		t.Fatalf("stat byother0: %v (registered while its lookup waited)", err)
	}
	after := d.extras(t)
	if n := after["notify_wait_timeouts"] - before["notify_wait_timeouts"]; n != 0 {
		t.Fatalf("%d notify waits ran out: the registration of a name being loaded waited for a notify its lookup blocks", n)
	}
	if after["notify_wait_skipped"] == before["notify_wait_skipped"] {
		t.Fatal("the registration of a name being loaded waited for its notify")
	}
	// Elsewhere, a registration waits as before, and an lstat right after
	// sees it.
	d.mustCtl(t, "register", "elsewhere0", "char", "1", "5")
	var st syscall.Stat_t
	if err := syscall.Lstat(d.path("elsewhere0"), &st); err != nil {
		t.Fatalf("lstat right after register: %v", err)
	}
	if got := d.extras(t); got["notify_wait_skipped"] != after["notify_wait_skipped"] {
		t.Errorf("a registration with no lookup in flight skipped its notify wait (skipped %s → %s)",
			strconv.FormatUint(after["notify_wait_skipped"], 10), strconv.FormatUint(got["notify_wait_skipped"], 10))
	}
}
