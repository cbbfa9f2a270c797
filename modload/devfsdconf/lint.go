package devfsdconf

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Lint reads the configuration at path as Load does and returns it: its
// Lines say, per file and line, what runs and what is left out and why
// (see [WriteReport]). The error is an unreadable configuration, as for
// Load.
func Lint(path string, opts Options) (*Config, error) { return Load(path, opts) }

// Refused returns the lines devfsd 1.3.25 itself would have exited on.
func (c *Config) Refused() []Line {
	var out []Line
	for _, l := range c.Lines {
		if l.Refused {
			out = append(out, l)
		}
	}
	return out
}

// WriteReport writes cfg's lines, one entry a line, in the order read:
//
//	FILE:LINE: runs: REGISTER ^tty PERMISSIONS uid 0 gid 5 mode 0620
//	FILE:LINE: directive: INCLUDE /etc/devfs/perms
//	FILE:LINE: left out: REASON
//	FILE:LINE: left out (devfsd 1.3.25 exits here too): REASON
//	FILE:LINE: warning: TEXT
//
// then a summary line.
func WriteReport(w io.Writer, cfg *Config) error {
	var b strings.Builder
	var left, refused int
	for _, l := range cfg.Lines {
		switch {
		case l.Refused:
			refused++
			fmt.Fprintf(&b, "%s: left out (devfsd 1.3.25 exits here too): %s\n\t%s\n", l.Pos, l.LeftOut, l.Text)
		case l.LeftOut != "":
			left++
			fmt.Fprintf(&b, "%s: left out: %s\n\t%s\n", l.Pos, l.LeftOut, l.Text)
		case isDirective(l.Text):
			fmt.Fprintf(&b, "%s: directive: %s\n", l.Pos, l.Does)
		default:
			fmt.Fprintf(&b, "%s: runs: %s\n", l.Pos, l.Does)
		}
		for _, wmsg := range l.Warnings {
			fmt.Fprintf(&b, "%s: warning: %s\n", l.Pos, wmsg)
		}
	}
	fmt.Fprintf(&b, "%d files, %d rules run, %d restores; %d lines left out, %d of which devfsd 1.3.25 would have refused\n",
		len(cfg.Files), len(cfg.Rules), len(cfg.Restores), left+refused, refused)
	_, err := io.WriteString(w, b.String())
	return err
}

func isDirective(text string) bool {
	w, _, _ := strings.Cut(strings.TrimSpace(text), " ")
	w, _, _ = strings.Cut(w, "\t")
	switch strings.ToUpper(w) {
	case "INCLUDE", "OPTIONAL_INCLUDE", "RESTORE", "CLEAR_CONFIG":
		return true
	}
	return false
}

// Check is `devfsd helper --check --config FILE`: it writes the report of
// the configuration at path to w and returns ok false when devfsd 1.3.25
// itself would have refused it (a line it exited on). err is a
// configuration that cannot be read at all.
func Check(w io.Writer, path string, opts Options) (ok bool, err error) {
	cfg, err := Lint(path, opts)
	if err != nil {
		return false, fmt.Errorf("config: %w", err)
	}
	if err := WriteReport(w, cfg); err != nil {
		return false, err
	}
	return len(cfg.Refused()) == 0, nil
}

// RootFiles reads the files of a configuration from a tree copied under
// Root, the way they were laid out under / (Debian's /etc/devfs/devfsd.conf
// INCLUDEs /etc/devfs/perms): absolute path P is read at Root/P. Paths
// cannot climb out of Root with "..", but a symlink inside Root is
// followed.
type RootFiles struct{ Root string }

// Read implements Files.
func (r RootFiles) Read(p string) ([]byte, []string, bool, error) {
	return OSFiles{}.Read(filepath.Join(r.Root, filepath.Clean("/"+p)))
}
