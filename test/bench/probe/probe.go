package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The names of one container start's probes of its /dev (issue 17's mix).
var (
	openNames  = []string{"null", "zero", "full"}   // open O_RDWR, close
	readName   = "urandom"                          // open, read 16 bytes, close
	statNames  = []string{"tty", "ptmx", "console"} // stat (following links)
	lstatNames = []string{"pts", "shm", "fd", "stdin"}
	// absentNames are provided by no module of the built-in catalogue
	// (docs/catalogue.md) and made by nothing: every lstat is ENOENT, on
	// devfsd a miss (the loader asked once per negative timeout, the rest
	// answered by the negative caches).
	absentNames = []string{"sgx_enclave", "sgx_provision", "tpm0", "tpmrm0",
		"nvidia-uvm", "nvidia-modeset", "dma_heap", "udmabuf"}
)

// probeSet is the probe mix with its paths resolved under one mount.
type probeSet struct {
	dir     string
	open    []string
	read    string
	stat    []string
	lstat   []string
	absent  []string
	entries int // names the root lists, "." and ".." left out
}

// newProbeSet resolves the mix under dir, whose root lists entries names;
// it lstats the first nAbsent of absentNames.
func newProbeSet(dir string, entries, nAbsent int) *probeSet {
	join := func(ns []string) []string {
		var r []string
		for _, n := range ns {
			r = append(r, filepath.Join(dir, n))
		}
		return r
	}
	return &probeSet{dir: dir, open: join(openNames), read: filepath.Join(dir, readName),
		stat: join(statNames), lstat: join(lstatNames), absent: join(absentNames[:nAbsent]), entries: entries}
}

// start does one container start's probes; buf is the caller's listing
// buffer (one per thread). Every probe's outcome is checked: a wrong
// answer is an error, not a figure.
func (p *probeSet) start(buf []byte) error {
	for _, n := range p.open {
		fd, err := unix.Open(n, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", n, err)
		}
		unix.Close(fd)
	}
	fd, err := unix.Open(p.read, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.read, err)
	}
	k, err := unix.Read(fd, buf[:16])
	unix.Close(fd)
	if err != nil || k != 16 {
		return fmt.Errorf("read %s: %d bytes, %v", p.read, k, err)
	}
	var st unix.Stat_t
	for _, n := range p.stat {
		if err := unix.Stat(n, &st); err != nil {
			return fmt.Errorf("stat %s: %w", n, err)
		}
	}
	for _, n := range p.lstat {
		if err := unix.Lstat(n, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", n, err)
		}
	}
	got, err := listCount(p.dir, buf)
	if err != nil {
		return err
	}
	if got != p.entries {
		return fmt.Errorf("listing of %s: %d names, want %d", p.dir, got, p.entries)
	}
	for _, n := range p.absent {
		if err := unix.Lstat(n, &st); err != unix.ENOENT {
			return fmt.Errorf("lstat %s: %v, want ENOENT", n, err)
		}
	}
	return nil
}

// listCount lists dir once (open, getdents64 to the end, close) and returns
// how many names it holds, "." and ".." left out.
func listCount(dir string, buf []byte) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	got := 0
	for {
		k, err := unix.Getdents(fd, buf)
		if err != nil {
			return 0, fmt.Errorf("getdents %s: %w", dir, err)
		}
		if k == 0 {
			return got, nil
		}
		for b := buf[:k]; len(b) > 0; {
			reclen := int(b[16]) | int(b[17])<<8
			name := b[19:reclen]
			b = b[reclen:]
			if name[0] == '.' && (name[1] == 0 || name[1] == '.' && name[2] == 0) {
				continue
			}
			got++
		}
	}
}

// runStarts runs starts of p on threads OS threads until d has passed and
// returns how many completed and how long they took (to the end of the
// last one).
func runStarts(p *probeSet, threads int, d time.Duration) (int, time.Duration, error) {
	var stop atomic.Bool
	var wg sync.WaitGroup
	counts := make([]int, threads)
	errs := make([]error, threads)
	begin := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for t := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			buf := make([]byte, 32<<10)
			for !stop.Load() {
				if err := p.start(buf); err != nil {
					errs[t] = err
					stop.Store(true)
					return
				}
				counts[t]++
			}
		}()
	}
	wg.Wait()
	el := time.Since(begin)
	n := 0
	for _, c := range counts {
		n += c
	}
	return n, el, errors.Join(errs...)
}

// copyTree makes in dst (a tmpfs) what src's root holds, one level, as src
// shows it: device nodes with mknod (same type, mode, owner, device number),
// symlinks with their targets, directories with their modes; a directory
// named pts gets a devpts instance and one named shm a tmpfs, as devfsd
// mounts them on its own. It returns the mounts it made (to unmount before
// dst) and the number of names.
func copyTree(src, dst string) ([]string, int, error) {
	ents, err := os.ReadDir(src)
	if err != nil {
		return nil, 0, err
	}
	var subs []string
	for _, e := range ents {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(s, &st); err != nil {
			return subs, 0, err
		}
		perm := st.Mode & 0o7777
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
			if err := unix.Mknod(d, st.Mode, int(st.Rdev)); err != nil {
				return subs, 0, fmt.Errorf("mknod %s: %w", d, err)
			}
		case unix.S_IFLNK:
			t, err := os.Readlink(s)
			if err != nil {
				return subs, 0, err
			}
			if err := os.Symlink(t, d); err != nil {
				return subs, 0, err
			}
		case unix.S_IFDIR:
			if err := unix.Mkdir(d, perm); err != nil {
				return subs, 0, err
			}
			switch e.Name() {
			case "pts":
				if err := unix.Mount("devpts", d, "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,gid=5,mode=620,ptmxmode=666"); err != nil {
					return subs, 0, fmt.Errorf("mount devpts on %s: %w", d, err)
				}
				subs = append(subs, d)
			case "shm":
				if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=%o,size=64m", perm)); err != nil {
					return subs, 0, fmt.Errorf("mount tmpfs on %s: %w", d, err)
				}
				subs = append(subs, d)
			}
		default:
			return subs, 0, fmt.Errorf("%s: a regular file in the mount's root (not made by devfsd's base set)", s)
		}
		if err := unix.Lchown(d, int(st.Uid), int(st.Gid)); err != nil {
			return subs, 0, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && !slices.Contains(subs, d) {
			if err := unix.Chmod(d, perm); err != nil { // mknod and mkdir are subject to the umask
				return subs, 0, err
			}
		}
	}
	return subs, len(ents), nil
}
