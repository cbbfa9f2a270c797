package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/devfsd/devfsd/test/harness"
)

// The production binary (built without harness.TestHooksTag) carries no
// test hook: none of the DEVFSD_TEST_* variables that daemon/testhooks.go
// reads, no pprof handler, no hook log line. The same check on the test
// build finds them, so the test can tell the two apart.
func TestProductionBinaryHasNoTestHooks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice")
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "daemon", "testhooks.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`DEVFSD_TEST_[A-Z_]+`).FindAll(src, -1) {
		names[string(m)] = true
	}
	if len(names) < 4 {
		t.Fatalf("found only %v in testhooks.go", names)
	}
	marks := []string{"/debug/pprof/", "TEST HOOK"}
	for n := range names {
		marks = append(marks, n)
	}
	dir := t.TempDir()
	build := func(tags ...string) []byte {
		t.Helper()
		bin := filepath.Join(dir, "devfsd"+fmtTags(tags))
		args := append([]string{"build"}, tags...)
		if out, err := exec.Command("go", append(args, "-o", bin, ".")...).CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", tags, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	prod := build()
	for _, m := range marks {
		if bytes.Contains(prod, []byte(m)) {
			t.Errorf("the production binary contains %q", m)
		}
	}
	test := build("-tags", harness.TestHooksTag)
	for _, m := range marks {
		if !bytes.Contains(test, []byte(m)) {
			t.Errorf("the test build lacks %q: the check cannot see a hook", m)
		}
	}
}

func fmtTags(tags []string) string {
	if len(tags) == 0 {
		return ""
	}
	return "-" + tags[len(tags)-1]
}
