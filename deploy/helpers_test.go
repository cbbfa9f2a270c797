package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// repoRoot is the root of the devfsd repository, the parent of deploy/.
func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "cmd", "devfsd", "main.go")); err != nil {
		t.Fatalf("not the devfsd repository: %v", err)
	}
	return abs
}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// devfsdBinary builds cmd/devfsd once per test run (statically, as the
// image does) and returns its path.
func devfsdBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "devfsd-deploy-test-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "devfsd")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/devfsd")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatalf("building devfsd: %v", buildErr)
	}
	return buildBin
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + ": " + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// needTool returns the path of a program the test needs, skipping the test
// when it is missing — except under CI (CI=true), where .ci/run installs
// it and a missing tool is a failure, not a skip.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (Debian package %s); CI must install it", name, pkg)
	}
	t.Skipf("%s is not installed (Debian package %s)", name, pkg)
	return ""
}
