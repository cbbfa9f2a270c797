package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// `devfsd helper` answers a MODLOAD lookup in one request: the module's
// nodes, with what the REGISTER rules did to them (PERMISSIONS, a
// compatibility link), travel with the done. A stat from another process
// sees the node with the rule's mode at once; a node of the module that
// existed already is left as it was.
func TestConfModloadAnswersInOneRequest(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	d.mustCtl(t, "register", "--mode", "0606", "mixer", "char", "14", "0")
	startConfHelper(t, d, "REGISTER ^dsp$ PERMISSIONS root.root 0604\n"+
		"REGISTER ^(dsp|mixer)$ CFUNCTION GLOBAL mksymlink ../$devname sound/\\1\n"+
		"LOOKUP ^dsp$ MODLOAD\n")
	got, err := statFromChild(t, d.path("dsp"))
	if err != nil || got != "character special file e:3" {
		t.Fatalf("stat(1) of dsp: %q, %v", got, err)
	}
	st, err := os.Lstat(d.path("dsp"))
	if err != nil || st.Mode().Perm() != 0o604 || st.Sys().(*syscall.Stat_t).Gid != 0 {
		t.Fatalf("dsp: %v %v, want 0604 root:root from the REGISTER rule", st.Mode(), err)
	}
	if target, err := os.Readlink(d.path("sound/dsp")); err != nil || target != "../dsp" {
		t.Fatalf("sound/dsp: %q %v, want the compatibility link", target, err)
	}
	if st, err := os.Lstat(d.path("mixer")); err != nil || st.Mode().Perm() != 0o606 {
		t.Fatalf("mixer, registered before: %v %v, want 0606 as it was", st.Mode(), err)
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Helper.Answered != 1 || s.Helper.AnsweredRegistering != 1 {
		t.Fatalf("helper stats %+v, want the lookup answered in one request", s.Helper)
	}
}

// A REGISTER rule that runs a program makes the helper register the
// module's nodes before the rules run (a program may look at the mount),
// and the program runs only for the nodes that were made, as when every
// registration was a request of its own.
func TestConfModloadWithExecuteRegistersFirst(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	d.mustCtl(t, "register", "--mode", "0606", "mixer", "char", "14", "0")
	ran := filepath.Join(t.TempDir(), "ran")
	// The program asks the socket (a stat of the name being looked up
	// through the mount would wait on that very lookup, in the kernel).
	prog := writeScript(t, devfsdBin+" ctl --socket=\"$DEVFSD_SOCKET\" stat \"$DEVNAME\" >/dev/null && echo \"$DEVNAME\" >> "+ran+"\n")
	startConfHelper(t, d, "REGISTER ^(dsp|mixer|audio)$ EXECUTE "+prog+"\nLOOKUP ^dsp$ MODLOAD\n")
	// The start-up scan ran the program for mixer, there already.
	read := func() []string {
		b, _ := os.ReadFile(ran)
		return strings.Fields(string(b))
	}
	until(t, "the start-up scan's program for mixer", func() bool { return len(read()) == 1 })
	if got := read(); got[0] != "mixer" {
		t.Fatalf("the start-up scan ran the program for %q, want mixer", got)
	}
	if got, err := statFromChild(t, d.path("dsp")); err != nil || got != "character special file e:3" {
		t.Fatalf("stat(1) of dsp: %q, %v", got, err)
	}
	names := strings.Join(read()[1:], " ")
	if names != "dsp audio" && names != "audio dsp" {
		t.Fatalf("the REGISTER program ran for %q during the lookup, want dsp and audio (found through the socket), not mixer (there before)", names)
	}
	if s, _ := d.c.Stats(context.Background()); s.Helper.Answered != 1 || s.Helper.AnsweredRegistering != 0 {
		t.Fatalf("helper stats %+v, want a plain done after the registrations", s.Helper)
	}
}
