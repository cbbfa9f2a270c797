package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime/debug"
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

// BuildTags is the -tags value of the binaries the tests build: the test
// hooks (TestHooksTag), plus every mutant tag (mutant_*) this test binary
// was built with, so that `go test -tags mutant_x ./test/...` (the mutant
// runs of test/mutants.sh) runs the daemon with that fix taken out too.
func BuildTags() string {
	tags := []string{TestHooksTag}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key != "-tags" {
				continue
			}
			for _, t := range strings.Split(s.Value, ",") {
				if strings.HasPrefix(t, "mutant_") {
					tags = append(tags, t)
				}
			}
		}
	}
	return strings.Join(tags, ",")
}

// Build builds the main package pkg (an import path in this module) once
// per process, with the test hooks and any mutant tag (BuildTags), into the base
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
		cmd := exec.Command("go", "build", "-tags", BuildTags(), "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
			return
		}
		r.bin = bin
	})
	return r.bin, r.err
}
