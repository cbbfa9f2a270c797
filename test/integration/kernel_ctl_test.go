package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/loopdev"
)

// Issue 18 item 6 through a real daemon with `--devices=kernel`: `ctl
// info` shows a hotplugged loop device's uevent variables, its REGISTER
// event has origin kernel, `ctl trigger` rescans, and /metrics counts the
// uevents and the rescan.
func TestKernelDevicesCtlInfoTrigger(t *testing.T) {
	loopdev.Need(t)
	d := startCtl(t, "--devices=kernel")

	ctx, cancel := context.WithCancel(context.Background())
	st, err := d.c.Events(ctx, 4096)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	origins := make(chan map[string]string, 1) // name -> origin of its REGISTER
	go func() {
		seen := map[string]string{}
		defer func() { origins <- seen }()
		for {
			rec, err := st.Next()
			if err != nil {
				return
			}
			if rec.Type == "event" && rec.Kind == "REGISTER" {
				seen[rec.Path] = rec.Origin
			}
		}
	}()
	stopEvents := func() map[string]string { cancel(); st.Close(); return <-origins }
	t.Cleanup(func() { cancel(); st.Close() })

	i := loopdev.Add(t)
	name := fmt.Sprintf("loop%d", i)
	num, err := os.ReadFile(fmt.Sprintf("/sys/block/%s/dev", name))
	if err != nil {
		t.Fatal(err)
	}
	maj, min, _ := strings.Cut(strings.TrimSpace(string(num)), ":")
	until(t, name+" in `ctl info`", func() bool { _, _, code := d.ctl(t, nil, "info", name); return code == 0 })

	out := d.mustCtl(t, "info", name)
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("ctl info: line %q is not KEY=VALUE:\n%s", l, out)
		}
		lines[k] = v
	}
	for k, want := range map[string]string{"MAJOR": maj, "MINOR": min, "DEVNAME": name, "SUBSYSTEM": "block",
		"DEVPATH": "/devices/virtual/block/" + name} {
		if lines[k] != want {
			t.Errorf("ctl info %s: %s=%q, want %q:\n%s", name, k, lines[k], want, out)
		}
	}
	var info wire.DeviceInfo
	if err := json.Unmarshal([]byte(d.mustCtl(t, "info", "--json", name)), &info); err != nil {
		t.Fatal(err)
	}
	if info.Path != name || info.Type != "block" || strconv.Itoa(int(info.Major)) != maj ||
		strconv.Itoa(int(info.Minor)) != min || !info.Registered || info.Env["DEVNAME"] != name {
		t.Errorf("ctl info --json %s = %+v", name, info)
	}
	// Not a kernel device: a name the kernel does not have, and one the
	// daemon made itself (fd is a symlink of the base set).
	for _, p := range []string{"nvidia0", "fd"} {
		if _, errOut, code := d.ctl(t, nil, "info", p); code != 3 || !strings.Contains(errOut, "not_found") {
			t.Errorf("ctl info %s: exit %d, stderr %q; want 3 and not_found", p, code, errOut)
		}
	}

	if got := stopEvents()[name]; got != "kernel" {
		t.Errorf("REGISTER of %s: origin %q, want kernel", name, got)
	}

	out = d.mustCtl(t, "trigger")
	if !regexp.MustCompile(`^rescanned: [1-9][0-9]* devices, [1-9][0-9]* nodes registered\n$`).MatchString(out) {
		t.Errorf("ctl trigger: %q", out)
	}
	var tr wire.Trigger
	if err := json.Unmarshal([]byte(d.mustCtl(t, "trigger", "--json")), &tr); err != nil {
		t.Fatal(err)
	}
	if tr.Rescans < 2 || tr.Devices == 0 {
		t.Errorf("ctl trigger --json after two triggers: %+v", tr)
	}
	// The rescan changed nothing: the device is still there, the same.
	if out := d.mustCtl(t, "info", name); !strings.Contains(out, "DEVNAME="+name+"\n") {
		t.Errorf("ctl info %s after trigger:\n%s", name, out)
	}

	mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer mcancel()
	text, err := d.c.Metrics(mctx)
	if err != nil {
		t.Fatal(err)
	}
	metric := func(series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %s in /metrics", series)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := metric(`devfsd_kernel_uevents_total{action="add"}`); v < 1 {
		t.Errorf("uevents add = %v after LOOP_CTL_ADD", v)
	}
	if v := metric(`devfsd_kernel_rescans_total`); v < 2 {
		t.Errorf("rescans = %v after two triggers", v)
	}
	for _, s := range []string{`devfsd_kernel_uevents_ignored_total{reason="forged"}`, `devfsd_kernel_overruns_total`,
		`devfsd_kernel_autoloads_total`, `devfsd_kernel_uevents_total{action="remove"}`} {
		metric(s)
	}
}

// Without the kernel source, trigger is not supported (exit 8) and info
// finds no device (exit 3).
func TestCatalogueCtlTriggerNotSupported(t *testing.T) {
	d := startCtl(t, "--devices=catalogue")
	if _, errOut, code := d.ctl(t, nil, "trigger"); code != 8 || !strings.Contains(errOut, "not_supported") {
		t.Errorf("ctl trigger: exit %d, stderr %q; want 8 and not_supported", code, errOut)
	}
	if _, errOut, code := d.ctl(t, nil, "info", "null"); code != 3 || !strings.Contains(errOut, "not_found") {
		t.Errorf("ctl info null: exit %d, stderr %q; want 3 and not_found", code, errOut)
	}
}
