package builtin

import (
	"path"
	"regexp"
	"strconv"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// devicesTxt is transcribed by hand from the kernel's
// Documentation/admin-guide/devices.txt, independently of catalogue.go: one
// row per allocation, a name pattern, and how the minor follows from the
// name. Every device node of the catalogue must match exactly one row and
// carry that row's numbers.
var devicesTxt = []struct {
	typ   dcache.Type
	major uint32
	name  string                          // regexp over the node path
	minor func(m []string) (uint32, bool) // from the submatches; false if out of the documented range
	cite  string
}{
	{dcache.TypeChar, 1, `^null$`, fixed(3), "1 char: 3 = /dev/null"},
	{dcache.TypeChar, 1, `^zero$`, fixed(5), "1 char: 5 = /dev/zero"},
	{dcache.TypeChar, 1, `^full$`, fixed(7), "1 char: 7 = /dev/full"},
	{dcache.TypeChar, 1, `^random$`, fixed(8), "1 char: 8 = /dev/random"},
	{dcache.TypeChar, 1, `^urandom$`, fixed(9), "1 char: 9 = /dev/urandom"},
	{dcache.TypeChar, 1, `^kmsg$`, fixed(11), "1 char: 11 = /dev/kmsg"},
	{dcache.TypeChar, 4, `^tty(\d+)$`, numbered(0, 0, 63), "4 char: 0 = /dev/tty0 .. 63 = /dev/tty63"},
	{dcache.TypeChar, 4, `^ttyS(\d+)$`, numbered(64, 0, 191), "4 char: 64 = /dev/ttyS0 .. 255 = /dev/ttyS191"},
	{dcache.TypeChar, 5, `^tty$`, fixed(0), "5 char: 0 = /dev/tty"},
	{dcache.TypeChar, 5, `^console$`, fixed(1), "5 char: 1 = /dev/console"},
	{dcache.TypeChar, 5, `^ptmx$`, fixed(2), "5 char: 2 = /dev/ptmx"},
	{dcache.TypeBlock, 7, `^loop(\d+)$`, numbered(0, 0, 255), "7 block: 0 = /dev/loop0, 1 = /dev/loop1, ..."},
	{dcache.TypeBlock, 8, `^sd([a-p])(\d*)$`, scsi('a'), "8 block: 0 = /dev/sda .. 240 = /dev/sdp, partitions 1-15"},
	{dcache.TypeBlock, 65, `^sd([q-z])(\d*)$`, scsi('q'), "65 block: 0 = /dev/sdq, 16 = /dev/sdr, ..., partitions 1-15"},
	{dcache.TypeChar, 10, `^watchdog$`, fixed(130), "10 char: 130 = /dev/watchdog"},
	{dcache.TypeChar, 10, `^hwrng$`, fixed(183), "10 char: 183 = /dev/hwrng"},
	{dcache.TypeChar, 10, `^vfio/vfio$`, fixed(196), "10 char: 196 = /dev/vfio/vfio"},
	{dcache.TypeChar, 10, `^net/tun$`, fixed(200), "10 char: 200 = /dev/net/tun"},
	{dcache.TypeChar, 10, `^cuse$`, fixed(203), "10 char: 203 = /dev/cuse"},
	{dcache.TypeChar, 10, `^(input/)?uinput$`, fixed(223), "10 char: 223 = /dev/input/uinput"},
	{dcache.TypeChar, 10, `^fuse$`, fixed(229), "10 char: 229 = /dev/fuse"},
	{dcache.TypeChar, 10, `^kvm$`, fixed(232), "10 char: 232 = /dev/kvm"},
	{dcache.TypeChar, 10, `^btrfs-control$`, fixed(234), "10 char: 234 = /dev/btrfs-control"},
	{dcache.TypeChar, 10, `^autofs$`, fixed(235), "10 char: 235 = /dev/autofs"},
	{dcache.TypeChar, 10, `^mapper/control$`, fixed(236), "10 char: 236 = /dev/mapper/control"},
	{dcache.TypeChar, 10, `^loop-control$`, fixed(237), "10 char: 237 = /dev/loop-control"},
	{dcache.TypeChar, 10, `^vhost-net$`, fixed(238), "10 char: 238 = /dev/vhost-net"},
	{dcache.TypeChar, 10, `^uhid$`, fixed(239), "10 char: 239 = /dev/uhid"},
	{dcache.TypeChar, 10, `^vhost-vsock$`, fixed(241), "10 char: 241 = /dev/vhost-vsock"},
	{dcache.TypeChar, 10, `^rfkill$`, fixed(242), "10 char: 242 = /dev/rfkill"},
	{dcache.TypeChar, 13, `^input/mice$`, fixed(63), "13 char: 63 = /dev/input/mice"},
	{dcache.TypeChar, 13, `^input/event(\d+)$`, numbered(64, 0, 31), "13 char: 64 = /dev/input/event0 ...; 32 minors per type"},
	{dcache.TypeChar, 14, `^mixer$`, fixed(0), "14 char: 0 = /dev/mixer"},
	{dcache.TypeChar, 14, `^sequencer$`, fixed(1), "14 char: 1 = /dev/sequencer"},
	{dcache.TypeChar, 14, `^midi00$`, fixed(2), "14 char: 2 = /dev/midi00"},
	{dcache.TypeChar, 14, `^dsp$`, fixed(3), "14 char: 3 = /dev/dsp"},
	{dcache.TypeChar, 14, `^audio$`, fixed(4), "14 char: 4 = /dev/audio"},
	{dcache.TypeChar, 14, `^sequencer2$`, fixed(8), "14 char: 8 = /dev/sequencer2"},
	{dcache.TypeChar, 29, `^fb(\d+)$`, numbered(0, 0, 31), "29 char: 0 = /dev/fb0 .. 31 = /dev/fb31"},
	{dcache.TypeChar, 89, `^i2c-(\d+)$`, numbered(0, 0, 255), "89 char: 0 = /dev/i2c-0, 1 = /dev/i2c-1, ..."},
	{dcache.TypeChar, 108, `^ppp$`, fixed(0), "108 char: 0 = /dev/ppp"},
	// 116 char is "Advanced Linux Sound Driver (ALSA)" with no minors
	// listed; these are include/sound/minors.h's static minors for card
	// 0: card*32 + {control 0, hwdep 4, rawmidi 8, pcm playback 16, pcm
	// capture 24} + device, and the global seq 1 and timer 33.
	{dcache.TypeChar, 116, `^snd/controlC0$`, fixed(0), "minors.h: SNDRV_DEVICE_TYPE_CONTROL"},
	{dcache.TypeChar, 116, `^snd/seq$`, fixed(1), "minors.h: SNDRV_MINOR_SEQUENCER"},
	{dcache.TypeChar, 116, `^snd/hwC0D(\d)$`, numbered(4, 0, 3), "minors.h: SNDRV_DEVICE_TYPE_HWDEP"},
	{dcache.TypeChar, 116, `^snd/midiC0D(\d)$`, numbered(8, 0, 7), "minors.h: SNDRV_DEVICE_TYPE_RAWMIDI"},
	{dcache.TypeChar, 116, `^snd/pcmC0D(\d)p$`, numbered(16, 0, 7), "minors.h: SNDRV_DEVICE_TYPE_PCM_PLAYBACK"},
	{dcache.TypeChar, 116, `^snd/pcmC0D(\d)c$`, numbered(24, 0, 7), "minors.h: SNDRV_DEVICE_TYPE_PCM_CAPTURE"},
	{dcache.TypeChar, 116, `^snd/timer$`, fixed(33), "minors.h: SNDRV_MINOR_TIMER"},
	{dcache.TypeChar, 195, `^nvidia(\d+)$`, numbered(0, 0, 254), "195 char: 0 = /dev/nvidia0, 1 = /dev/nvidia1, ..."},
	{dcache.TypeChar, 195, `^nvidiactl$`, fixed(255), "195 char: 255 = /dev/nvidiactl"},
	{dcache.TypeChar, 226, `^dri/card(\d+)$`, numbered(0, 0, 63), "226 char: 0 = /dev/dri/card0, 1 = /dev/dri/card1, ..."},
	// devices.txt lists only the primary nodes of major 226; DRM's render
	// nodes are minors 128 + N (drivers/gpu/drm/drm_drv.c, DRM_MINOR_RENDER).
	{dcache.TypeChar, 226, `^dri/renderD(\d+)$`, numbered(0, 128, 191), "DRM render nodes renderD128 = 226:128"},
}

// fixed is a row for a single name.
func fixed(minor uint32) func([]string) (uint32, bool) {
	return func([]string) (uint32, bool) { return minor, true }
}

// numbered is a row for NAME<n>: minor = base + n, n (the first submatch)
// in [lo, hi].
func numbered(base uint32, lo, hi int) func([]string) (uint32, bool) {
	return func(m []string) (uint32, bool) {
		n, err := strconv.Atoi(m[1])
		if err != nil || n < lo || n > hi {
			return 0, false
		}
		return base + uint32(n), true
	}
}

// scsi is a row for sd<letter><partition>: 16 minors per disk, whole disk
// at 0, partitions 1-15.
func scsi(first byte) func([]string) (uint32, bool) {
	return func(m []string) (uint32, bool) {
		disk := uint32(m[1][0] - first)
		part := 0
		if m[2] != "" {
			p, err := strconv.Atoi(m[2])
			if err != nil || p < 1 || p > 15 || m[2][0] == '0' {
				return 0, false
			}
			part = p
		}
		return disk*16 + uint32(part), true
	}
}

func TestCatalogueNumbersMatchDevicesTxt(t *testing.T) {
	res := make([]*regexp.Regexp, len(devicesTxt))
	for i, row := range devicesTxt {
		res[i] = regexp.MustCompile(row.name)
	}
	devices := 0
	for _, m := range Modules() {
		for _, n := range m.Nodes {
			if n.Type != dcache.TypeChar && n.Type != dcache.TypeBlock {
				continue
			}
			devices++
			matched := 0
			for i, row := range devicesTxt {
				sm := res[i].FindStringSubmatch(n.Path)
				if sm == nil || row.typ != n.Type {
					continue
				}
				matched++
				minor, ok := row.minor(sm)
				if !ok {
					t.Errorf("module %s: %v: name outside the range devices.txt documents (%s)", m.Name, n, row.cite)
					continue
				}
				if n.Major != row.major || n.Minor != minor {
					t.Errorf("module %s: %v: want %s %d:%d (%s)", m.Name, n, row.typ, row.major, minor, row.cite)
				}
			}
			if matched != 1 {
				t.Errorf("module %s: %v matches %d rows of the devices.txt table, want 1", m.Name, n, matched)
			}
		}
	}
	if devices < 100 {
		t.Errorf("catalogue has %d devices; expected the full issue 4 list", devices)
	}
}

// The row helpers are code too: check them so the table cannot pass
// vacuously.
func TestDevicesTxtHelpers(t *testing.T) {
	tests := []struct {
		f    func([]string) (uint32, bool)
		m    []string
		want uint32
		ok   bool
	}{
		{numbered(64, 0, 31), []string{"", "0"}, 64, true},
		{numbered(64, 0, 31), []string{"", "31"}, 95, true},
		{numbered(64, 0, 31), []string{"", "32"}, 0, false},
		{numbered(0, 128, 191), []string{"", "128"}, 128, true},
		{numbered(0, 128, 191), []string{"", "127"}, 0, false},
		{scsi('a'), []string{"", "b", ""}, 16, true},
		{scsi('a'), []string{"", "b", "15"}, 31, true},
		{scsi('a'), []string{"", "b", "16"}, 0, false},
		{scsi('a'), []string{"", "b", "01"}, 0, false},
		{scsi('q'), []string{"", "z", "3"}, 9*16 + 3, true},
	}
	for i, tt := range tests {
		got, ok := tt.f(tt.m)
		if got != tt.want || ok != tt.ok {
			t.Errorf("case %d: got %d, %v; want %d, %v", i, got, ok, tt.want, tt.ok)
		}
	}
}

// The nodes issue 4 names, with their numbers and modes: the catalogue must
// have every one of them, in the named module's reach.
func TestCatalogueHasIssueList(t *testing.T) {
	tests := []struct {
		path         string
		typ          dcache.Type
		major, minor uint32
		perm         uint32
	}{
		{"null", dcache.TypeChar, 1, 3, 0666},
		{"zero", dcache.TypeChar, 1, 5, 0666},
		{"full", dcache.TypeChar, 1, 7, 0666},
		{"random", dcache.TypeChar, 1, 8, 0666},
		{"urandom", dcache.TypeChar, 1, 9, 0666},
		{"kmsg", dcache.TypeChar, 1, 11, 0644},
		{"tty", dcache.TypeChar, 5, 0, 0666},
		{"console", dcache.TypeChar, 5, 1, 0600},
		{"ptmx", dcache.TypeChar, 5, 2, 0666},
		{"loop0", dcache.TypeBlock, 7, 0, 0660},
		{"loop7", dcache.TypeBlock, 7, 7, 0660},
		{"loop-control", dcache.TypeChar, 10, 237, 0660},
		{"tty0", dcache.TypeChar, 4, 0, 0620},
		{"tty63", dcache.TypeChar, 4, 63, 0620},
		{"ttyS0", dcache.TypeChar, 4, 64, 0660},
		{"ttyS3", dcache.TypeChar, 4, 67, 0660},
		{"net/tun", dcache.TypeChar, 10, 200, 0666},
		{"kvm", dcache.TypeChar, 10, 232, 0666},
		{"fuse", dcache.TypeChar, 10, 229, 0666},
		{"uinput", dcache.TypeChar, 10, 223, 0600},
		{"hwrng", dcache.TypeChar, 10, 183, 0600},
		{"watchdog", dcache.TypeChar, 10, 130, 0600},
		{"vhost-net", dcache.TypeChar, 10, 238, 0666},
		{"mapper/control", dcache.TypeChar, 10, 236, 0600},
		{"input/event0", dcache.TypeChar, 13, 64, 0660},
		{"input/event31", dcache.TypeChar, 13, 95, 0660},
		{"input/mice", dcache.TypeChar, 13, 63, 0660},
		{"dri/card0", dcache.TypeChar, 226, 0, 0660},
		{"dri/renderD128", dcache.TypeChar, 226, 128, 0666},
		{"nvidia0", dcache.TypeChar, 195, 0, 0666},
		{"nvidiactl", dcache.TypeChar, 195, 255, 0666},
		{"dsp", dcache.TypeChar, 14, 3, 0660},
		{"mixer", dcache.TypeChar, 14, 0, 0660},
		{"audio", dcache.TypeChar, 14, 4, 0660},
		{"snd/controlC0", dcache.TypeChar, 116, 0, 0660},
		{"snd/timer", dcache.TypeChar, 116, 33, 0660},
		{"snd/pcmC0D0p", dcache.TypeChar, 116, 16, 0660},
		{"snd/pcmC0D0c", dcache.TypeChar, 116, 24, 0660},
		{"sda", dcache.TypeBlock, 8, 0, 0660},
		{"sda1", dcache.TypeBlock, 8, 1, 0660},
		{"sdb15", dcache.TypeBlock, 8, 31, 0660},
		{"sdp", dcache.TypeBlock, 8, 240, 0660},
		{"sdq", dcache.TypeBlock, 65, 0, 0660},
		{"sdz15", dcache.TypeBlock, 65, 159, 0660},
		{"i2c-0", dcache.TypeChar, 89, 0, 0600},
		{"i2c-15", dcache.TypeChar, 89, 15, 0600},
	}
	nodes := map[string]modload.Node{}
	for _, m := range Modules() {
		for _, n := range m.Nodes {
			nodes[n.Path] = n
		}
	}
	for _, tt := range tests {
		n, ok := nodes[tt.path]
		if !ok {
			t.Errorf("%s: not in the catalogue", tt.path)
			continue
		}
		if n.Type != tt.typ || n.Major != tt.major || n.Minor != tt.minor || n.Perm != tt.perm {
			t.Errorf("%s: got %v, want %s %d:%d %04o", tt.path, n, tt.typ, tt.major, tt.minor, tt.perm)
		}
		if len(Providers(tt.path)) != 1 {
			t.Errorf("%s: providers %v, want exactly one", tt.path, Providers(tt.path))
		}
	}
}

func TestCatalogueNamesNeverCollide(t *testing.T) {
	owner := map[string]string{}
	modNames := map[string]bool{}
	for _, m := range Modules() {
		if modNames[m.Name] {
			t.Errorf("module name %s used twice", m.Name)
		}
		modNames[m.Name] = true
		if len(m.Nodes) == 0 {
			t.Errorf("module %s has no nodes", m.Name)
		}
		for _, n := range m.Nodes {
			if err := n.Validate(); err != nil {
				t.Errorf("module %s: %v", m.Name, err)
			}
			if prev, ok := owner[n.Path]; ok {
				t.Errorf("%s provided by %s and %s", n.Path, prev, m.Name)
			}
			owner[n.Path] = m.Name
		}
	}
	// The index agrees: every node has exactly its module as provider.
	for p, m := range owner {
		if got := Providers(p); len(got) != 1 || got[0] != m {
			t.Errorf("Providers(%q) = %v, want [%s]", p, got, m)
		}
	}
	// No device number is handed out twice.
	type devno struct {
		typ          dcache.Type
		major, minor uint32
	}
	seen := map[devno]string{}
	for _, m := range Modules() {
		for _, n := range m.Nodes {
			if n.Type != dcache.TypeChar && n.Type != dcache.TypeBlock {
				continue
			}
			k := devno{n.Type, n.Major, n.Minor}
			if prev, ok := seen[k]; ok {
				t.Errorf("%v reuses the number of %s", n, prev)
			}
			seen[k] = n.Path
		}
	}
}

func TestBaseSet(t *testing.T) {
	b := Base()
	if b.Name != BaseModule {
		t.Fatalf("Base().Name = %q", b.Name)
	}
	want := map[string]modload.Node{
		"null":    chr("null", 1, 3, 0666, 0),
		"zero":    chr("zero", 1, 5, 0666, 0),
		"full":    chr("full", 1, 7, 0666, 0),
		"random":  chr("random", 1, 8, 0666, 0),
		"urandom": chr("urandom", 1, 9, 0666, 0),
		"kmsg":    chr("kmsg", 1, 11, 0644, 0),
		"tty":     chr("tty", 5, 0, 0666, 5),
		"console": chr("console", 5, 1, 0600, 0),
		"ptmx":    chr("ptmx", 5, 2, 0666, 5),
		"fd":      {Path: "fd", Type: dcache.TypeSymlink, Perm: 0777, Target: "/proc/self/fd"},
		"stdin":   {Path: "stdin", Type: dcache.TypeSymlink, Perm: 0777, Target: "fd/0"},
		"stdout":  {Path: "stdout", Type: dcache.TypeSymlink, Perm: 0777, Target: "fd/1"},
		"stderr":  {Path: "stderr", Type: dcache.TypeSymlink, Perm: 0777, Target: "fd/2"},
		"pts":     {Path: "pts", Type: dcache.TypeDir, Perm: 0755},
		"shm":     {Path: "shm", Type: dcache.TypeDir, Perm: 01777},
	}
	if len(b.Nodes) != len(want) {
		t.Errorf("base has %d nodes, want %d", len(b.Nodes), len(want))
	}
	for _, n := range b.Nodes {
		if w, ok := want[n.Path]; !ok || n != w {
			t.Errorf("base node %v, want %v", n, w)
		}
	}
	// Base returns a copy: changing it leaves the catalogue alone.
	b.Nodes[0].Perm = 0
	if Base().Nodes[0].Perm == 0 {
		t.Error("Base() shares its slice with the catalogue")
	}
}

// Every directory a module's nodes live in is declared by that module
// before its contents, so the loader, not the Registrar, decides its mode
// and owner.
func TestCatalogueDirsBeforeContents(t *testing.T) {
	for _, m := range Modules() {
		declared := map[string]bool{}
		for _, n := range m.Nodes {
			for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
				if !declared[p] {
					t.Errorf("module %s: %s comes before its directory %s is declared", m.Name, n.Path, p)
				}
			}
			if n.Type == dcache.TypeDir {
				declared[n.Path] = true
				if n.Perm != 0755 && n.Perm != 01777 || n.UID != 0 || n.GID != 0 {
					t.Errorf("module %s: directory %v, want 0755 (or 1777) root:root", m.Name, n)
				}
			}
		}
	}
}
