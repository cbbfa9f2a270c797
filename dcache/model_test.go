package dcache

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// The model-based test: random sequences of namespace operations are
// applied to a Namespace and to a reference model (a map of paths), and
// every result, errno and the whole resulting tree are compared. The model
// encodes Linux tmpfs semantics; model_tmpfs_test.go checks the model itself
// against a real tmpfs.

var (
	modelSeqs = flag.Int("model.seqs", 3000, "random sequences for TestModel")
	modelLen  = flag.Int("model.len", 60, "operations per sequence")
	modelSeed = flag.Int64("model.seed", 0, "replay one sequence with this seed")
)

type opKind int

const (
	opMkdir opKind = iota
	opMknod
	opSymlink
	opLink
	opUnlink
	opRmdir
	opRename
	opRegister
	opUnregister
	opChmod
	numOps
)

var opNames = [...]string{"mkdir", "mknod", "symlink", "link", "unlink", "rmdir", "rename", "register", "unregister", "chmod"}

type op struct {
	kind  opKind
	a, b  string
	flags uint32
	typ   Type
	mode  uint32
}

func (o op) String() string {
	s := fmt.Sprintf("%s(%q", opNames[o.kind], o.a)
	if o.kind == opLink || o.kind == opRename {
		s += fmt.Sprintf(", %q", o.b)
	}
	if o.kind == opRename {
		s += fmt.Sprintf(", flags=%d", o.flags)
	}
	if o.kind == opMknod || o.kind == opRegister {
		s += ", " + o.typ.String()
	}
	if o.kind == opChmod || o.kind == opMknod {
		s += fmt.Sprintf(", %#o", o.mode)
	}
	return s + ")"
}

// randPath returns 1 to 3 components over a small alphabet, so that
// operations collide often.
func randPath(r *rand.Rand) string {
	names := []string{"a", "b", "c"}
	n := 1 + r.Intn(3)
	if r.Intn(3) == 0 {
		n = 1
	}
	parts := make([]string, n)
	for i := range parts {
		parts[i] = names[r.Intn(len(names))]
	}
	return strings.Join(parts, "/")
}

func randOp(r *rand.Rand) op {
	o := op{kind: opKind(r.Intn(int(numOps))), a: randPath(r), b: randPath(r)}
	types := []Type{TypeRegular, TypeChar, TypeFifo, TypeSocket, TypeBlock}
	o.typ = types[r.Intn(len(types))]
	if o.kind == opRegister && r.Intn(3) == 0 {
		o.typ = TypeDir
	}
	o.mode = uint32(r.Intn(01000))
	switch r.Intn(4) {
	case 0:
		o.flags = RenameNoReplace
	case 1:
		o.flags = RenameExchange
	}
	return o
}

// snap is one path of a tree snapshot.
type snap struct {
	typ   Type
	nlink int
	mode  uint32 // permission bits
	id    uint64 // identity: equal ids are the same node
}

// system is what the sequences run against.
type system interface {
	apply(o op) syscall.Errno
	snapshot() map[string]snap
}

// ---- the reference model ----

type mnode struct {
	id   uint64
	typ  Type
	mode uint32
}

type model struct {
	paths  map[string]*mnode
	nextID uint64
}

func newModel() *model { return &model{paths: map[string]*mnode{}} }

func parentOf(p string) (string, string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

func isUnder(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// walkDir checks that every component of dir exists and is a directory;
// a symlink in the middle is followed and, its targets dangling, ENOENT.
func (m *model) walkDir(dir string) syscall.Errno {
	if dir == "" {
		return 0
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		n := m.paths[strings.Join(parts[:i+1], "/")]
		switch {
		case n == nil || n.typ == TypeSymlink:
			return syscall.ENOENT
		case n.typ != TypeDir:
			return syscall.ENOTDIR
		}
	}
	return 0
}

func (m *model) hasChildren(dir string) bool {
	for p := range m.paths {
		if strings.HasPrefix(p, dir+"/") {
			return true
		}
	}
	return false
}

func (m *model) add(p string, t Type, mode uint32) {
	m.nextID++
	m.paths[p] = &mnode{id: m.nextID, typ: t, mode: mode & PermMask}
}

func (m *model) removeTree(p string) {
	for q := range m.paths {
		if isUnder(q, p) {
			delete(m.paths, q)
		}
	}
}

// move renames every path under from to the same path under to.
func (m *model) move(from, to string, nodes map[string]*mnode) {
	for q, n := range nodes {
		if isUnder(q, from) {
			m.paths[to+q[len(from):]] = n
		}
	}
}

func (m *model) create(p string, t Type, mode uint32) syscall.Errno {
	dir, _ := parentOf(p)
	if e := m.walkDir(dir); e != 0 {
		return e
	}
	if m.paths[p] != nil {
		return syscall.EEXIST
	}
	m.add(p, t, mode)
	return 0
}

func (m *model) apply(o op) syscall.Errno {
	switch o.kind {
	case opMkdir:
		return m.create(o.a, TypeDir, o.mode)
	case opMknod:
		return m.create(o.a, o.typ, o.mode)
	case opSymlink:
		return m.create(o.a, TypeSymlink, 0777)
	case opLink:
		dir, _ := parentOf(o.a)
		if e := m.walkDir(dir); e != 0 {
			return e
		}
		src := m.paths[o.a]
		if src == nil {
			return syscall.ENOENT
		}
		ndir, _ := parentOf(o.b)
		if e := m.walkDir(ndir); e != 0 {
			return e
		}
		if m.paths[o.b] != nil {
			return syscall.EEXIST
		}
		if src.typ == TypeDir {
			return syscall.EPERM
		}
		m.paths[o.b] = src
		return 0
	case opUnlink, opRmdir:
		dir, _ := parentOf(o.a)
		if e := m.walkDir(dir); e != 0 {
			return e
		}
		n := m.paths[o.a]
		switch {
		case n == nil:
			return syscall.ENOENT
		case o.kind == opUnlink && n.typ == TypeDir:
			return syscall.EISDIR
		case o.kind == opRmdir && n.typ != TypeDir:
			return syscall.ENOTDIR
		case o.kind == opRmdir && m.hasChildren(o.a):
			return syscall.ENOTEMPTY
		}
		delete(m.paths, o.a)
		return 0
	case opRename:
		return m.rename(o.a, o.b, o.flags)
	case opRegister:
		parts := strings.Split(o.a, "/")
		for i := range parts[:len(parts)-1] {
			q := strings.Join(parts[:i+1], "/")
			switch n := m.paths[q]; {
			case n == nil:
				m.add(q, TypeDir, 0755)
			case n.typ != TypeDir:
				return syscall.ENOTDIR
			}
		}
		if m.paths[o.a] != nil {
			return syscall.EEXIST
		}
		m.add(o.a, o.typ, o.mode)
		return 0
	case opUnregister:
		dir, _ := parentOf(o.a)
		if e := m.walkDir(dir); e != 0 {
			return e
		}
		if m.paths[o.a] == nil {
			return syscall.ENOENT
		}
		m.removeTree(o.a)
		return 0
	case opChmod:
		dir, _ := parentOf(o.a)
		if e := m.walkDir(dir); e != 0 {
			return e
		}
		n := m.paths[o.a]
		if n == nil {
			return syscall.ENOENT
		}
		if n.typ != TypeSymlink { // chmod follows a symlink; ours dangle
			n.mode = o.mode & PermMask
		} else {
			return syscall.ENOENT
		}
		return 0
	}
	panic("unknown op")
}

// rename is renameat2 on tmpfs, in the kernel's order of checks.
func (m *model) rename(from, to string, flags uint32) syscall.Errno {
	odir, _ := parentOf(from)
	ndir, _ := parentOf(to)
	if e := m.walkDir(odir); e != 0 {
		return e
	}
	if e := m.walkDir(ndir); e != 0 {
		return e
	}
	src, dst := m.paths[from], m.paths[to]
	if src == nil {
		return syscall.ENOENT
	}
	exchange := flags&RenameExchange != 0
	if flags&RenameNoReplace != 0 && dst != nil {
		return syscall.EEXIST
	}
	if exchange && dst == nil {
		return syscall.ENOENT
	}
	if odir != ndir {
		if src.typ == TypeDir && isUnder(ndir, from) {
			return syscall.EINVAL
		}
		if dst != nil && dst.typ == TypeDir && isUnder(odir, to) {
			if exchange {
				return syscall.EINVAL
			}
			return syscall.ENOTEMPTY
		}
	}
	if src == dst {
		return 0
	}
	if !exchange && dst != nil {
		switch {
		case src.typ == TypeDir && dst.typ != TypeDir:
			return syscall.ENOTDIR
		case src.typ != TypeDir && dst.typ == TypeDir:
			return syscall.EISDIR
		case dst.typ == TypeDir && m.hasChildren(to):
			return syscall.ENOTEMPTY
		}
	}
	old := make(map[string]*mnode, len(m.paths))
	for p, n := range m.paths {
		old[p] = n
	}
	m.removeTree(from)
	if dst != nil {
		m.removeTree(to)
	}
	m.move(from, to, old)
	if exchange {
		m.move(to, from, old)
	}
	return 0
}

func (m *model) snapshot() map[string]snap {
	out := make(map[string]snap, len(m.paths))
	links := map[uint64]int{}
	for _, n := range m.paths {
		links[n.id]++
	}
	for p, n := range m.paths {
		s := snap{typ: n.typ, mode: n.mode, id: n.id, nlink: links[n.id]}
		if n.typ == TypeDir {
			s.nlink = 2
			for q, c := range m.paths {
				if c.typ == TypeDir && strings.HasPrefix(q, p+"/") && !strings.Contains(q[len(p)+1:], "/") {
					s.nlink++
				}
			}
		}
		out[p] = s
	}
	return out
}

// ---- the namespace under test ----

type nsSystem struct {
	ns *Namespace
	c  Caller
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	panic(fmt.Sprintf("error without errno: %v", err))
}

// walkDir resolves dir as the kernel would before calling the FUSE server.
func (s *nsSystem) walkDir(dir string) (*Node, syscall.Errno) {
	n := s.ns.Root()
	if dir == "" {
		return n, 0
	}
	for _, p := range strings.Split(dir, "/") {
		c, err := n.Lookup(p)
		if err != nil {
			return nil, errno(err)
		}
		switch c.Type() {
		case TypeDir:
		case TypeSymlink:
			return nil, syscall.ENOENT
		default:
			return nil, syscall.ENOTDIR
		}
		n = c
	}
	return n, 0
}

func (s *nsSystem) apply(o op) syscall.Errno {
	dirPath, name := parentOf(o.a)
	switch o.kind {
	case opRegister:
		spec := Spec{Type: o.typ, Mode: o.mode, Major: 1, Minor: 3}
		_, err := s.ns.Register(o.a, spec, s.c)
		return errno(err)
	case opUnregister:
		if _, e := s.walkDir(dirPath); e != 0 {
			return e
		}
		return errno(s.ns.Unregister(o.a, s.c))
	}
	dir, e := s.walkDir(dirPath)
	if e != 0 {
		return e
	}
	switch o.kind {
	case opMkdir:
		_, err := dir.Mkdir(name, o.mode, s.c)
		return errno(err)
	case opMknod:
		_, err := dir.Mknod(name, o.typ.ModeBits()|o.mode, 1, 3, s.c)
		return errno(err)
	case opSymlink:
		_, err := dir.Symlink(name, "/nonexistent-target", s.c)
		return errno(err)
	case opLink:
		src, err := dir.Lookup(name)
		if err != nil {
			return errno(err)
		}
		ndirPath, nname := parentOf(o.b)
		ndir, e := s.walkDir(ndirPath)
		if e != 0 {
			return e
		}
		return errno(ndir.Link(nname, src, s.c))
	case opUnlink:
		return errno(dir.Unlink(name, s.c))
	case opRmdir:
		return errno(dir.Rmdir(name, s.c))
	case opRename:
		ndirPath, nname := parentOf(o.b)
		ndir, e := s.walkDir(ndirPath)
		if e != 0 {
			return e
		}
		return errno(s.ns.Rename(dir, name, ndir, nname, o.flags, s.c))
	case opChmod:
		n, err := dir.Lookup(name)
		if err != nil {
			return errno(err)
		}
		if n.Type() == TypeSymlink {
			return syscall.ENOENT
		}
		_, err = n.SetAttr(SetAttrIn{Valid: SetMode, Mode: o.mode}, s.c)
		return errno(err)
	}
	panic("unknown op")
}

func (s *nsSystem) snapshot() map[string]snap {
	out := map[string]snap{}
	var walk func(d *Node, prefix string)
	walk = func(d *Node, prefix string) {
		ents, err := d.ReadDir(0, 0)
		if err != nil {
			panic(err)
		}
		for _, de := range ents[2:] {
			c, err := d.Lookup(de.Name)
			if err != nil {
				panic(err)
			}
			a := c.Attr()
			p := prefix + de.Name
			out[p] = snap{typ: a.Type, nlink: int(a.Nlink), mode: a.Mode & PermMask, id: a.Ino}
			if c.IsDir() {
				walk(c, p+"/")
			}
		}
	}
	walk(s.ns.Root(), "")
	return out
}

// diffSnapshots compares two trees up to the naming of identities.
func diffSnapshots(want, got map[string]snap) string {
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	idMap := map[uint64]uint64{}
	rev := map[uint64]uint64{}
	var b strings.Builder
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !wok:
			fmt.Fprintf(&b, "  %s: unexpected %v\n", p, g.typ)
			continue
		case !gok:
			fmt.Fprintf(&b, "  %s: missing %v\n", p, w.typ)
			continue
		}
		if w.typ != g.typ || w.nlink != g.nlink || w.mode != g.mode {
			fmt.Fprintf(&b, "  %s: want %v nlink %d mode %#o, got %v nlink %d mode %#o\n",
				p, w.typ, w.nlink, w.mode, g.typ, g.nlink, g.mode)
		}
		if m, ok := idMap[w.id]; ok && m != g.id {
			fmt.Fprintf(&b, "  %s: should be a hard link of another path\n", p)
		}
		if m, ok := rev[g.id]; ok && m != w.id {
			fmt.Fprintf(&b, "  %s: should not be a hard link of another path\n", p)
		}
		idMap[w.id], rev[g.id] = g.id, w.id
	}
	return b.String()
}

// runSequence applies n random operations from seed to both systems and
// returns a description of the first divergence, or "".
func runSequence(seed int64, n int, want, got system) string {
	r := rand.New(rand.NewSource(seed))
	var log []string
	for i := 0; i < n; i++ {
		o := randOp(r)
		we, ge := want.apply(o), got.apply(o)
		log = append(log, fmt.Sprintf("%3d %v = %v", i, o, ge))
		if we != ge {
			return fmt.Sprintf("op %d %v: want errno %v, got %v\n%s", i, o, errName(we), errName(ge), strings.Join(log, "\n"))
		}
		if d := diffSnapshots(want.snapshot(), got.snapshot()); d != "" {
			return fmt.Sprintf("after op %d %v trees differ:\n%s\nops:\n%s", i, o, d, strings.Join(log, "\n"))
		}
	}
	return ""
}

func errName(e syscall.Errno) string {
	if e == 0 {
		return "success"
	}
	return e.Error()
}

func TestModel(t *testing.T) {
	seqs := *modelSeqs
	if testing.Short() {
		seqs /= 10
	}
	seeds := make([]int64, 0, seqs)
	if *modelSeed != 0 {
		seeds = append(seeds, *modelSeed)
	} else {
		base := rand.Int63()
		for i := 0; i < seqs; i++ {
			seeds = append(seeds, base+int64(i))
		}
	}
	for _, seed := range seeds {
		sys := &nsSystem{ns: New(Options{}), c: Caller{Origin: OriginFUSE}}
		if d := runSequence(seed, *modelLen, newModel(), sys); d != "" {
			t.Fatalf("seed %d diverges (replay: go test ./dcache -run 'TestModel$' -model.seed=%d):\n%s", seed, seed, d)
		}
		if st := sys.ns.Statfs(); int(st.Nodes) != countNodes(sys.snapshot())+1 {
			t.Fatalf("seed %d: Statfs nodes %d, tree has %d", seed, st.Nodes, countNodes(sys.snapshot())+1)
		}
	}
}

func countNodes(s map[string]snap) int {
	ids := map[uint64]bool{}
	for _, v := range s {
		ids[v.id] = true
	}
	return len(ids)
}
