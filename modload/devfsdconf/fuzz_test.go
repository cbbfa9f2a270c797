package devfsdconf

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary files to the parser (with an INCLUDE target
// of the same text, so that includes and loops are reached). It must never
// panic or hang; every diagnostic names a line of the file it is about;
// every rule's expression and arguments work on a few names; and parsing
// is deterministic.
//
//	go test -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s ./modload/devfsdconf/
func FuzzParse(f *testing.F) {
	ents, err := os.ReadDir(filepath.Join("testdata", "corpus"))
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("testdata", "corpus", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// The real files of testdata/confs (every file but its README).
	err = filepath.WalkDir(filepath.Join("testdata", "confs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "README.md" {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("INCLUDE /inc.conf\nINCLUDE /inc.conf\nREGISTER ^(a)(b)?$ EXECUTE /x \\1\\2\\9 ${v:-${w:-$devname}} ~\n"))
	f.Add([]byte("REGISTER [[:alpha:]\\.]+ COPY $devpath /s/$devname\nCLEAR_CONFIG\nRESTORE /s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		files := mapFiles{"/inc.conf": string(data), "/dir/a.conf": string(data)}
		opts := testOpts()
		opts.Files = files
		cfg, err := Parse("/etc/devfsd.conf", data, opts)
		if err != nil {
			return // includes nested too deep, or too many files: fatal, and fine
		}
		lines := strings.Count(string(data), "\n") + 1
		for _, d := range cfg.Diags {
			if d.Pos.Line < 1 || (d.Pos.File == "/etc/devfsd.conf" && d.Pos.Line > lines) {
				t.Fatalf("diagnostic at a line the file does not have: %v", d)
			}
			if d.Msg == "" {
				t.Fatalf("empty diagnostic at %v", d.Pos)
			}
		}
		v := &Vars{Devname: "sound/dsp", Devpath: "/dev/sound/dsp", Mntpnt: "/dev", Hostname: "h", PID: 1,
			Getenv: func(string) (string, bool) { return "", false }}
		for i := range cfg.Rules {
			r := &cfg.Rules[i]
			if r.Pos.Line < 1 || !Deliverable(r.Event) && r.Event != AsyncOpen && r.Event != Close {
				t.Fatalf("bad rule %+v", r)
			}
			for _, name := range []string{"", "tty1", "sound/dsp", "scsi/host0/bus0/target0/lun0/part1"} {
				groups, ok := r.Match(name)
				if ok && len(groups) == 0 {
					t.Fatalf("a match without group 0: %v on %q", r.Pattern, name)
				}
				for _, a := range r.Args {
					Expand(a, v, groups) // errors are fine; panics are not
				}
			}
		}
		// The lint report accounts for every entry line read.
		for _, l := range cfg.Lines {
			if l.Pos.Line < 1 || l.Text == "" || (l.LeftOut == "" && l.Does == "") {
				t.Fatalf("a line the report cannot say anything of: %+v", l)
			}
			if l.Refused && l.LeftOut == "" {
				t.Fatalf("refused but not left out: %+v", l)
			}
		}
		if err := WriteReport(io.Discard, cfg); err != nil {
			t.Fatal(err)
		}
		again, err := Parse("/etc/devfsd.conf", data, opts)
		if err != nil {
			t.Fatalf("second parse failed: %v", err)
		}
		if !reflect.DeepEqual(summary(cfg), summary(again)) {
			t.Fatalf("parsing is not deterministic")
		}
	})
}

func summary(c *Config) []string {
	var out []string
	for _, r := range c.Rules {
		out = append(out, ruleLine(r))
	}
	for _, d := range c.Diags {
		out = append(out, d.Error())
	}
	for _, r := range c.Restores {
		out = append(out, r.Dir)
	}
	return out
}
