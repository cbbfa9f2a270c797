package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/devfsd/devfsd/config"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigDefaults(t *testing.T) {
	mnt := t.TempDir()
	cfg, err := loadConfig([]string{mnt}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Defaults()
	want.Mountpoint = mnt
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
	// The values issue 4 and DESIGN.md name.
	if cfg.LoaderTimeout != 5*time.Second || !cfg.AllowOther || !cfg.DefaultPermissions || !cfg.Dev ||
		cfg.Readdirplus != "auto" || cfg.Loader != "builtin" {
		t.Errorf("defaults drifted from the issue: %+v", cfg)
	}
}

func TestConfigLayers(t *testing.T) {
	dir := t.TempDir()
	mntFile := filepath.Join(dir, "from-file")
	mntFlag := filepath.Join(dir, "from-flag")
	for _, d := range []string{mntFile, mntFlag} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := writeFile(t, dir, "devfsd.yaml", `
# a comment
mountpoint: `+mntFile+`
entry_timeout: 250ms
attr_timeout: 2s
negative_timeout: 0s
loader_timeout: 1m
allow_other: false
readdirplus: never
max_nodes: 5000
max_file_size: 4MiB
max_bytes: 1GiB
debug: true
log_level: debug
`)
	tests := []struct {
		name string
		args []string
		want func(c *config.Config)
	}{
		{"file only", []string{"--config", file}, func(c *config.Config) {
			c.Mountpoint = mntFile
			c.EntryTimeout = 250 * time.Millisecond
			c.AttrTimeout = 2 * time.Second
			c.NegativeTimeout = 0
			c.LoaderTimeout = time.Minute
			c.AllowOther = false
			c.Readdirplus = "never"
			c.MaxNodes = 5000
			c.MaxFileSize = 4 << 20
			c.MaxBytes = 1 << 30
			c.Debug = true
			c.LogLevel = "debug"
		}},
		{"flags override file", []string{
			"--config", file, "--entry-timeout", "0", "--allow-other=true", "--readdirplus=always",
			"--max-file-size", "512KiB", "--debug=false", mntFlag, "--max-nodes", "7",
		}, func(c *config.Config) {
			c.Mountpoint = mntFlag // DIR beats the file's mountpoint
			c.EntryTimeout = 0
			c.AttrTimeout = 2 * time.Second
			c.NegativeTimeout = 0
			c.LoaderTimeout = time.Minute
			c.AllowOther = true
			c.Readdirplus = "always"
			c.MaxNodes = 7
			c.MaxFileSize = 512 << 10
			c.MaxBytes = 1 << 30
			c.Debug = false
			c.LogLevel = "debug"
		}},
		{"flags before and after DIR, no file", []string{"--dev=false", mntFlag, "--shutdown-timeout", "1s", "--"}, func(c *config.Config) {
			c.Mountpoint = mntFlag
			c.Dev = false
			c.ShutdownTimeout = time.Second
		}},
		{"relative DIR made absolute", []string{"--log-format=json", relTo(t, mntFlag)}, func(c *config.Config) {
			c.Mountpoint = mntFlag
			c.LogFormat = "json"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			want := config.Defaults()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func relTo(t *testing.T, abs string) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, abs)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestConfigFileStrictErrors(t *testing.T) {
	mnt := t.TempDir()
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown key", "entry_timeout: 1s\nentry_timout: 2s\n", []string{"line 2", `unknown key "entry_timout"`, "known keys:", "entry_timeout"}},
		{"duplicate key", "debug: true\ndebug: false\n", []string{"line 2", "debug: set twice (first on line 1)"}},
		{"bad duration", "attr_timeout: soon\n", []string{"line 1", "attr_timeout", `invalid duration "soon"`}},
		{"duration without unit", "negative_timeout: 5\n", []string{"line 1", "negative_timeout", "invalid duration"}},
		{"bad bool", "\n\nallow_other: maybe\n", []string{"line 3", "allow_other", "want true or false"}},
		{"bad int", "max_nodes: lots\n", []string{"line 1", "max_nodes", "want an integer"}},
		{"bad size", "max_file_size: 3 parsecs\n", []string{"line 1", "max_file_size", "invalid size"}},
		{"string wanted", "readdirplus: 3\n", []string{"line 1", "readdirplus", "want a string"}},
		{"list value", "loader:\n  - builtin\n", []string{"line 2", "loader", "not a list"}},
		{"not a mapping", "- a\n- b\n", []string{"line 1", "must be a mapping"}},
		{"syntax", "debug: [\n", []string{"yaml"}},
		{"two documents", "debug: true\n---\ndebug: false\n", []string{"second YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantConfigRefused(t, mnt, tt.yaml, tt.want...) })
	}
}

// wantConfigRefused loads yaml as the config file of a mount on mnt and
// checks that it is refused with exit code 2 and an error that names the
// file and says each of want.
func wantConfigRefused(t *testing.T, mnt, yaml string, want ...string) {
	t.Helper()
	file := writeFile(t, t.TempDir(), "c.yaml", yaml)
	_, err := loadConfig([]string{"--config", file, mnt}, io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	if exitCode(err) != 2 {
		t.Errorf("exit code %d, want 2", exitCode(err))
	}
	for _, w := range append(want, file) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestConfigEmptyFileIsDefaults(t *testing.T) {
	mnt := t.TempDir()
	for _, content := range []string{"", "\n# only a comment\n", "---\n", "~\n"} {
		file := writeFile(t, t.TempDir(), "c.yaml", content)
		got, err := loadConfig([]string{"--config", file, mnt}, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		want := config.Defaults()
		want.Mountpoint = mnt
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v", content, got)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	mnt := t.TempDir()
	notDir := writeFile(t, mnt, "file", "")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no DIR", nil, "mountpoint: missing"},
		{"DIR missing", []string{filepath.Join(mnt, "nope")}, "mountpoint: stat"},
		{"DIR not a directory", []string{notDir}, "is not a directory"},
		{"two DIRs", []string{mnt, mnt}, "mount takes one DIR"},
		{"negative timeout", []string{"--entry-timeout=-1s", mnt}, "entry_timeout: -1s is out of range"},
		{"loader timeout zero", []string{"--loader-timeout=0", mnt}, "loader_timeout: 0s is out of range"},
		{"unknown loader", []string{"--loader=modprobe", mnt}, `loader: "modprobe" is not a loader`},
		{"exec without program", []string{"--loader=exec", mnt}, "exec_program: missing"},
		{"exec relative program", []string{"--loader=exec", "--exec-program=modprobe", mnt}, `exec_program: "modprobe" is not an absolute path`},
		{"exec program without exec", []string{"--exec-program=/sbin/modprobe", mnt}, `exec_program: set, but loader is "builtin"`},
		{"exec timeout zero", []string{"--loader=exec", "--exec-program=/bin/true", "--exec-timeout=0s", mnt}, "exec_timeout: 0s is out of range"},
		{"readdirplus", []string{"--readdirplus=sometimes", mnt}, "readdirplus"},
		{"max nodes", []string{"--max-nodes=0", mnt}, "max_nodes: 0 must be at least 1"},
		{"log level", []string{"--log-level=chatty", mnt}, "log_level"},
		{"log format", []string{"--log-format=xml", mnt}, "log_format"},
		{"max bytes too big", []string{"--max-bytes=2048GiB", mnt}, "max_bytes: 2048GiB is out of range"},
		{"pts mode", []string{"--pts=maybe", mnt}, `pts: "maybe" is not one of on, off, required`},
		{"shm mode", []string{"--shm=yes", mnt}, `shm: "yes" is not one of on, off, required`},
		{"shm size", []string{"--shm-size=1KiB", mnt}, "shm_size: 1KiB is out of range"},
		{"several at once", []string{"--max-nodes=0", "--log-format=xml", mnt}, "max_nodes: 0 must be at least 1\nlog_format: \"xml\""},
	}
	// Files are sparse: one may be larger than what all of them store.
	if c, err := loadConfig([]string{"--max-file-size=2048GiB", "--max-bytes=1MiB", "--pts=required", "--shm=off", "--shm-size=1GiB", mnt}, io.Discard); err != nil ||
		c.MaxFileSize != 2048<<30 || c.Pts != "required" || c.Shm != "off" || c.ShmSize != 1<<30 {
		t.Errorf("a file size over max_bytes, pts required, shm off: %+v %v", c, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
			if exitCode(err) != 2 {
				t.Errorf("exit code %d, want 2", exitCode(err))
			}
		})
	}
}

func TestConfigFlagErrors(t *testing.T) {
	mnt := t.TempDir()
	for _, args := range [][]string{
		{"--no-such-flag", mnt},
		{"--entry-timeout=fast", mnt},
		{"--max-file-size=huge", mnt},
		{"--config", filepath.Join(mnt, "missing.yaml"), mnt},
	} {
		if _, err := loadConfig(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	if _, err := loadConfig([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}
