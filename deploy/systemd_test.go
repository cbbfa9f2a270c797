package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitFile is a parsed systemd unit: section -> key -> values in order
// (a key may repeat; an empty assignment resets it, as in systemd).
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	var cont string
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if v == "" {
			u[section][k] = nil
			continue
		}
		u[section][k] = append(u[section][k], v)
	}
	return u
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	return strings.Join(v, " ")
}

// mountNamespaceKeys are the [Service] options that make systemd give the
// service a mount namespace of its own. With one, systemd turns mount
// propagation from the service to the host off (systemd.exec(5),
// MountFlags=: "shared" is downgraded to "slave"), so a FUSE mount made by
// the daemon would be seen by nobody outside the service. The daemon unit
// must use none of them; the helper unit may.
var mountNamespaceKeys = []string{
	"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
	"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
	"ProtectControlGroups", "ProtectProc", "ProcSubset", "ReadOnlyPaths",
	"ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
	"TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory",
	"RootImage", "MountAPIVFS", "MountFlags", "PrivateUsers", "PrivateNetwork",
	"NetworkNamespacePath", "ProtectClock", "ProtectHostname", "LogNamespace",
	"MountImages", "ExtensionImages", "ExtensionDirectories",
}

func TestSystemdDaemonUnitRules(t *testing.T) {
	u := parseUnit(t, filepath.Join("systemd", "devfsd@.service"))
	want := map[string]string{
		"Type":       "notify",
		"ExecReload": "/bin/kill -HUP $MAINPID",
		"KillSignal": "SIGTERM",
		"KillMode":   "mixed",
		"Restart":    "always",
	}
	for k, v := range want {
		if got := u.get("Service", k); got != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	// Staying up: the descriptor store holds every mount (3 descriptors
	// each: /dev/fuse, pts, shm) and the memfd; the restart is quick and
	// survives the kill test's 20 kills in 10 s; nothing after a crash
	// probes (and so unmounts) the kept mounts.
	if n, err := strconv.Atoi(u.get("Service", "FileDescriptorStoreMax")); err != nil || n < 4 {
		t.Errorf("FileDescriptorStoreMax = %q: want room for a mount and the memfd at least", u.get("Service", "FileDescriptorStoreMax"))
	}
	if d, err := time.ParseDuration(u.get("Service", "RestartSec")); err != nil || d > time.Second {
		t.Errorf("RestartSec = %q: want at most 1s (callers wait through the restart)", u.get("Service", "RestartSec"))
	}
	burst, _ := strconv.Atoi(u.get("Unit", "StartLimitBurst"))
	interval, err := time.ParseDuration(u.get("Unit", "StartLimitIntervalSec"))
	if err != nil || burst == 0 || float64(burst)/interval.Seconds() < 2 {
		t.Errorf("StartLimitBurst=%q in StartLimitIntervalSec=%q: want at least 2 restarts a second allowed",
			u.get("Unit", "StartLimitBurst"), u.get("Unit", "StartLimitIntervalSec"))
	}
	if v, ok := u["Service"]["ExecStopPost"]; ok {
		t.Errorf("ExecStopPost=%q: after a crash it would probe the kept mount, wait, and unmount it", v)
	}
	// The keeper runs the daemon: it is the main process (every notify
	// message comes from it), it starts a killed daemon again without
	// waiting for a thread stuck in the kernel, and passes its store on to
	// the unit's.
	start := u.get("Service", "ExecStart")
	keeper, daemon, ok := strings.Cut(start, " -- ")
	if !ok || !strings.HasPrefix(keeper, "/usr/local/bin/devfsd keeper ") ||
		!strings.HasPrefix(daemon, "/usr/local/bin/devfsd mount ") || !strings.HasSuffix(start, " %f") {
		t.Errorf("ExecStart = %q: want /usr/local/bin/devfsd keeper ... -- /usr/local/bin/devfsd mount ... %%f", start)
	}
	if !strings.Contains(keeper, "--runtime-dir=/run/devfsd/%i.") {
		t.Errorf("ExecStart = %q: want the keeper's notify socket in a directory of its instance under /run/devfsd", start)
	}
	if got := u.get("Service", "NotifyAccess"); got != "main" {
		t.Errorf("NotifyAccess = %q, want main: only the keeper speaks to systemd", got)
	}
	// A clean stop drains for shutdown_timeout (3s, devfsd.yaml's default)
	// and unmounts; a killed keeper whose daemon is stuck costs callers
	// two TimeoutStopSec stages (docs/operator.md): room for the first,
	// not much more.
	if d, err := time.ParseDuration(u.get("Service", "TimeoutStopSec")); err != nil || d < 6*time.Second || d > 15*time.Second {
		t.Errorf("TimeoutStopSec = %q: want 6s to 15s", u.get("Service", "TimeoutStopSec"))
	}
	for _, k := range mountNamespaceKeys {
		if v, ok := u["Service"][k]; ok {
			t.Errorf("[Service] %s=%s gives the daemon a mount namespace: its mount would not reach the host", k, strings.Join(v, " "))
		}
	}
	caps := strings.Fields(u.get("Service", "CapabilityBoundingSet"))
	if !contains(caps, "CAP_SYS_ADMIN") {
		t.Errorf("CapabilityBoundingSet %q lacks CAP_SYS_ADMIN, which mounting needs", caps)
	}
	if u.get("Service", "NoNewPrivileges") != "yes" {
		t.Error("NoNewPrivileges is not yes")
	}
	if !strings.Contains(u.get("Service", "DeviceAllow"), "/dev/fuse rw") {
		t.Errorf("DeviceAllow = %q: the daemon needs /dev/fuse", u.get("Service", "DeviceAllow"))
	}
	if sc := u.get("Service", "SystemCallFilter"); !strings.Contains(sc, "@mount") {
		t.Errorf("SystemCallFilter = %q lacks @mount (mount(2), umount2(2))", sc)
	}
}

func TestSystemdHelperUnitRules(t *testing.T) {
	u := parseUnit(t, filepath.Join("systemd", "devfsd-helper@.service"))
	for k, v := range map[string]string{
		"Type":          "notify",
		"ExecReload":    "/bin/kill -HUP $MAINPID",
		"ProtectSystem": "strict",
		"PrivateTmp":    "yes",
	} {
		if got := u.get("Service", k); got != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"Requires", "After", "PartOf"} {
		if got := u.get("Unit", k); got != "devfsd@%i.service" {
			t.Errorf("[Unit] %s = %q, want devfsd@%%i.service", k, got)
		}
	}
	// The helper ends with each daemon the keeper restarts: it is
	// started again soon, and never given up while the daemon runs.
	if d, err := time.ParseDuration(u.get("Service", "RestartSec")); err != nil || d > time.Second {
		t.Errorf("helper RestartSec = %q: want at most 1s", u.get("Service", "RestartSec"))
	}
	if got := u.get("Unit", "StartLimitIntervalSec"); got != "0" {
		t.Errorf("helper StartLimitIntervalSec = %q, want 0: a daemon killed often must not end its helper for good", got)
	}
	start := u.get("Service", "ExecStart")
	for _, w := range []string{"/usr/local/bin/devfsd helper ", " -fg ", "--mount=%f", "--socket=/run/devfsd/%i.sock"} {
		if !strings.Contains(start, w) {
			t.Errorf("ExecStart = %q lacks %q", start, w)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on both units, as
// instances, with ExecStart pointed at a devfsd built for the test (verify
// checks that the program exists). Any output — a warning about an unknown
// key included — is a failure.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := needTool(t, "systemd-analyze", "systemd")
	bin := devfsdBinary(t)
	dir := t.TempDir()
	const inst = "srv-devfsd-dev"
	var paths []string
	for _, name := range []string{"devfsd@.service", "devfsd-helper@.service"} {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/devfsd"), []byte(bin))
		// The template, and an instance of it (verify loads the instance
		// from the template of the same directory).
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, filepath.Join(dir, strings.Replace(name, "@", "@"+inst, 1)))
	}
	for _, p := range paths {
		tmpl := strings.Replace(filepath.Base(p), "@"+inst, "@", 1)
		if err := os.Symlink(tmpl, p); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sa, append([]string{"verify", "--man=no"}, paths...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("%s verify --man=no %s: %v\n%s", sa, strings.Join(paths, " "), err, out)
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdUnitExecution starts the daemon as devfsd@.service would,
// without systemd: its ExecStart line (paths pointed into a temporary
// directory), its CapabilityBoundingSet and NoNewPrivileges applied by
// setpriv(1), and a NOTIFY_SOCKET read by the test. It checks READY=1,
// that the unit's capabilities suffice for the mount, for mknod and chmod
// through it (made by a caller with CAP_MKNOD, the test) and for the
// health probe, that SIGHUP (ExecReload) reloads, and that SIGTERM stops
// cleanly: STOPPING=1, exit 0, the mount gone. What setpriv cannot apply
// (the seccomp filter, the device cgroup) is covered by the run under a
// real systemd in deploy/README.md.
func TestSystemdUnitExecution(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount, mknod)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	setpriv := needTool(t, "setpriv", "util-linux")
	bin := devfsdBinary(t)
	u := parseUnit(t, filepath.Join("systemd", "devfsd@.service"))

	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	state := filepath.Join(dir, "state")
	sock := filepath.Join(dir, "ctl.sock")
	cfg := filepath.Join(dir, "devfsd.yaml")
	for _, d := range []string{mnt, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	example, err := os.ReadFile(filepath.Join("systemd", "devfsd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, example, 0o644); err != nil {
		t.Fatal(err)
	}

	// The unit's ExecStart with its specifiers and paths filled in.
	start := u.get("Service", "ExecStart")
	r := strings.NewReplacer("/usr/local/bin/devfsd", bin, "/etc/devfsd/devfsd.yaml", cfg,
		"/run/devfsd/%i.keeper", filepath.Join(dir, "keeper"),
		"/var/lib/devfsd/%i", state, "$DEVFSD_OPTS", "--socket="+sock, "%f", mnt)
	argv := strings.Fields(r.Replace(start))
	if strings.ContainsAny(strings.Join(argv, " "), "%$") {
		t.Fatalf("ExecStart %q: unhandled specifier in %q", start, argv)
	}

	// The bounding set as setpriv spells it: -all,+sys_admin,+chown.
	bset := "-all"
	for _, c := range strings.Fields(u.get("Service", "CapabilityBoundingSet")) {
		bset += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	args := []string{"--bounding-set", bset, "--inh-caps", "-all"}
	if u.get("Service", "NoNewPrivileges") == "yes" {
		args = append(args, "--no-new-privs")
	}
	args = append(append(args, "--"), argv...)

	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()

	cmd := exec.Command(setpriv, args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.LocalAddr().String())
	cmd.Dir = "/"
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s", setpriv, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := make(chan string, 256)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	// exited is closed once the daemon has exited, with waitErr set.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		if mounted(t, mnt) {
			_ = exec.Command("umount", "-l", mnt).Run()
		}
	}()

	stopTimeout, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	waitNotify(t, notify, "READY=1", exited)
	checkBoundingSet(t, cmd.Process.Pid, u.get("Service", "CapabilityBoundingSet"))

	// Root (the test, with CAP_MKNOD) makes and changes a device node
	// through the mount: the daemon's bounding set does not need CAP_MKNOD.
	node := filepath.Join(mnt, "deploy-null")
	if err := syscall.Mknod(node, syscall.S_IFCHR|0o600, int(mkdev(1, 3))); err != nil {
		t.Fatalf("mknod through the mount: %v", err)
	}
	if err := os.Chmod(node, 0o666); err != nil {
		t.Fatalf("chmod through the mount: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(node, &st); err != nil || st.Mode != syscall.S_IFCHR|0o666 || st.Rdev != mkdev(1, 3) {
		t.Fatalf("stat %s: mode %o rdev %x, %v", node, st.Mode, st.Rdev, err)
	}
	// The probe of the container image and the DaemonSet.
	if out, err := exec.Command(bin, "ctl", "--socket", sock, "stats").CombinedOutput(); err != nil {
		t.Fatalf("devfsd ctl stats: %v\n%s", err, out)
	}

	// ExecReload.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "configuration reloaded")

	// The keeper's daemon killed: the keeper starts it again with the
	// kept descriptors, and the same mount serves the node made before.
	var before syscall.Stat_t
	if err := syscall.Stat(mnt, &before); err != nil {
		t.Fatal(err)
	}
	child := keeperChild(t, cmd.Process.Pid)
	if err := syscall.Kill(child, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "serving the kept mounts again")
	waitLog(t, logs, "keeper: the daemon is ready")
	if err := syscall.Stat(node, &st); err != nil || st.Rdev != mkdev(1, 3) {
		t.Fatalf("stat %s after the daemon was killed: %v", node, err)
	}
	var after syscall.Stat_t
	if err := syscall.Stat(mnt, &after); err != nil || after.Dev != before.Dev {
		t.Fatalf("the mount after the kill: device %d (%v), was %d", after.Dev, err, before.Dev)
	}
	if again := keeperChild(t, cmd.Process.Pid); again == child {
		t.Fatalf("the keeper's daemon is still pid %d", child)
	}

	// systemctl stop: SIGTERM, then STOPPING=1, exit 0, no mount left.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitNotify(t, notify, "STOPPING=1", nil)
	select {
	case <-exited:
		if waitErr != nil {
			var rest []string
			for l := range logs {
				rest = append(rest, l)
			}
			t.Fatalf("devfsd exited: %v; its last log lines:\n%s", waitErr, strings.Join(rest[max(0, len(rest)-20):], "\n"))
		}
	case <-time.After(stopTimeout):
		t.Fatalf("devfsd did not stop within TimeoutStopSec (%v)", stopTimeout)
	}
	if mounted(t, mnt) {
		t.Fatalf("%s is still mounted after a clean stop", mnt)
	}
	// --state-dir=/var/lib/devfsd/%i (StateDirectory=) was used.
	if !exists(filepath.Join(state, "snapshot")) {
		t.Errorf("no snapshot in the state directory %s", state)
	}
}

// capBits are the capabilities the units name, by number (capability.h).
var capBits = map[string]uint{
	"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
	"CAP_KILL": 5, "CAP_MKNOD": 27, "CAP_SYS_MODULE": 16, "CAP_SYS_ADMIN": 21,
}

// checkBoundingSet checks that the running daemon has exactly the unit's
// bounding set, so that the test proves that set is enough.
func checkBoundingSet(t *testing.T, pid int, set string) {
	t.Helper()
	var want uint64
	for _, c := range strings.Fields(set) {
		bit, ok := capBits[c]
		if !ok {
			t.Fatalf("capability %s: add it to capBits", c)
		}
		want |= 1 << bit
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			var got uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("the daemon's CapBnd is %#x, want %#x (%s)", got, want, set)
			}
			return
		}
	}
	t.Fatal("no CapBnd in /proc/PID/status")
}

func mkdev(major, minor uint64) uint64 {
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12 | (major&^0xfff)<<32
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// waitNotify reads sd_notify datagrams until one carries want. It fails
// if the daemon exits first or nothing comes within 20s.
func waitNotify(t *testing.T, c *net.UnixConn, want string, exited <-chan struct{}) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				got <- err
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == want {
					got <- nil
					return
				}
			}
		}
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
	case <-exited:
		t.Fatalf("devfsd exited before %s", want)
	}
}

// waitLog reads the daemon's log lines until one contains want.
func waitLog(t *testing.T, logs <-chan string, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-logs:
			if !ok {
				t.Fatalf("log ended before %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no log line with %q", want)
		}
	}
}

// mounted reports whether dir is a mount point (of this mount namespace).
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == dir {
			return true
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return false
}

func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestSystemdRealPID1 runs systemd/run-under-systemd.sh: both units
// started, reloaded and stopped by a real systemd 252+ booted as PID 1 of
// private namespaces. Opt-in (DEVFSD_TEST_REAL_SYSTEMD=1, as root),
// because it boots an init system on the machine running the tests; the
// script keeps it off the machine's files and sysctls, and README.md
// records a run.
func TestSystemdRealPID1(t *testing.T) {
	if os.Getenv("DEVFSD_TEST_REAL_SYSTEMD") != "1" {
		t.Skip("opt-in: DEVFSD_TEST_REAL_SYSTEMD=1 boots systemd in private namespaces")
	}
	if os.Geteuid() != 0 {
		t.Fatal("DEVFSD_TEST_REAL_SYSTEMD=1 needs root")
	}
	cmd := exec.Command("bash", filepath.Join("systemd", "run-under-systemd.sh"))
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("run-under-systemd.sh: %v", err)
	}
}

// keeperChild returns the one child of the keeper (pid), the daemon,
// once it has exec'd the daemon (its command line says mount).
func keeperChild(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		var kids []int
		for _, f := range tasks {
			b, _ := os.ReadFile(f)
			for _, w := range strings.Fields(string(b)) {
				if k, err := strconv.Atoi(w); err == nil {
					kids = append(kids, k)
				}
			}
		}
		if len(kids) == 1 {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", kids[0]))
			if args := strings.Split(string(b), "\x00"); len(args) > 1 && args[1] == "mount" {
				return kids[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the keeper %d has children %v, want one daemon", pid, kids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
