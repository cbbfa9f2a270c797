package difftest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Side is one of the two file systems compared: a name for messages and a
// directory in it (a mount point) that the sequences may fill.
type Side struct {
	Name string
	Dir  string
}

// Divergence is the first difference a sequence found.
type Divergence struct {
	Seed uint64
	Step int // index of the operation after which it showed; len(ops) for the final tree
	Ops  []Op
	Res  []Result // the reference's result of each operation run
	What string
}

func (d *Divergence) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "sequence seed %d diverged ", d.Seed)
	if d.Step < len(d.Ops) {
		fmt.Fprintf(&sb, "at step %d, %s:\n%s", d.Step, d.Ops[d.Step], d.What)
	} else {
		fmt.Fprintf(&sb, "in the final tree:\n%s", d.What)
	}
	sb.WriteString("operations, with the reference's results:\n")
	for i, r := range d.Res {
		fmt.Fprintf(&sb, "  %3d %s = %s\n", i, d.Ops[i], r)
	}
	return sb.String()
}

// RunSequence runs the sequence of nops operations of seed in a fresh
// working directory "s<seed>/w" on both sides, comparing as it goes, and
// removes the directories afterwards. It returns the first divergence, or
// an error if the sequence could not be run at all.
func RunSequence(a, b Side, seed uint64, nops int) (*Divergence, error) {
	ops := Generate(seed, nops)
	rel := filepath.Join(fmt.Sprintf("s%d", seed), "w")
	wa := filepath.Join(a.Dir, rel)
	wb := filepath.Join(b.Dir, rel)
	for _, w := range []string{wa, wb} {
		if err := os.MkdirAll(w, 0o755); err != nil {
			return nil, err
		}
	}
	defer func() {
		removeAll(filepath.Dir(wa))
		removeAll(filepath.Dir(wb))
	}()
	var res []Result
	for i, op := range ops {
		ra, rb := Apply(wa, op), Apply(wb, op)
		res = append(res, ra)
		if ra != rb {
			return &Divergence{seed, i, ops, res, fmt.Sprintf("  %s: %s\n  %s: %s\n", a.Name, ra, b.Name, rb)}, nil
		}
		for _, p := range op.Paths() {
			na, nb := Stat(wa, p), Stat(wb, p)
			if na != nb {
				return &Divergence{seed, i, ops, res, fmt.Sprintf("  result %s on both, then\n  %s: %s\n  %s: %s\n", ra, a.Name, na, b.Name, nb)}, nil
			}
		}
	}
	sa, err := Snapshot(wa)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", a.Name, err)
	}
	sb, err := Snapshot(wb)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", b.Name, err)
	}
	if d := DiffSnapshots(sa, sb, a.Name, b.Name); d != "" {
		return &Divergence{seed, len(ops), ops, res, d}, nil
	}
	return nil, nil
}

// removeAll removes a sequence directory. Modes do not matter to root, but
// a directory made 0000 by chmod is made searchable first so that the
// removal also works for a non-root run.
func removeAll(dir string) error {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			unix.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
