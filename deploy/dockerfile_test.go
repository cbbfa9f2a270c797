package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// instruction is one Dockerfile instruction as BuildKit parses it.
type instruction struct {
	cmd     string   // lower case: from, run, copy, ...
	args    []string // the words after it
	flags   []string // --from=build, --chmod=0755, ...
	json    bool     // exec (JSON) form
	line    int
	comment []string // comment lines just above it
	orig    string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", path, w.Short)
	}
	var ins []instruction
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, json: n.Attributes["json"],
			line: n.StartLine, comment: n.PrevComment, orig: n.Original}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		ins = append(ins, in)
	}
	return ins
}

// TestDockerfile checks deploy/container/Dockerfile with BuildKit's parser
// (the one `docker build` uses) against the rules that matter for this
// image, hadolint's among them (its rule numbers in brackets); hadolint
// itself is neither a Debian package nor a Go module.
func TestDockerfile(t *testing.T) {
	path := filepath.Join("container", "Dockerfile")
	ins := parseDockerfile(t, path)

	// ARGs before the first FROM, for resolving image references.
	args := map[string]string{}
	var stages []string // stage names, "" for unnamed
	var final []instruction
	for _, in := range ins {
		switch in.cmd {
		case "arg":
			if len(stages) == 0 {
				k, v, _ := strings.Cut(in.args[0], "=")
				args[k] = v
			}
		case "from":
			final = nil
			image := os.Expand(in.args[0], func(k string) string { return args[k] })
			name := ""
			if len(in.args) == 3 && strings.EqualFold(in.args[1], "as") {
				name = in.args[2]
			}
			stages = append(stages, name)
			repo, tag, hasTag := strings.Cut(image[strings.LastIndex(image, "/")+1:], ":")
			if !strings.Contains(image, "@sha256:") && (!hasTag || tag == "latest" || tag == "") {
				t.Errorf("line %d: FROM %s (%s): base image not pinned to a version [DL3006, DL3007]", in.line, in.args[0], repo)
			}
			continue
		case "add":
			for _, a := range in.args {
				if strings.Contains(a, "://") {
					t.Errorf("line %d: ADD of a URL: fetch in a RUN with a checksum, or COPY [DL3020]", in.line)
				}
			}
			t.Errorf("line %d: ADD: use COPY for files [DL3020]", in.line)
		case "run":
			checkRun(t, in)
		case "maintainer":
			t.Errorf("line %d: MAINTAINER is deprecated [DL4000]", in.line)
		}
		final = append(final, in)
	}

	if len(stages) < 2 {
		t.Errorf("%d stage(s): want a multi-stage build", len(stages))
	}
	if stages[0] == "" {
		t.Error("the build stage has no name (FROM ... AS build)")
	}
	// The static build.
	static := regexp.MustCompile(`CGO_ENABLED=0 go build\b`)
	found := false
	for _, in := range ins {
		if in.cmd == "run" && static.MatchString(strings.Join(in.args, " ")) {
			found = true
		}
	}
	if !found {
		t.Error("no RUN CGO_ENABLED=0 go build: the binary would not be static")
	}

	// The final stage: the binary from the build stage, the entrypoint in
	// exec form, a HEALTHCHECK, USER root said and explained.
	var entrypoint, healthcheck, user *instruction
	binFromBuild := false
	for i := range final {
		in := &final[i]
		switch in.cmd {
		case "entrypoint":
			entrypoint = in
		case "cmd":
			if !in.json {
				t.Errorf("line %d: CMD in shell form: signals would go to a shell [DL3025]", in.line)
			}
		case "healthcheck":
			healthcheck = in
		case "user":
			user = in
		case "copy":
			if contains(in.flags, "--from="+stages[0]) {
				binFromBuild = true
			}
		}
	}
	if !binFromBuild {
		t.Errorf("the final stage copies nothing from the %s stage", stages[0])
	}
	if entrypoint == nil || !entrypoint.json {
		t.Error("no ENTRYPOINT in exec (JSON) form: SIGTERM must reach devfsd [DL3025]")
	} else if !copiedTo(final, entrypoint.args[0]) {
		t.Errorf("ENTRYPOINT %s is not a file the final stage copies in", entrypoint.args[0])
	}
	if healthcheck == nil || !strings.Contains(healthcheck.orig, `CMD ["`) {
		t.Error("no HEALTHCHECK in exec form in the final stage")
	}
	if user == nil {
		t.Error("no USER in the final stage: say who the daemon runs as [DL3002]")
	} else if user.args[0] == "root" || user.args[0] == "0" {
		if len(user.comment) == 0 {
			t.Errorf("line %d: USER root without a comment saying why [DL3002]", user.line)
		}
	}

	// Every COPY source exists in the build context (the repository).
	root := repoRoot(t)
	for _, in := range ins {
		if in.cmd != "copy" || hasFlagPrefix(in.flags, "--from=") {
			continue
		}
		for _, src := range in.args[:len(in.args)-1] {
			if src == "." {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, src)); err != nil {
				t.Errorf("line %d: COPY %s: not in the build context: %v", in.line, src, err)
			}
		}
	}
}

func hasFlagPrefix(flags []string, p string) bool {
	for _, f := range flags {
		if strings.HasPrefix(f, p) {
			return true
		}
	}
	return false
}

// copiedTo reports whether a COPY of the stage puts a file at path.
func copiedTo(stage []instruction, path string) bool {
	for _, in := range stage {
		if in.cmd == "copy" && len(in.args) > 1 && in.args[len(in.args)-1] == path {
			return true
		}
	}
	return false
}

// checkRun applies hadolint's rules for RUN lines that this Dockerfile
// could break.
func checkRun(t *testing.T, in instruction) {
	t.Helper()
	s := strings.Join(in.args, " ")
	if strings.Contains(s, "apk add") && !strings.Contains(s, "--no-cache") {
		t.Errorf("line %d: apk add without --no-cache [DL3019]", in.line)
	}
	if strings.Contains(s, "apt-get install") {
		if !strings.Contains(s, "--no-install-recommends") {
			t.Errorf("line %d: apt-get install without --no-install-recommends [DL3015]", in.line)
		}
		if !strings.Contains(s, "rm -rf /var/lib/apt/lists") {
			t.Errorf("line %d: apt lists left in the layer [DL3009]", in.line)
		}
	}
	if regexp.MustCompile(`(^|[;&|]\s*)cd\s`).MatchString(s) {
		t.Errorf("line %d: cd in RUN: use WORKDIR [DL3003]", in.line)
	}
	if regexp.MustCompile(`\bsudo\b`).MatchString(s) {
		t.Errorf("line %d: sudo [DL3004]", in.line)
	}
	if regexp.MustCompile(`\b(curl|wget)\b.*\|\s*(ba)?sh`).MatchString(s) {
		t.Errorf("line %d: a download piped into a shell", in.line)
	}
}

// TestEntrypointScript checks deploy/container/entrypoint.sh: POSIX sh
// syntax (sh -n), shellcheck when it is installed, and that it ends by
// exec'ing devfsd (so that devfsd, not a shell, receives SIGTERM).
func TestEntrypointScript(t *testing.T) {
	path := filepath.Join("container", "entrypoint.sh")
	if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("sh -n %s: %v\n%s", path, err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, `exec /usr/bin/devfsd "$@"`) {
		t.Errorf("the script ends with %q, not exec /usr/bin/devfsd \"$@\"", last)
	}
	sc := needTool(t, "shellcheck", "shellcheck")
	if out, err := exec.Command(sc, "-s", "sh", path).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
