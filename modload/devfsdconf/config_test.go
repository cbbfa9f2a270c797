package devfsdconf

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// ids resolves the names the corpus uses, as Debian's base-passwd has
// them, so that the tests do not depend on the host's /etc/group.
var ids = map[string]uint32{"root": 0, "tty": 5, "disk": 6, "lp": 7, "kmem": 15, "dialout": 20, "cdrom": 24,
	"floppy": 25, "tape": 26, "audio": 29, "video": 44}

func lookupID(name string) (uint32, error) {
	if v, ok := ids[name]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("unknown %q", name)
}

func testOpts() Options {
	return Options{LookupUser: lookupID, LookupGroup: lookupID, Mountpoint: "/dev",
		Getenv: func(string) (string, bool) { return "", false }}
}

// mapFiles is a Files over a map: a key ending in "/" is a directory.
type mapFiles map[string]string

func (m mapFiles) Read(p string) ([]byte, []string, bool, error) {
	if d, ok := m[p]; ok {
		return []byte(d), nil, false, nil
	}
	prefix := strings.TrimSuffix(p, "/") + "/"
	seen := map[string]bool{}
	var names []string
	for k := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok && !strings.HasPrefix(rest, ".") {
			first, _, _ := strings.Cut(rest, "/")
			if !seen[first] {
				seen[first] = true
				names = append(names, first)
			}
		}
	}
	if len(names) == 0 {
		return nil, nil, false, &fs.PathError{Op: "read", Path: p, Err: fs.ErrNotExist}
	}
	sort.Strings(names)
	return nil, names, true, nil
}

func load(t *testing.T, name string) *Config {
	t.Helper()
	cfg, err := Load(filepath.Join("testdata", "corpus", name), testOpts())
	if err != nil {
		t.Fatalf("Load %s: %v", name, err)
	}
	return cfg
}

// ruleLine renders a rule for comparison: "LINE EVENT PATTERN ACTION ARGS".
func ruleLine(r Rule) string {
	s := fmt.Sprintf("%d %s %s %s", r.Pos.Line, r.Event, r.Pattern, r.Action)
	if r.Action == Permissions {
		return s + fmt.Sprintf(" %d.%d %04o", r.UID, r.GID, r.Mode)
	}
	if len(r.Args) > 0 {
		s += " " + strings.Join(r.Args, " ")
	}
	return s
}

func diagLines(c *Config) []string {
	var out []string
	for _, d := range c.Diags {
		out = append(out, d.Error())
	}
	return out
}

func TestCorpus(t *testing.T) {
	tests := []struct {
		file     string
		rules    []string
		restores []string
		diags    []string // substrings, one per diagnostic, in order
	}{
		{
			file: "01-compat.conf",
			rules: []string{
				"4 REGISTER .* MKOLDCOMPAT", "5 UNREGISTER .* RMOLDCOMPAT",
				"6 REGISTER .* MKNEWCOMPAT", "7 UNREGISTER .* RMNEWCOMPAT",
				"10 REGISTER misc MKOLDCOMPAT", "11 UNREGISTER misc RMOLDCOMPAT",
			},
		},
		{
			file: "02-modload.conf",
			rules: []string{
				"2 LOOKUP .* MODLOAD", "5 LOOKUP ^dsp$ MODLOAD", "6 LOOKUP ^(mixer|audio|sequencer)[0-9]*$ MODLOAD",
				`10 LOOKUP ^((ide|scsi)/host[0-9]+/bus[0-9]+/target[0-9]+/lun[0-9]+)/part[0-9]+$ EXECUTE /sbin/partx -a $mntpnt/\1/disc`,
				`11 LOOKUP ^(sd[a-z]+)[0-9]+$ EXECUTE /bin/dd if=$mntpnt/\1 of=/dev/null count=1`,
				`12 LOOKUP ^(hd[a-z])[0-9]+$ EXECUTE /bin/dd if=$mntpnt/\1 of=/dev/null count=1`,
			},
		},
		{
			file: "03-permissions.conf",
			rules: []string{
				"2 REGISTER ^tty[0-9]+$ PERMISSIONS 0.5 0620",
				"3 REGISTER ^vc/.* PERMISSIONS 0.5 0620",
				"4 REGISTER ^pty/s.* PERMISSIONS -1.5 0600",
				"5 REGISTER ^pts/.* PERMISSIONS -1.5 0600",
				"6 REGISTER ^tts/.* PERMISSIONS 0.20 0660",
				"7 REGISTER ^sound/.* PERMISSIONS 0.29 0660",
				"8 REGISTER ^(dsp|mixer|audio|sequencer)[0-9]*$ PERMISSIONS 0.29 0660",
				"9 REGISTER ^snd/.* PERMISSIONS 0.29 0660",
				"10 REGISTER ^cdroms/.* PERMISSIONS 0.24 0660",
				"11 REGISTER ^(scsi|ide)/host.*/cd$ PERMISSIONS 0.24 0660",
				"12 REGISTER ^v4l/.* PERMISSIONS 0.44 0660",
				"13 REGISTER ^dvb/card[0-9]+/[^/]+$ PERMISSIONS 0.44 0660",
				"14 REGISTER ^fb[0-9]+$ PERMISSIONS 0.44 0660",
				"15 REGISTER ^input/.* PERMISSIONS 0.0 0640",
			},
		},
		{
			file: "04-copy-restore.conf",
			rules: []string{
				"3 REGISTER ^pt[sy] IGNORE", "4 CREATE ^pt[sy] IGNORE", "5 CHANGE ^pt[sy] IGNORE", "6 DELETE ^pt[sy] IGNORE",
				"7 REGISTER ^log$ IGNORE", "8 CREATE ^log$ IGNORE", "9 CHANGE ^log$ IGNORE", "10 DELETE ^log$ IGNORE",
				"12 REGISTER .* COPY /lib/dev-state/$devname $devpath",
				"13 CREATE .* COPY $devpath /lib/dev-state/$devname",
				"14 CHANGE .* COPY $devpath /lib/dev-state/$devname",
				"15 DELETE .* EXECUTE /bin/rm -f /lib/dev-state/$devname",
			},
			restores: []string{"/lib/dev-state"},
		},
		{
			file: "05-gooch-sample.conf",
			rules: []string{
				"3 REGISTER .* MKOLDCOMPAT", "4 UNREGISTER .* RMOLDCOMPAT", "5 LOOKUP .* MODLOAD",
				"6 REGISTER ^cdroms/cdrom0$ CFUNCTION GLOBAL mksymlink $devname cdrom",
				"7 UNREGISTER ^cdroms/cdrom0$ CFUNCTION GLOBAL unlink cdrom",
				"8 REGISTER ^cdroms/cdrom0$ EXECUTE /bin/ln -sf $devname $mntpnt/cdrom",
				"9 REGISTER ^tts/0$ CFUNCTION GLOBAL mksymlink $devname modem",
				"13 LOOKUP snd MODLOAD",
				"15 ASYNC_OPEN ^dsp$ EXECUTE /bin/true",
				"16 REGISTER ^input/mice$ EXECUTE /bin/ln -sf $devname $mntpnt/usbmouse",
				"17 UNREGISTER ^input/mice$ EXECUTE /bin/rm -f $mntpnt/usbmouse",
				`18 REGISTER ^dvb/card([0-9]+)/([^/0-9]*)[0-9]+$ EXECUTE /bin/ln -sf /dev/$devname $mntpnt/ost/\2\1`,
			},
			diags: []string{
				"05-gooch-sample.conf:10: MFUNCTION calls a function in a shared object",
				"05-gooch-sample.conf:11: PERMISSIONS takes USER.GROUP and MODE, got 1 words",
				"05-gooch-sample.conf:12: regular expression \"^(sound/\": missing closing )",
				"05-gooch-sample.conf:13: warning: MODLOAD takes no arguments",
				"05-gooch-sample.conf:14: \"OPEN\" is not an event",
				"05-gooch-sample.conf:15: warning: ASYNC_OPEN events are never delivered",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg := load(t, tt.file)
			var got []string
			for _, r := range cfg.Rules {
				got = append(got, ruleLine(r))
			}
			if strings.Join(got, "\n") != strings.Join(tt.rules, "\n") {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.rules, "\n"))
			}
			var rs []string
			for _, r := range cfg.Restores {
				rs = append(rs, r.Dir)
			}
			if strings.Join(rs, " ") != strings.Join(tt.restores, " ") {
				t.Errorf("restores %q, want %q", rs, tt.restores)
			}
			d := diagLines(cfg)
			if len(d) != len(tt.diags) {
				t.Errorf("diagnostics:\n%s\nwant %d", strings.Join(d, "\n"), len(tt.diags))
			}
			for i := 0; i < len(d) && i < len(tt.diags); i++ {
				if !strings.Contains(d[i], tt.diags[i]) {
					t.Errorf("diagnostic %d: %q, want it to contain %q", i, d[i], tt.diags[i])
				}
			}
		})
	}
}

func TestMalformedLineIsReportedAndTheRestApplies(t *testing.T) {
	src := "REGISTER ^a$ PERMISSIONS root.tty 0620\n" +
		"REGISTER ^b$ PERMISSIONS root.nosuchgroup 0620\n" +
		"\tREGISTER ^c$\n" +
		"REGISTER ^d$ PERMISSIONS root.tty 0620\n"
	cfg, err := Parse("/etc/devfsd.conf", []byte(src), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`/etc/devfsd.conf:2: warning: unknown group "nosuchgroup": gid 0 (root) is used instead, as devfsd did`,
		`/etc/devfsd.conf:3: REGISTER needs a regular expression and an action`,
	}
	if got := diagLines(cfg); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(cfg.Rules) != 3 || cfg.Rules[0].Pattern != "^a$" || cfg.Rules[1].GID != 0 || cfg.Rules[2].Pattern != "^d$" {
		t.Errorf("rules kept: %v", cfg.Rules)
	}
}

func TestParseLines(t *testing.T) {
	tests := []struct {
		line string
		rule string // ruleLine without the line number, "" if none
		diag string // substring of the only diagnostic, "" if none
	}{
		{"register ^a$ permissions root.tty 0620", "REGISTER ^a$ PERMISSIONS 0.5 0620", ""},
		{"REGISTER ^a$ PERMISSIONS 7.-1 4755", "REGISTER ^a$ PERMISSIONS 7.-1 4755", ""},
		{"REGISTER ^a$ PERMISSIONS root.tty rw-r-----", "REGISTER ^a$ PERMISSIONS 0.5 0640", ""},
		{"REGISTER ^a$ PERMISSIONS root.tty rw-r--r-x-", "", "nine rwx"},
		{"REGISTER ^a$ PERMISSIONS root.tty rw-r-Xr--", "", `'X' at 6`},
		{"REGISTER ^a$ PERMISSIONS root.tty 0890", "", "want octal"},
		{"REGISTER ^a$ PERMISSIONS root.tty 17777", "", "outside 07777"},
		{"REGISTER ^a$ PERMISSIONS roottty 0660", "", "want USER.GROUP"},
		{"REGISTER ^a$ PERMISSIONS 4294967295.0 0660", "", "out of range"},
		{"REGISTER ^a$ PERMISSIONS .tty 0660", "", "empty user"},
		{"LOOKUP ^a$ EXECUTE", "", "EXECUTE needs a program"},
		{"LOOKUP ^a$ EXECUTE /bin/x ${devname", "", "no closing }"},
		{"LOOKUP ^a$ EXECUTE /bin/x ${dev-name}", "", "bad variable name"},
		{"LOOKUP ^a$ EXECUTE /bin/x $", "", "lone $"},
		{"LOOKUP ^a$ EXECUTE /bin/x $%", "", "not a variable"},
		{"LOOKUP ^a$ EXECUTE /bin/x ${X:-${devname}} $$ ~", "LOOKUP ^a$ EXECUTE /bin/x ${X:-${devname}} $$ ~", ""},
		{"CHANGE ^a$ COPY /x", "", "COPY takes a source and a destination"},
		{"LOOKUP ^a$ COPY /x /y", "LOOKUP ^a$ COPY /x /y", "warning: COPY on LOOKUP"},
		{"CLOSE ^a$ IGNORE", "CLOSE ^a$ IGNORE", "never delivered"},
		{"REGISTER ^a$ IGNORE extra", "REGISTER ^a$ IGNORE", "warning: IGNORE takes no arguments"},
		{"REGISTER (a)\\1 IGNORE", "", `back-reference \1`},
		{"REGISTER [[=a=]] IGNORE", "", "equivalence class"},
		{"REGISTER [[.hyphen.]] IGNORE", "", "collating symbol"},
		{"REGISTER \\d+ IGNORE", "", "invalid escape sequence"},
		{"REGISTER a{1001} IGNORE", "", "invalid repeat count"},
		{"REGISTER ^a$ FROB", "", `"FROB" is not an action`},
		{"FROB ^a$ IGNORE", "", `"FROB" is not an event`},
		{"INCLUDE", "", "INCLUDE needs a path"},
		{"RESTORE relative/dir", "", "not an absolute path"},
		{"RESTORE /a /b", "", "RESTORE takes one path"},
		{"RESTORE ${NOPE}", "", `variable "NOPE" is not set`},
		{"   # a comment", "", ""},
		{"CLEAR_CONFIG now", "", "warning: CLEAR_CONFIG takes no arguments"},
	}
	for _, tt := range tests {
		cfg, err := Parse("f", []byte(tt.line), testOpts())
		if err != nil {
			t.Errorf("%q: fatal %v", tt.line, err)
			continue
		}
		got := ""
		if len(cfg.Rules) == 1 {
			got = strings.TrimPrefix(ruleLine(cfg.Rules[0]), "1 ")
		} else if len(cfg.Rules) > 1 {
			t.Errorf("%q: %d rules", tt.line, len(cfg.Rules))
		}
		if got != tt.rule {
			t.Errorf("%q: rule %q, want %q", tt.line, got, tt.rule)
		}
		d := diagLines(cfg)
		switch {
		case tt.diag == "" && len(d) != 0:
			t.Errorf("%q: diagnostics %q", tt.line, d)
		case tt.diag != "" && (len(d) != 1 || !strings.Contains(d[0], tt.diag) || !strings.HasPrefix(d[0], "f:1: ")):
			t.Errorf("%q: diagnostics %q, want one at f:1 containing %q", tt.line, d, tt.diag)
		}
	}
}

func TestIncludeAndClearConfig(t *testing.T) {
	files := mapFiles{
		"/etc/devfsd.conf": "REGISTER ^first$ IGNORE\n" +
			"INCLUDE /etc/devfs/conf.d\n" +
			"OPTIONAL_INCLUDE /etc/devfs/missing.conf\n" +
			"INCLUDE local.conf\n",
		"/etc/devfs/conf.d/b.conf":      "REGISTER ^b$ IGNORE\n",
		"/etc/devfs/conf.d/a.conf":      "REGISTER ^a$ IGNORE\nbad line here\n",
		"/etc/devfs/conf.d/.hidden":     "REGISTER ^hidden$ IGNORE\n",
		"/etc/local.conf":               "CLEAR_CONFIG\nREGISTER ^local$ IGNORE\nRESTORE $mntpnt-state\n",
		"/etc/loop.conf":                "INCLUDE /etc/loop.conf\n",
		"/etc/missing-include.conf":     "REGISTER ^x$ IGNORE\nINCLUDE /etc/nope.conf\n",
		"/etc/optional-dir.conf":        "OPTIONAL_INCLUDE /etc/nodir/\nREGISTER ^y$ IGNORE\n",
		"/etc/devfs/conf.d/sub/c.conf":  "REGISTER ^c$ IGNORE\n",
		"/etc/devfs/conf.d/sub/d.conf~": "REGISTER ^d$ IGNORE\n",
	}
	opts := testOpts()
	opts.Files = files
	cfg, err := Load("/etc/devfsd.conf", opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 1 || cfg.Rules[0].Pattern != "^local$" || cfg.Rules[0].Pos.String() != "/etc/local.conf:2" {
		t.Errorf("after CLEAR_CONFIG: %v", cfg.Rules)
	}
	if len(cfg.Restores) != 1 || cfg.Restores[0].Dir != "/dev-state" {
		t.Errorf("restores %v", cfg.Restores)
	}
	wantFiles := "/etc/devfsd.conf /etc/devfs/conf.d/a.conf /etc/devfs/conf.d/b.conf /etc/devfs/conf.d/sub/c.conf /etc/devfs/conf.d/sub/d.conf~ /etc/local.conf"
	if got := strings.Join(cfg.Files, " "); got != wantFiles {
		t.Errorf("files read:\n%s\nwant:\n%s", got, wantFiles)
	}
	if d := diagLines(cfg); len(d) != 1 || !strings.HasPrefix(d[0], "/etc/devfs/conf.d/a.conf:2: ") {
		t.Errorf("diagnostics %q", d)
	}
	if _, err := Load("/etc/loop.conf", opts); err == nil || !strings.Contains(err.Error(), "nested more than") {
		t.Errorf("an include loop: %v", err)
	}
	// A missing INCLUDE is reported at its line, and the rest loads.
	if cfg, err := Load("/etc/missing-include.conf", opts); err != nil || len(cfg.Rules) != 1 ||
		len(cfg.Diags) != 1 || !strings.HasPrefix(cfg.Diags[0].Error(), "/etc/missing-include.conf:2: INCLUDE /etc/nope.conf: no such file or directory") ||
		!cfg.Diags[0].Refused {
		t.Errorf("a missing INCLUDE: %v %+v, want it reported at its line and the rest loaded", err, cfg)
	}
	if cfg, err := Load("/etc/optional-dir.conf", opts); err != nil || len(cfg.Rules) != 1 {
		t.Errorf("a missing OPTIONAL_INCLUDE directory: %v", err)
	}
	if _, err := Load("/etc/none.conf", opts); err == nil {
		t.Error("a missing main file is no error")
	}
}

func TestOSFilesRefusesDevices(t *testing.T) {
	if _, _, _, err := (OSFiles{}).Read("/dev/zero"); err == nil {
		t.Error("read /dev/zero as a config file")
	}
	dir := t.TempDir()
	big := filepath.Join(dir, "big.conf")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := (OSFiles{}).Read(big); err == nil {
		t.Error("read a file over MaxFileSize")
	}
}

func TestCompileERE(t *testing.T) {
	tests := []struct {
		re, name string
		match    bool
		groups   string // groups joined by ","
	}{
		{"^tty[0-9]+$", "tty1", true, "tty1"},
		{"^tty[0-9]+$", "ttyS1", false, ""},
		{"tty", "vc/tty", true, "tty"}, // unanchored
		{`[\.]`, `a\b`, true, `\`},     // a backslash in brackets is literal
		{`[\.]`, `a.b`, true, "."},
		{`[[:digit:]]+`, "sd12", true, "12"},
		{`[]a]`, "]", true, "]"},
		{`[^]a]`, "]a-", true, "-"},
		{`(a|ab)(c|bcd)(d*)`, "abcd", true, "abcd,a,bcd,"}, // leftmost-longest, POSIX
		{`^((ide|scsi)/host[0-9]+/bus[0-9]+/target[0-9]+/lun[0-9]+)/part[0-9]+$`,
			"scsi/host0/bus0/target1/lun0/part2", true, "scsi/host0/bus0/target1/lun0/part2,scsi/host0/bus0/target1/lun0,scsi"},
		{`^dvb/card([0-9]+)/([^/0-9]*)[0-9]+$`, "dvb/card0/frontend0", true, "dvb/card0/frontend0,0,frontend"},
		{`^(sd[a-z]+)[0-9]+$`, "sda1", true, "sda1,sda"},
	}
	for _, tt := range tests {
		re, err := CompileERE(tt.re)
		if err != nil {
			t.Errorf("%q: %v", tt.re, err)
			continue
		}
		r := Rule{re: re}
		g, ok := r.Match(tt.name)
		if ok != tt.match || strings.Join(g, ",") != tt.groups {
			t.Errorf("%q on %q: %v %q, want %v %q", tt.re, tt.name, ok, strings.Join(g, ","), tt.match, tt.groups)
		}
	}
}

func TestExpand(t *testing.T) {
	v := &Vars{Devname: "sound/dsp", Devpath: "/dev/sound/dsp", Mntpnt: "/dev", Hostname: "box",
		UID: 0, GID: 29, Mode: 020660, PID: 42,
		Getenv: func(k string) (string, bool) {
			m := map[string]string{"HOME": "/root", "STATE": "/var/lib/devstate", "EMPTY": ""}
			s, ok := m[k]
			return s, ok
		}}
	groups := []string{"sound/dsp", "sound", "dsp"}
	tests := []struct{ in, out, err string }{
		{"$devname", "sound/dsp", ""},
		{"${devpath}.bak", "/dev/sound/dsp.bak", ""},
		{"$mntpnt/$devname", "/dev/sound/dsp", ""},
		{"$mntpt", "/dev", ""},
		{"$uid.$gid $mode", "0.29 20660", ""},
		{"$hostname-$$", "box-42", ""},
		{"$STATE/$devname", "/var/lib/devstate/sound/dsp", ""},
		{"${NOPE:-/lib/dev-state}/$devname", "/lib/dev-state/sound/dsp", ""},
		{"${NOPE:-${STATE}}", "/var/lib/devstate", ""},
		{"${STATE:-/other}", "/var/lib/devstate", ""},
		{"${EMPTY:-x}", "", ""}, // set but empty: devfsd tests "defined", not "non-empty"
		{"~/saved", "/root/saved", ""},
		{`\2-\1 \0`, "dsp-sound sound/dsp", ""},
		{`\9`, "", ""},
		{`a\\b\qc`, `a\bc`, ""},
		{"$NOPE", "", `variable "NOPE" is not set`},
		{"${NOPE}", "", `variable "NOPE" is not set`},
	}
	for _, tt := range tests {
		got, err := Expand(tt.in, v, groups)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.out {
			t.Errorf("%q: %q, %v; want %q", tt.in, got, err, tt.out)
		}
	}
}

func TestCompatNames(t *testing.T) {
	tests := []struct {
		name         string
		major, minor uint32
		old          string
		newName      string
		newTarget    string
	}{
		{"vc/1", 4, 1, "tty1", "", ""},
		{"tts/0", 4, 64, "ttyS0", "", ""},
		{"cua/0", 5, 64, "cua0", "", ""},
		{"tts/E3", 24, 3, "ttyE3", "", ""},
		{"sound/dsp", 14, 3, "dsp", "", ""},
		{"loop/0", 7, 0, "loop0", "", ""},
		{"floppy/0", 2, 0, "fd0", "", ""},
		{"rd/0", 1, 0, "ram0", "", ""},
		{"misc/psaux", 10, 1, "psaux", "", ""},
		{"printers/0", 6, 0, "lp0", "", ""},
		{"input/js0", 13, 0, "js0", "", ""},
		{"i2c/0", 89, 0, "i2c-0", "", ""},
		{"vcc/0", 7, 0, "vcs", "", ""},
		{"vcc/3", 7, 3, "vcs3", "", ""},
		{"pty/m0", 2, 0, "ptyp0", "", ""},
		{"pty/s17", 3, 17, "ttyq1", "", ""},
		{"scsi/host0/bus0/target0/lun0/disc", 8, 0, "sda", "sd/c0b0t0u0", "../scsi/host0/bus0/target0/lun0/disc"},
		{"scsi/host0/bus0/target1/lun0/part3", 8, 19, "sdb3", "sd/c0b0t1u0p3", "../scsi/host0/bus0/target1/lun0/part3"},
		{"scsi/host1/bus0/target0/lun0/disc", 65, 0, "sdq", "sd/c1b0t0u0", "../scsi/host1/bus0/target0/lun0/disc"},
		{"scsi/host1/bus0/target0/lun0/disc", 66, 16, "sdah", "sd/c1b0t0u0", "../scsi/host1/bus0/target0/lun0/disc"},
		{"scsi/host0/bus0/target4/lun0/cd", 11, 0, "sr0", "sr/c0b0t4u0", "../scsi/host0/bus0/target4/lun0/cd"},
		{"scsi/host0/bus0/target4/lun0/generic", 21, 4, "sg4", "sg/c0b0t4u0", "../scsi/host0/bus0/target4/lun0/generic"},
		{"ide/host0/bus0/target0/lun0/disc", 3, 0, "hda", "ide/hd/c0b0t0u0", "../host0/bus0/target0/lun0/disc"},
		{"ide/host0/bus0/target1/lun0/part2", 3, 66, "hdb2", "ide/hd/c0b0t1u0p2", "../host0/bus0/target1/lun0/part2"},
		{"ide/host0/bus1/target0/lun0/cd", 22, 0, "hdc", "ide/cd/c0b1t0u0", "../host0/bus1/target0/lun0/cd"},
		{"scsi/host0/bus0/target0/lun0/mt", 9, 0, "", "", ""},
		{"ide/host0/bus0/target0/lun0/disc", 200, 0, "", "ide/hd/c0b0t0u0", "../host0/bus0/target0/lun0/disc"},
		{"tty1", 4, 1, "", "", ""},
		{"sound/", 0, 0, "", "", ""},
		{"snd/pcmC0D0p", 116, 16, "", "", ""},
	}
	for _, tt := range tests {
		if got := OldName(tt.name, tt.major, tt.minor); got != tt.old {
			t.Errorf("OldName(%s, %d:%d) = %q, want %q", tt.name, tt.major, tt.minor, got, tt.old)
		}
		n, tg := NewName(tt.name)
		if n != tt.newName || tg != tt.newTarget {
			t.Errorf("NewName(%s) = %q -> %q, want %q -> %q", tt.name, n, tg, tt.newName, tt.newTarget)
		}
	}
}

func TestAliases(t *testing.T) {
	a := ParseAliases([]byte("# modules.devfs\nalias /dev/dsp sound-slot-0\nalias sound-slot-0 sound\n" +
		"alias /dev/tts* serial\noptions serial irq=4\nalias /dev/loop-control off\nalias x y\nalias y x\n"))
	tests := []struct{ in, want string }{
		{"/dev/dsp", "/dev/dsp sound"},
		{"/dev/tts0", "/dev/tts0 serial"},
		{"/dev/tts/0", "/dev/tts/0 serial"},
		{"/dev/loop-control", "/dev/loop-control"},
		{"x", "x"},
		{"sound", "sound sound"},
		{"/dev/none", "/dev/none"},
	}
	for _, tt := range tests {
		if got := strings.Join(a.Resolve(tt.in), " "); got != tt.want {
			t.Errorf("Resolve(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var none *Aliases
	if got := none.Resolve("/dev/dsp"); len(got) != 1 {
		t.Errorf("nil Aliases: %v", got)
	}
}

// The example configurations shipped in deploy/ parse without a
// diagnostic (their INCLUDEs name /etc paths, so each is read alone).
func TestDeployExamplesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "devfsd.conf.d", "*.conf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		opts := testOpts()
		opts.Files = mapFiles{"/etc/devfsd.conf.d/permissions.conf": ""}
		cfg, err := Parse(f, b, opts)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if d := diagLines(cfg); len(d) > 0 {
			t.Errorf("%s: %q", f, d)
		}
		if len(cfg.Rules) == 0 {
			t.Errorf("%s: no rules", f)
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "devfsd.conf.d", "modules.devfs"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ParseAliases(b).Resolve("/dev/dsp"); len(got) != 2 || got[1] != "sound" {
		t.Errorf("modules.devfs: /dev/dsp resolves to %q", got)
	}
}
