package main

import (
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/daemon"
	"github.com/devfsd/devfsd/dcache"
)

const widgetYAML = `negative_timeout: 1h
modules:
  - name: widget
    description: the widget board
    nodes:
      - {path: widgets, type: dir, mode: "0750"}
      - path: widget0
        type: char
        major: 240
        minor: 0
        mode: 0660
        gid: 20
      - {path: widgets/first, type: symlink, target: ../widget0}
      - {path: widgets/disk, type: block, major: 259, minor: 1048575, uid: 4294967294}
  - name: gadget
    nodes:
      - {path: net/gadget, type: char, major: 10, minor: 250}
`

func TestConfigModulesValid(t *testing.T) {
	mnt := t.TempDir()
	file := writeFile(t, t.TempDir(), "c.yaml", widgetYAML)
	cfg, err := loadConfig([]string{"--config", file, mnt}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Module{
		{Name: "widget", Description: "the widget board", Nodes: []config.Node{
			{Path: "widgets", Type: dcache.TypeDir, Mode: 0750},
			{Path: "widget0", Type: dcache.TypeChar, Major: 240, Minor: 0, Mode: 0660, GID: 20},
			{Path: "widgets/first", Type: dcache.TypeSymlink, Mode: 0777, Target: "../widget0"},
			// Defaults: mode 0600 for a device, owner root.
			{Path: "widgets/disk", Type: dcache.TypeBlock, Major: 259, Minor: 1<<20 - 1, Mode: 0600, UID: 1<<32 - 2},
		}},
		{Name: "gadget", Nodes: []config.Node{
			{Path: "net/gadget", Type: dcache.TypeChar, Major: 10, Minor: 250, Mode: 0600},
		}},
	}
	if !reflect.DeepEqual(cfg.Modules, want) {
		t.Errorf("modules\n got %+v\nwant %+v", cfg.Modules, want)
	}
	if got := []int{cfg.ModuleLine(0, -1), cfg.ModuleLine(1, -1), cfg.ModuleLine(0, 0), cfg.ModuleLine(0, 1), cfg.ModuleLine(0, 2), cfg.ModuleLine(0, 3)}; !reflect.DeepEqual(got, []int{3, 15, 6, 7, 13, 14}) {
		t.Errorf("lines %v", got)
	}
	// An empty list, or none, is no modules; so is a file without the key.
	for _, y := range []string{"modules: []\n", "modules:\n", ""} {
		file := writeFile(t, t.TempDir(), "c.yaml", y)
		cfg, err := loadConfig([]string{"--config", file, mnt}, io.Discard)
		if err != nil || cfg.Modules != nil {
			t.Errorf("%q: modules %v, %v", y, cfg.Modules, err)
		}
	}
}

// Every error names modules, the entry and its line, and rejects the whole
// file.
func TestConfigModulesInvalid(t *testing.T) {
	mnt := t.TempDir()
	mod := func(nodes string) string {
		return "modules:\n  - name: w\n    nodes:\n" + nodes
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"not a list", "modules: widget\n", []string{"line 1", "modules: want a list of modules"}},
		{"entry not a mapping", "modules:\n  - widget\n", []string{"line 2", "modules[0]: want a mapping"}},
		{"unknown module key", "modules:\n  - name: w\n    nmae: x\n", []string{"line 3", `modules[0]: unknown key "nmae"`, "name, description, nodes"}},
		{"module key twice", "modules:\n  - name: w\n    name: v\n", []string{"line 3", "modules[0].name: set twice (first on line 2)"}},
		{"no name", "modules:\n  - nodes: [{path: a, type: dir}]\n", []string{"line 2", "modules[0].name: missing"}},
		{"bad name", "modules:\n  - name: a b\n    nodes: [{path: a, type: dir}]\n", []string{"line 2", `modules[0].name: "a b" is not a module name`}},
		{"name not a string", "modules:\n  - name: [x]\n", []string{"line 2", "modules[0].name: want a string"}},
		{"null path", mod("      - {path: null, type: dir}\n"), []string{"line 4", `modules[0].nodes[0].path: want a string, not "null" (YAML reads it as null; quote it)`}},
		{"no nodes", "modules:\n  - name: w\n", []string{"line 2", `modules[0].nodes: missing (module "w" registers nothing)`}},
		{"empty nodes", "modules:\n  - name: w\n    nodes: []\n", []string{"line 3", "modules[0].nodes: want a list of at least one node"}},
		{"unknown node key", mod("      - {path: a, type: char, major: 1, minor: 1, majr: 2}\n"), []string{"line 4", `modules[0].nodes[0]: unknown key "majr"`}},
		{"node key twice", mod("      - {path: a, path: b, type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path: set twice"}},
		{"no path", mod("      - {type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path: missing"}},
		{"no type", mod("      - {path: a}\n"), []string{"line 4", "modules[0].nodes[0].type: missing"}},
		{"bad type", mod("      - {path: a, type: fifo}\n"), []string{"line 4", `modules[0].nodes[0].type: "fifo" is not a node type`}},
		{"absolute path", mod("      - {path: /dev/a, type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path", "not a clean path relative to the mount root"}},
		{"dot dot path", mod("      - {path: ../a, type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path", "not a clean path"}},
		{"unclean path", mod("      - {path: a//b, type: dir}\n"), []string{"line 4", "not a clean path"}},
		{"empty path", mod("      - {path: '', type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path: empty"}},
		{"long name in path", mod("      - {path: a/" + strings.Repeat("x", 256) + ", type: dir}\n"), []string{"line 4", "modules[0].nodes[0].path", "file name too long"}},
		{"mode over 07777", mod("      - {path: a, type: dir, mode: 010000}\n"), []string{"line 4", "modules[0].nodes[0].mode: 10000 is outside 07777"}},
		{"mode not octal", mod("      - {path: a, type: dir, mode: rwx}\n"), []string{"line 4", "modules[0].nodes[0].mode", `invalid mode "rwx"`}},
		{"major 4096", mod("      - {path: a, type: char, major: 4096, minor: 0}\n"), []string{"line 4", "modules[0].nodes[0].major: 4096 is out of range [0, 4095]"}},
		{"minor 1<<20", mod("      - {path: a, type: block, major: 7, minor: 1048576}\n"), []string{"line 4", "modules[0].nodes[0].minor: 1048576 is out of range [0, 1048575]"}},
		{"negative major", mod("      - {path: a, type: char, major: -1, minor: 0}\n"), []string{"line 4", "major: -1 is out of range"}},
		{"major not a number", mod("      - {path: a, type: char, major: ten, minor: 0}\n"), []string{"line 4", `major: want an integer, not "ten"`}},
		{"uid too big", mod("      - {path: a, type: dir, uid: 4294967295}\n"), []string{"line 4", "uid: 4294967295 is out of range"}},
		{"device without major", mod("      - {path: a, type: char, minor: 1}\n"), []string{"line 4", "modules[0].nodes[0].major: missing (a char node needs it)"}},
		{"device without minor", mod("      - path: a\n        type: block\n        major: 1\n"), []string{"line 4", "modules[0].nodes[0].minor: missing (a block node needs it)"}},
		{"device with target", mod("      - {path: a, type: char, major: 1, minor: 1, target: b}\n"), []string{"line 4", "modules[0].nodes[0].target: a char node has none"}},
		{"dir with major", mod("      - path: a\n        type: dir\n        major: 1\n"), []string{"line 6", "modules[0].nodes[0].major: a dir node has none"}},
		{"symlink without target", mod("      - {path: a, type: symlink}\n"), []string{"line 4", "modules[0].nodes[0].target: missing (a symlink node needs it)"}},
		{"symlink with mode", mod("      - {path: a, type: symlink, target: b, mode: 0644}\n"), []string{"line 4", "modules[0].nodes[0].mode: a symlink node has none"}},
		{"empty target", mod("      - {path: a, type: symlink, target: ''}\n"), []string{"line 4", "target", "not a link target"}},
		// What Validate checks across nodes and modules.
		{"catalogue module name", "modules:\n  - name: loop\n    nodes: [{path: a, type: dir}]\n", []string{"modules: line 2: modules[0]: name \"loop\" is a catalogue module"}},
		{"module name twice", "modules:\n  - name: w\n    nodes: [{path: a, type: dir}]\n  - name: w\n    nodes: [{path: b, type: dir}]\n",
			[]string{`modules: line 4: modules[1]: name "w" is used by module 0 too`}},
		{"catalogue node", mod("      - {path: widget0, type: char, major: 240, minor: 0}\n      - {path: \"null\", type: char, major: 1, minor: 3}\n"),
			[]string{`modules: line 5: modules[0].nodes[1]: null is provided by catalogue module "base" already`}},
		{"catalogue directory as a device", mod("      - {path: snd, type: char, major: 240, minor: 0}\n"),
			[]string{`modules: line 4: modules[0].nodes[0]: snd is a directory of catalogue module "snd"`}},
		{"another extension's node", "modules:\n  - name: a\n    nodes: [{path: widget0, type: char, major: 240, minor: 0}]\n  - name: b\n    nodes:\n      - {path: widget0, type: char, major: 240, minor: 1}\n",
			[]string{`modules: line 6: modules[1].nodes[0]: widget0 is provided by module "a" already`}},
		{"loader not builtin", "loader: none\n" + mod("      - {path: a, type: dir}\n"), []string{`modules: set, but loader is "none"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantConfigRefused(t, mnt, tt.yaml, tt.want...) })
	}
}

// modules is reloadable; the same modules on other lines are no change.
func TestDiffConfigModules(t *testing.T) {
	mnt := t.TempDir()
	load := func(y string) config.Config {
		t.Helper()
		cfg, err := loadConfig([]string{"--config", writeFile(t, t.TempDir(), "c.yaml", y), mnt}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	old := load("negative_timeout: 1h\n")
	next := load(widgetYAML)
	changed, err := daemon.DiffConfig(old, next)
	if err != nil || !reflect.DeepEqual(changed, []string{"modules"}) {
		t.Fatalf("adding modules: changed %q, %v", changed, err)
	}
	moved := load("\n\n# the same, further down\n" + widgetYAML)
	if changed, err := daemon.DiffConfig(next, moved); err != nil || len(changed) != 0 {
		t.Fatalf("the same modules on other lines: changed %q, %v", changed, err)
	}
	if changed, err := daemon.DiffConfig(next, old); err != nil || !reflect.DeepEqual(changed, []string{"modules"}) {
		t.Fatalf("removing modules: changed %q, %v", changed, err)
	}
}
