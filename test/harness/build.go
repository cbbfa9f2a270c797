package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

var (
	buildMu  sync.Mutex
	builds   = map[string]*buildResult{}
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

type buildResult struct {
	once sync.Once
	bin  string
	err  error
}

// ModuleRoot is the directory of the go.mod of the module this process runs
// in (found by `go env GOMOD` from the working directory).
func ModuleRoot() (string, error) {
	rootOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			rootErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			rootErr = fmt.Errorf("not inside a Go module (run from the devfsd repository)")
			return
		}
		rootDir = filepath.Dir(gomod)
	})
	return rootDir, rootErr
}

// TestHooksTag is the build tag that builds devfsd's test hooks
// (daemon/testhooks.go: the DEVFSD_TEST_* environment variables). The
// production binary is built without it and carries none.
const TestHooksTag = "devfsd_testhooks"

// Build builds the main package pkg (an import path in this module) once
// per process, with the test hooks (TestHooksTag), into the base
// directory, and returns the binary's path. Concurrent callers share one
// build.
func Build(pkg string) (string, error) {
	buildMu.Lock()
	r := builds[pkg]
	if r == nil {
		r = &buildResult{}
		builds[pkg] = r
	}
	buildMu.Unlock()
	r.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			r.err = err
			return
		}
		base, err := Base()
		if err != nil {
			r.err = err
			return
		}
		bin := filepath.Join(base, "bin", path.Base(pkg))
		cmd := exec.Command("go", "build", "-tags", TestHooksTag, "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
			return
		}
		r.bin = bin
	})
	return r.bin, r.err
}
