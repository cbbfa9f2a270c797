package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/devfsd/devfsd/modload/devfsdconf"
)

// object is one decoded manifest.
type object struct {
	file string
	kind string
	obj  any
}

// newObject returns an empty object of the Go type the API server would
// decode apiVersion/kind into; only the kinds deploy/kubernetes uses.
func newObject(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Namespace":
		return &corev1.Namespace{}, true
	case "v1/Pod":
		return &corev1.Pod{}, true
	}
	return nil, false
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadManifests decodes every document of deploy/kubernetes/*.yaml
// strictly: a repeated key, a field the type does not have (a typo, a
// field at the wrong level), a value of the wrong type or a quantity that
// does not parse is an error — what a schema check (kubeconform, the API
// server's own decoding with fieldValidation=Strict) reports.
func loadManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSep.Split(string(b), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			where := fmt.Sprintf("%s (document %d)", f, i+1)
			j, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			var tm struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := json.Unmarshal(j, &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			obj, ok := newObject(tm.APIVersion, tm.Kind)
			if !ok {
				t.Errorf("%s: %s %s: not a kind this test knows; add it to newObject", where, tm.APIVersion, tm.Kind)
				continue
			}
			dec := json.NewDecoder(bytes.NewReader(j))
			dec.DisallowUnknownFields()
			if err := dec.Decode(obj); err != nil {
				t.Errorf("%s: %s: %v", where, tm.Kind, err)
				continue
			}
			objs = append(objs, object{file: f, kind: tm.Kind, obj: obj})
		}
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// The strict decoder is strict: the mistakes a schema check catches are
// errors here too.
func TestManifestDecoderRejects(t *testing.T) {
	for _, tt := range []struct{ name, doc string }{
		{"unknown field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {}\n"},
		{"field at the wrong level", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {containers: []}\n"},
		{"wrong type", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {terminationGracePeriodSeconds: soon}\n"},
		{"bad quantity", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, resources: {requests: {memory: lots}}}]}\n"},
		{"repeated key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nmetadata: {name: y}\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j, err := yaml.YAMLToJSONStrict([]byte(tt.doc))
			if err == nil {
				var tm struct{ APIVersion, Kind string }
				_ = json.Unmarshal(j, &tm)
				obj, _ := newObject(tm.APIVersion, tm.Kind)
				dec := json.NewDecoder(bytes.NewReader(j))
				dec.DisallowUnknownFields()
				err = dec.Decode(obj)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	var ds *appsv1.DaemonSet
	cms := map[string]*corev1.ConfigMap{}
	namespaces := map[string]*corev1.Namespace{}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.DaemonSet:
			ds = v
		case *corev1.ConfigMap:
			cms[v.Namespace+"/"+v.Name] = v
		case *corev1.Namespace:
			namespaces[v.Name] = v
		case *corev1.Pod:
			checkPodSpec(t, o.file, &v.Spec)
			checkClientPod(t, o.file, v)
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	if ns := namespaces[ds.Namespace]; ns == nil {
		t.Errorf("DaemonSet namespace %q has no Namespace manifest", ds.Namespace)
	} else if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s: Pod Security would refuse the privileged daemon", ns.Name)
	}
	checkDaemonSet(t, ds, cms)
}

// checkPodSpec applies the API server's validation rules that a decoder
// cannot: names are unique and resolve, Bidirectional propagation only in
// privileged containers, no privilege escalation switched off where it
// cannot be, every container has resource requests.
func checkPodSpec(t *testing.T, where string, spec *corev1.PodSpec) {
	t.Helper()
	vols := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if vols[v.Name] != nil {
			t.Errorf("%s: volume %q twice", where, v.Name)
		}
		vols[v.Name] = v
	}
	names := map[string]bool{}
	for _, c := range spec.Containers {
		if names[c.Name] {
			t.Errorf("%s: container %q twice", where, c.Name)
		}
		names[c.Name] = true
		sc := c.SecurityContext
		privileged := sc != nil && sc.Privileged != nil && *sc.Privileged
		for _, m := range c.VolumeMounts {
			if vols[m.Name] == nil {
				t.Errorf("%s: container %s mounts volume %q, which is not in the pod", where, c.Name, m.Name)
			}
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional && !privileged {
				t.Errorf("%s: container %s: Bidirectional mount propagation is allowed only in privileged containers", where, c.Name)
			}
		}
		if sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			if privileged {
				t.Errorf("%s: container %s: allowPrivilegeEscalation false with privileged", where, c.Name)
			}
			if sc.Capabilities != nil && contains(capNames(sc.Capabilities.Add), "SYS_ADMIN") {
				t.Errorf("%s: container %s: allowPrivilegeEscalation false with CAP_SYS_ADMIN", where, c.Name)
			}
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s: container %s: no cpu and memory requests", where, c.Name)
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
			t.Errorf("%s: container %s: image %q is not pinned to a tag", where, c.Name, c.Image)
		}
	}
}

func capNames(cs []corev1.Capability) []string {
	var s []string
	for _, c := range cs {
		s = append(s, string(c))
	}
	return s
}

// checkDaemonSet checks what this deployment needs of its DaemonSet.
func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, cms map[string]*corev1.ConfigMap) {
	t.Helper()
	where := "DaemonSet " + ds.Name
	spec := &ds.Spec.Template.Spec
	checkPodSpec(t, where, spec)
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the template's labels", where, k, v)
		}
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: host network, PID or IPC namespace: not needed", where)
	}
	daemon, helper := container(spec, "devfsd"), container(spec, "helper")
	if daemon == nil || helper == nil {
		t.Fatalf("%s: want containers devfsd and helper", where)
	}
	if h := helper.SecurityContext; h == nil || h.Privileged == nil || *h.Privileged {
		t.Errorf("%s: the helper container must not be privileged", where)
	}

	// The daemon: mount point below a Bidirectional hostPath, /dev/fuse.
	if len(daemon.Args) < 2 || daemon.Args[0] != "mount" {
		t.Fatalf("%s: devfsd args %q: want mount ... DIR", where, daemon.Args)
	}
	mnt := daemon.Args[len(daemon.Args)-1]
	parent := mountFor(t, spec, daemon, filepath.Dir(mnt))
	if parent.mount.MountPropagation == nil || *parent.mount.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("%s: the mount's parent %s is not mounted with Bidirectional propagation", where, parent.mount.MountPath)
	}
	if parent.vol.HostPath == nil {
		t.Errorf("%s: the mount's parent is not a hostPath volume", where)
	}
	fuse := mountFor(t, spec, daemon, "/dev/fuse")
	if fuse.vol.HostPath == nil || fuse.vol.HostPath.Path != "/dev/fuse" ||
		fuse.vol.HostPath.Type == nil || *fuse.vol.HostPath.Type != corev1.HostPathCharDev {
		t.Errorf("%s: /dev/fuse is not a hostPath CharDevice volume", where)
	}
	// The helper sees the mount (HostToContainer) and the socket.
	hp := mountFor(t, spec, helper, filepath.Dir(mnt))
	if hp.mount.MountPropagation == nil || *hp.mount.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("%s: the helper does not see the mount (HostToContainer)", where)
	}
	if !contains(helper.Args, "--mount="+mnt) {
		t.Errorf("%s: helper args %q lack --mount=%s", where, helper.Args, mnt)
	}

	// Probes: the control socket of the mount, with devfsd ctl.
	for _, c := range []*corev1.Container{daemon, helper} {
		probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe}
		if c == daemon {
			probes["liveness"] = c.LivenessProbe
		}
		for name, p := range probes {
			if p == nil || p.Exec == nil {
				t.Errorf("%s: container %s: no exec %s probe", where, c.Name, name)
				continue
			}
			want := []string{"/usr/bin/devfsd", "ctl", "--mount", mnt, "stats"}
			if strings.Join(p.Exec.Command, " ") != strings.Join(want, " ") {
				t.Errorf("%s: container %s: %s probe %q, want %q", where, c.Name, name, p.Exec.Command, want)
			}
			if p.TimeoutSeconds < 2 {
				t.Errorf("%s: container %s: %s probe timeout %ds is too short", where, c.Name, name, p.TimeoutSeconds)
			}
		}
	}
	if daemon.Resources.Limits.Cpu() != nil && !daemon.Resources.Limits.Cpu().IsZero() {
		t.Errorf("%s: a CPU limit throttles the daemon and every lookup waiting on it", where)
	}
	if d := spec.TerminationGracePeriodSeconds; d == nil || *d < 5 {
		t.Errorf("%s: terminationGracePeriodSeconds under the daemon's clean stop (5s)", where)
	}

	// The ConfigMap: present, and its files are the ones the args read,
	// and they parse.
	cfgFiles := map[string]string{}
	for _, c := range []*corev1.Container{daemon, helper} {
		for _, a := range c.Args {
			if f, ok := strings.CutPrefix(a, "--config="); ok {
				cfgFiles[f] = c.Name
			}
		}
	}
	for f, cname := range cfgFiles {
		c := container(spec, cname)
		m := mountFor(t, spec, c, filepath.Dir(f))
		if m.vol.ConfigMap == nil {
			t.Errorf("%s: container %s reads %s, which is not from a ConfigMap", where, cname, f)
			continue
		}
		cm := cms[ds.Namespace+"/"+m.vol.ConfigMap.Name]
		if cm == nil {
			t.Errorf("%s: ConfigMap %s/%s is not in deploy/kubernetes", where, ds.Namespace, m.vol.ConfigMap.Name)
			continue
		}
		data, ok := cm.Data[filepath.Base(f)]
		if !ok {
			t.Errorf("%s: ConfigMap %s has no key %s", where, cm.Name, filepath.Base(f))
			continue
		}
		switch cname {
		case "devfsd":
			checkDaemonConfig(t, "ConfigMap "+cm.Name+" "+filepath.Base(f), data)
		case "helper":
			checkHelperConfig(t, "ConfigMap "+cm.Name+" "+filepath.Base(f), data, mnt)
		}
	}
}

// checkClientPod checks the example of a pod that uses the namespace.
func checkClientPod(t *testing.T, where string, p *corev1.Pod) {
	t.Helper()
	for _, c := range p.Spec.Containers {
		for _, m := range c.VolumeMounts {
			v := volume(&p.Spec, m.Name)
			if v == nil || v.HostPath == nil || v.HostPath.Path != "/var/lib/devfsd" {
				continue
			}
			if m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
				t.Errorf("%s: %s mounts /var/lib/devfsd without HostToContainer: a restarted daemon's mount would not reach it", where, c.Name)
			}
			return
		}
	}
	t.Errorf("%s: no container mounts the hostPath /var/lib/devfsd", where)
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

type volumeMount struct {
	mount corev1.VolumeMount
	vol   *corev1.Volume
}

// mountFor returns c's volume mount at path exactly.
func mountFor(t *testing.T, spec *corev1.PodSpec, c *corev1.Container, path string) volumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			if v := volume(spec, m.Name); v != nil {
				return volumeMount{m, v}
			}
		}
	}
	t.Fatalf("container %s: no volume mounted on %s", c.Name, path)
	return volumeMount{}
}

// checkDaemonConfig checks a devfsd.yaml with the daemon itself: `devfsd
// mount --config FILE --socket=none DIR` with a DIR that does not exist
// reads and validates the file, then stops at the missing mount point, so
// the only error allowed is the mount point's.
func checkDaemonConfig(t *testing.T, where, data string) {
	t.Helper()
	bin := devfsdBinary(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "devfsd.yaml")
	if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "mount", "--config="+f, "--socket=none", filepath.Join(dir, "absent")).CombinedOutput()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" && !(strings.Contains(l, "invalid configuration") && strings.HasSuffix(l, ":")) {
			lines = append(lines, l)
		}
	}
	if err == nil || len(lines) != 1 || !strings.HasPrefix(lines[0], "mountpoint:") {
		t.Errorf("%s: devfsd mount --config: %v\n%s", where, err, out)
	}
}

// checkHelperConfig parses a devfsd.conf with the helper's parser: no
// line may be left out or warned about.
func checkHelperConfig(t *testing.T, where, data, mnt string) {
	t.Helper()
	cfg, err := devfsdconf.Parse("devfsd.conf", []byte(data), devfsdconf.Options{Mountpoint: mnt})
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	for _, d := range cfg.Diags {
		t.Errorf("%s: %v", where, d)
	}
	if len(cfg.Rules) == 0 {
		t.Errorf("%s: no rules", where)
	}
}

// The example config of the systemd unit and the image parses too.
func TestExampleDaemonConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("systemd", "devfsd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	checkDaemonConfig(t, "systemd/devfsd.yaml", string(b))
}
