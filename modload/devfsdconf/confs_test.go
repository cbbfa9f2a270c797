package devfsdconf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The real files of testdata/confs (copied byte for byte from the
// distributions, see its README.md), each read as the distribution laid
// it out: the tree is the root, so Debian's INCLUDE /etc/devfs/perms
// reads testdata/confs/classilla+dclinux/etc/devfs/perms.

// confCase is one real configuration and every line of it that is left
// out, with its reason.
type confCase struct {
	root, file string
	files      []string // the files read, in order
	rules      int
	restores   []string
	// leftOut: "FILE:LINE: reason substring", and whether devfsd 1.3.25
	// itself would have exited on the line.
	leftOut  []leftOut
	warnings []string // "FILE:LINE: substring"
}

type leftOut struct {
	at      string
	refused bool
}

var realConfs = []confCase{
	{
		root: "", file: "/nipuL+crux-core.devfsd.conf", files: []string{"/nipuL+crux-core.devfsd.conf"}, rules: 3,
	},
	{
		root: "", file: "/gdha+mkcdrec.devfsd.conf", files: []string{"/gdha+mkcdrec.devfsd.conf"}, rules: 3,
	},
	{
		// Line 128 includes a directory of busybox's packages that this
		// tree (like most machines) lacks: busybox's devfsd exited there
		// (read_config_file: "read config file: ..." and die); here the
		// line is reported and the 34 rules around it load.
		//
		// The links busybox's example makes with ln and removes with rm
		// name paths relative to /dev, where devfsd ran its programs;
		// devfsd helper runs them in /, where they would make /cdrom on
		// the host: left out for safety (the line says to write
		// $mntpnt/cdrom).
		root: "", file: "/mirror+busybox.examples.devfsd.conf", files: []string{"/mirror+busybox.examples.devfsd.conf"},
		rules: 24, restores: []string{"/lib/dev-state"},
		leftOut: append(relative("/mirror+busybox.examples.devfsd.conf",
			"67 /bin/ln cdrom", "68 /bin/rm cdrom", "75 /bin/ln video", "76 /bin/rm video", "77 /bin/ln radio", "78 /bin/rm radio",
			"98 /bin/ln usbmouse", "99 /bin/rm usbmouse", `122 /bin/ln ost/\2\1`, `123 /bin/rm ost/\2\1`),
			leftOut{"/mirror+busybox.examples.devfsd.conf:128: INCLUDE /etc/devfs/busybox/: no such file or directory; left out, the rest of the configuration is loaded", true}),
	},
	{
		// The same for Mandrake's conf.d lines, which run ln and rm
		// through PATH.
		root: "", file: "/mirror+busybox.examples.devfsd.conf.2003-10-09", files: []string{"/mirror+busybox.examples.devfsd.conf.2003-10-09"},
		rules: 37, restores: []string{"/lib/dev-state"},
		leftOut: relative("/mirror+busybox.examples.devfsd.conf.2003-10-09",
			"68 /bin/ln cdrom", "69 /bin/rm cdrom", "77 /bin/ln video", "78 /bin/rm video", "79 /bin/ln radio", "80 /bin/rm radio",
			"95 /bin/ln usbmouse", "96 /bin/rm usbmouse", `118 /bin/ln ost/\2\1`, `119 /bin/rm ost/\2\1`,
			"131 ln dvd", "132 rm dvd", "158 ln modem", "159 rm modem", "164 ln mouse", "165 rm mouse",
			"170 ln psaux", "171 rm psaux", "180 ln ttyS0", "181 rm ttyS0"),
	},
	{
		// Debian: devfsd.conf (3 rules) INCLUDEs perms (227 lines, 224
		// PERMISSIONS rules) and dir.conf (a comment only).
		root: "classilla+dclinux", file: "/etc/devfs/devfsd.conf",
		files: []string{"/etc/devfs/devfsd.conf", "/etc/devfs/perms", "/etc/devfs/dir.conf"}, rules: 3 + 224,
	},
}

// relative lists EXECUTE lines left out for a relative path: each spec
// is "LINE PROGRAM PATH".
func relative(file string, specs ...string) []leftOut {
	var out []leftOut
	for _, sp := range specs {
		f := strings.Fields(sp)
		out = append(out, leftOut{fmt.Sprintf("%s:%s: EXECUTE %s with the relative path %s: devfsd ran programs in its mount point, "+
			"devfsd helper runs them in /, where this would change /%s: left out for safety; write $mntpnt/%s", file, f[0], f[1], f[2], f[2], f[2]), false})
	}
	return out
}

func realOpts(root string) Options {
	o := testOpts()
	o.Files = RootFiles{Root: filepath.Join("testdata", "confs", root)}
	return o
}

// Every real file loads; what is left out is exactly the lines listed,
// for the reasons listed.
func TestRealConfsLoad(t *testing.T) {
	for _, tc := range realConfs {
		t.Run(strings.TrimPrefix(tc.file, "/"), func(t *testing.T) {
			cfg, err := Load(tc.file, realOpts(tc.root))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := strings.Join(cfg.Files, " "); got != strings.Join(tc.files, " ") {
				t.Errorf("files read %q, want %q", got, strings.Join(tc.files, " "))
			}
			if len(cfg.Rules) != tc.rules {
				t.Errorf("%d rules, want %d", len(cfg.Rules), tc.rules)
			}
			var rs []string
			for _, r := range cfg.Restores {
				rs = append(rs, r.Dir)
			}
			if strings.Join(rs, " ") != strings.Join(tc.restores, " ") {
				t.Errorf("restores %q, want %q", rs, tc.restores)
			}
			var left, warns []string
			for _, l := range cfg.Lines {
				if l.LeftOut != "" {
					left = append(left, fmt.Sprintf("%s: %s refused=%v", l.Pos, l.LeftOut, l.Refused))
				}
				for _, w := range l.Warnings {
					warns = append(warns, fmt.Sprintf("%s: %s", l.Pos, w))
				}
			}
			var want []string
			for _, lo := range tc.leftOut {
				want = append(want, fmt.Sprintf("%s refused=%v", lo.at, lo.refused))
			}
			if strings.Join(left, "\n") != strings.Join(want, "\n") {
				t.Errorf("left out:\n%s\nwant:\n%s", strings.Join(left, "\n"), strings.Join(want, "\n"))
			}
			if len(warns) != len(tc.warnings) {
				t.Errorf("warnings:\n%s\nwant %d", strings.Join(warns, "\n"), len(tc.warnings))
			}
			// Every entry line is accounted for: a rule, a directive, or
			// left out.
			directives := 0
			for _, l := range cfg.Lines {
				if l.LeftOut == "" && isDirective(l.Text) {
					directives++
				}
			}
			if got := len(cfg.Rules) + directives + len(left); got != len(cfg.Lines) {
				t.Errorf("%d rules + %d directives + %d left out != %d entry lines", len(cfg.Rules), directives, len(left), len(cfg.Lines))
			}
		})
	}
}

// The testdata copies are the files as shipped: the tests run on what
// the distributions had, not on an edited version.
func TestRealConfsAreUnedited(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "confs", "mirror+busybox.examples.devfsd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("REGISTER\t^cdroms/cdrom0$\tEXECUTE /bin/ln -sf $devname cdrom\n")) ||
		!bytes.Contains(b, []byte("LOOKUP\t\t^(sd[a-z]+)[0-9]+$\tEXECUTE /bin/dd if=$mntpnt/\\1 of=/dev/null count=1\n")) {
		t.Error("the busybox example is not the file busybox shipped")
	}
	perms, err := os.ReadFile(filepath.Join("testdata", "confs", "classilla+dclinux", "etc", "devfs", "perms"))
	if err != nil || !bytes.HasPrefix(bytes.SplitAfter(perms, []byte("\n"))[3], []byte("REGISTER\t\t.*/cd$\t\tPERMISSIONS\troot.cdrom\t0660\n")) {
		t.Errorf("Debian's perms is not the file Debian shipped (%v)", err)
	}
}

// Debian's rules: every matching line runs in order, so a later line for
// the same name wins (isdninfo: root.dialout 0660, then root.root 0600),
// and an unanchored expression matches anywhere (.*/cd$).
func TestRealConfDebianOrder(t *testing.T) {
	cfg, err := Load("/etc/devfs/devfsd.conf", realOpts("classilla+dclinux"))
	if err != nil {
		t.Fatal(err)
	}
	final := func(name string) string {
		s := ""
		for i := range cfg.Rules {
			r := &cfg.Rules[i]
			if r.Event == Register && r.Action == Permissions {
				if _, ok := r.Match(name); ok {
					s = fmt.Sprintf("%d.%d %04o", r.UID, r.GID, r.Mode)
				}
			}
		}
		return s
	}
	for name, want := range map[string]string{
		"isdninfo":                         "0.0 0600",
		"ttyS0":                            "0.5 0666", // ^ttyS[^/]* dialout, then ^tty[^/]* tty 0666
		"tty1":                             "0.5 0666",
		"console":                          "0.5 0600",
		"ide/host0/bus1/target0/lun0/cd":   "0.24 0660",
		"scsi/host0/bus0/target0/lun0/cd":  "0.24 0660",
		"vcs1":                             "0.0 0600",
		"random":                           "0.0 0666",
		"dsp":                              "0.29 0660",
		"sound/dsp":                        "",
		"scsi/host0/bus0/target0/lun0/cd2": "",
	} {
		if got := final(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// Debian's modules.devfs (/etc/modutils/devfsd): probe lines for the
// floppy names, alias lines for the others.
func TestRealModulesDevfsDebian(t *testing.T) {
	m, err := LoadModules("/etc/modutils/devfsd", RootFiles{Root: filepath.Join("testdata", "confs", "classilla+dclinux")})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Diags) != 0 {
		t.Errorf("lines not used: %v", m.Diags)
	}
	for name, want := range map[string]string{
		"/dev/fd0":      "fd0 floppy",
		"/dev/fd7H1440": "fd7 floppy",
		"/dev/sr3":      "sr_mod",
		"/dev/ttyS0":    "serial",
		"/dev/video":    "v4l",
		"/dev/vbi9":     "v4l",
		"/dev/ttyS4":    "",
		"/dev/dsp":      "",
	} {
		if got := strings.Join(m.Plan(name).Modules, " "); got != want {
			t.Errorf("Plan(%s) = %q, want %q", name, got, want)
		}
	}
}

// What the real files do not show but files of the same era did: rwx
// modes, blanks mixed, no final newline, keywords in any case.
func TestDevfsdLineForms(t *testing.T) {
	src := "register \t^fd[0-7]\t \tpermissions\troot.floppy   rw-rw----\n" +
		"REGISTER ^misc/psaux$ PERMISSIONS -1.-1 r--r--r--\n" +
		"REGISTER ^tts/0$ CFUNCTION GLOBAL mksymlink $devname modem\n" +
		"REGISTER ^tts/1$ CFUNCTION GLOBAL symlink /dev/$devname modem1\n" +
		"UNREGISTER ^tts/0$ CFUNCTION GLOBAL unlink modem\n" +
		"REGISTER ^x$ CFUNCTION GLOBAL system /bin/true\n" +
		"REGISTER ^x$ CFUNCTION /lib/security/pam_console_apply_devfsd.so pam_console_apply_single $devpath\n" +
		"REGISTER ^x$ CFUNCTION GLOBAL unlink\n" +
		"REGISTER ^x$ PERMISSIONS root.root rw-rw-\n" +
		"REGISTER ^x$ PERMISSIONS rootroot 0600\n" +
		"REGISTER ^x$ PERMISSIONS root.root rwsr-xr-x\n" +
		"REGISTER ^x$ PERMISSIONS root.vcsa 0600\n" +
		"LOOKUP floppy/* MODLOAD" // no final newline
	cfg, err := Parse("/etc/devfsd.conf", []byte(src), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range cfg.Rules {
		got = append(got, ruleLine(r))
	}
	want := []string{
		"1 REGISTER ^fd[0-7] PERMISSIONS 0.25 0660",
		"2 REGISTER ^misc/psaux$ PERMISSIONS -1.-1 0444",
		"3 REGISTER ^tts/0$ CFUNCTION GLOBAL mksymlink $devname modem",
		"4 REGISTER ^tts/1$ CFUNCTION GLOBAL symlink /dev/$devname modem1",
		"5 UNREGISTER ^tts/0$ CFUNCTION GLOBAL unlink modem",
		"12 REGISTER ^x$ PERMISSIONS 0.0 0600",
		"13 LOOKUP floppy/* MODLOAD",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var left []string
	for _, l := range cfg.Lines {
		if l.LeftOut != "" {
			left = append(left, fmt.Sprintf("%d refused=%v %s", l.Pos.Line, l.Refused, l.LeftOut))
		}
	}
	wantLeft := []string{
		"6 refused=false CFUNCTION GLOBAL system: devfsd looked any function of its own or of libc up by name",
		"7 refused=false CFUNCTION /lib/security/pam_console_apply_devfsd.so pam_console_apply_single calls a function in a shared object",
		"8 refused=false CFUNCTION GLOBAL unlink takes 1 arguments, got 0",
		"9 refused=true PERMISSIONS root.root rw-rw-: mode \"rw-rw-\"",
		"10 refused=true PERMISSIONS rootroot 0600: owner \"rootroot\": want USER.GROUP",
		"11 refused=false PERMISSIONS root.root rwsr-xr-x: mode \"rwsr-xr-x\": 's' at 3",
	}
	if len(left) != len(wantLeft) {
		t.Fatalf("left out:\n%s\nwant:\n%s", strings.Join(left, "\n"), strings.Join(wantLeft, "\n"))
	}
	for i := range left {
		if !strings.HasPrefix(left[i], wantLeft[i]) {
			t.Errorf("left out %d: %q, want it to start %q", i, left[i], wantLeft[i])
		}
	}
	if w := cfg.Lines[11].Warnings; len(w) != 1 || !strings.Contains(w[0], `unknown group "vcsa": gid 0 (root) is used instead`) {
		t.Errorf("line 12 warnings %q", w)
	}
	// An unanchored POSIX ERE: floppy/* is "floppy" then any number of
	// slashes, anywhere in the name.
	for name, want := range map[string]bool{"floppy/0": true, "floppy": true, "xfloppyx": true, "flop": false} {
		if _, ok := cfg.Rules[6].Match(name); ok != want {
			t.Errorf("floppy/* on %q: %v", name, ok)
		}
	}
	var rep strings.Builder
	if err := WriteReport(&rep, cfg); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"/etc/devfsd.conf:1: runs: REGISTER ^fd[0-7] PERMISSIONS uid 0 gid 25 mode 0660\n",
		"/etc/devfsd.conf:9: left out (devfsd 1.3.25 exits here too): PERMISSIONS root.root rw-rw-",
		"/etc/devfsd.conf:12: warning: unknown group",
		"1 files, 7 rules run, 0 restores; 6 lines left out, 2 of which devfsd 1.3.25 would have refused\n",
	} {
		if !strings.Contains(rep.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, rep.String())
		}
	}
}

// modules.devfs as modprobe read it: alias chains and patterns, probe
// (first that loads), probeall (all), include, off; other keywords are
// listed as not used.
func TestModulesPlan(t *testing.T) {
	files := mapFiles{
		"/etc/modules.devfs": "# devfsd's\n" +
			"alias /dev/dsp sound-slot-0   # OSS\n" +
			"alias sound-slot-0 sound\n" +
			"alias /dev/tts/* serial\n" +
			"probe /dev/fd0 fd0 floppy\n" +
			"probeall /dev/snd/* snd-pcm snd-timer sound-slot-0\n" +
			"alias /dev/loop-control off\n" +
			"alias x y\nalias y x\n" +
			"include modules.extra\n" +
			"include /etc/none\n" +
			"options serial irq=4\n" +
			"pre-install sound /bin/sh -c 'rm -rf /'\n" +
			"alias broken\n",
		"/etc/modules.extra": "alias /dev/kvm kvm-intel\nalias /dev/dsp not-this-one\n",
	}
	m, err := LoadModules("/etc/modules.devfs", files)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mods string
		all        bool
	}{
		{"/dev/dsp", "sound", false},
		{"/dev/tts/0", "serial", false},
		{"/dev/fd0", "fd0 floppy", false},
		{"/dev/snd/pcmC0D0p", "snd-pcm snd-timer sound", true},
		{"/dev/loop-control", "", false},
		{"x", "", false},
		{"/dev/kvm", "kvm-intel", false},
		{"/dev/none", "", false},
		{"sound", "sound", false},
	}
	for _, tt := range tests {
		p := m.Plan(tt.name)
		if got := strings.Join(p.Modules, " "); got != tt.mods || p.All != tt.all {
			t.Errorf("Plan(%s) = %q all=%v, want %q all=%v", tt.name, got, p.All, tt.mods, tt.all)
		}
	}
	if got := strings.Join(m.Files, " "); got != "/etc/modules.devfs /etc/modules.extra" {
		t.Errorf("files %q", got)
	}
	var diags []string
	for _, d := range m.Diags {
		diags = append(diags, d.Error())
	}
	want := []string{
		"/etc/modules.devfs:11: include /etc/none: no such file",
		`/etc/modules.devfs:12: "options" lines are not used for MODLOAD`,
		`/etc/modules.devfs:13: "pre-install" lines are not used for MODLOAD`,
		"/etc/modules.devfs:14: alias takes a name and a module, got 1 words",
	}
	if len(diags) != len(want) {
		t.Fatalf("diagnostics:\n%s", strings.Join(diags, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(diags[i], want[i]) {
			t.Errorf("diagnostic %d: %q, want %q", i, diags[i], want[i])
		}
	}
	if _, err := LoadModules("/etc/missing", files); err == nil {
		t.Error("a missing modules file is no error")
	}
}
