// Command barefs serves a bare go-fuse in-memory tree: the baseline that the
// devfsd FUSE server is measured against (issue 4), and a second FUSE
// implementation for the posixtest and differential tests of test/.
//
// The tree is go-fuse's fs.Inode with persistent children
// (NewPersistentInode), so nodes survive the kernel's FORGET. It implements
// mknod, mkdir, symlink, readlink, link, unlink, rmdir, rename (with
// RENAME_NOREPLACE and RENAME_EXCHANGE), setattr (mode, owner, size, times),
// create/open/read/write of small in-memory files, and statfs.
//
// Every FUSE request is counted by opcode in a wrapper around the
// fuse.RawFileSystem (go-fuse's Server.RecordLatencies is a no-op since
// v2.x). The counts are written as JSON to the -stats file on SIGUSR1 and on
// exit; each dump carries a sequence number so a reader can wait for a fresh
// one. FORGET counts forgotten nodes: go-fuse fans a BATCH_FORGET out into one
// Forget call per node. INIT is counted once; INTERRUPT is not seen.
//
// With -raw, barefs is the floor: the cheapest answer go-fuse's raw API
// allows, for comparing CPU per request. Instead of the fs.Inode tree it
// serves a minimal fuse.RawFileSystem (raw.go) that answers LOOKUP and
// GETATTR of the -populate tree (the root, each DIR, its files
// f0000000..) computed from the request, with no locks and no allocation;
// FORGET does nothing, STATFS and ACCESS answer OK, and everything else is
// ENOSYS (no readdir, no changes). The mount options, timeouts, -populate
// and -stats are the same as without -raw, so its server CPU per request on
// the stat cases of fusebench (the harness backend "rawfloor") is the floor
// under any go-fuse raw server: go-fuse's request loop and the kernel alone.
//
// SIGTERM or SIGINT unmounts (lazily if the mount is busy) and exits 0.
//
//	barefs [-entry-timeout 1s] [-attr-timeout 1s] [-negative-timeout 0]
//	       [-readdirplus=true] [-default-permissions=true] [-stats FILE]
//	       [-populate DIR=N,...] [-raw] DIR
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// countingFS counts requests by opcode; see count_ops.go.
type countingFS struct {
	fuse.RawFileSystem
	n [numOps]atomic.Uint64
}

// Stats is the JSON written to the -stats file.
type Stats struct {
	Seq      uint64            `json:"seq"`
	Pid      int               `json:"pid"`
	Requests map[string]uint64 `json:"requests"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "barefs:", err)
		os.Exit(1)
	}
}

// PopulateName is the name of the i-th file made by -populate; the test
// harness uses the same names (harness.PopulateName).
func PopulateName(i int) string { return fmt.Sprintf("f%07d", i) }

func run() error {
	entry := flag.Duration("entry-timeout", time.Second, "kernel entry cache timeout")
	attr := flag.Duration("attr-timeout", time.Second, "kernel attribute cache timeout")
	negative := flag.Duration("negative-timeout", 0, "kernel negative entry cache timeout")
	rdp := flag.Bool("readdirplus", true, "offer READDIRPLUS to the kernel")
	defPerm := flag.Bool("default-permissions", true, "mount with default_permissions (the kernel checks modes), as devfsd does")
	statsPath := flag.String("stats", "", "write request counts (JSON) here on SIGUSR1 and on exit")
	populate := flag.String("populate", "", "DIR=N,...: before mounting, make N empty files f0000000.. in each top-level DIR")
	debug := flag.Bool("debug", false, "log every FUSE request")
	raw := flag.Bool("raw", false, "serve the floor: a minimal raw file system answering only the stat of the -populate tree (see raw.go)")
	flag.Parse()
	if flag.NArg() != 1 {
		return fmt.Errorf("usage: barefs [flags] DIR")
	}
	dir, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		return err
	}
	pop, err := parsePopulate(*populate)
	if err != nil {
		return err
	}

	t := &tree{}
	root := &node{t: t}
	root.attr.Mode = 0755
	root.touchLocked(true, true, true)

	opts := &fs.Options{
		EntryTimeout:    entry,
		AttrTimeout:     attr,
		NullPermissions: true, // mode 0000 stays 0000
		MountOptions: fuse.MountOptions{
			AllowOther:         true,
			FsName:             "barefs",
			Name:               "barefs",
			DirectMount:        true,
			DirectMountStrict:  true, // never fusermount: it would touch our own mount
			DisableReadDirPlus: !*rdp,
			Debug:              *debug,
			Options:            []string{"dev"},
		},
		OnAdd: func(ctx context.Context) {
			for _, p := range pop {
				d := root.newChild(ctx, syscall.S_IFDIR, 0755, 0)
				root.AddChild(p.dir, root.add(ctx, d, syscall.S_IFDIR, &fuse.EntryOut{}), false)
				for i := 0; i < p.n; i++ {
					f := d.newChild(ctx, syscall.S_IFREG, 0644, 0)
					d.AddChild(PopulateName(i), d.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), false)
				}
			}
		},
	}
	if *defPerm {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	if *negative > 0 {
		opts.NegativeTimeout = negative
	}

	// Catch the signals before mounting: a SIGTERM that killed us by
	// default while go-fuse's poll hack holds a file open in our own mount
	// would deadlock our exit (the close waits for a FLUSH reply that only
	// we could send).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)

	var inner fuse.RawFileSystem
	if *raw {
		opts.MountOptions.FsName = "barefs-raw"
		inner = newRawFS(pop, *entry, *attr, *negative)
	} else {
		inner = fs.NewNodeFS(root, opts)
	}
	cfs := &countingFS{RawFileSystem: inner}
	srv, err := fuse.NewServer(cfs, dir, &opts.MountOptions)
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	// NewServer has mounted. Not WaitMount: its "poll hack" opens a file
	// in our own mount, and a SIGKILL while that LOOKUP is in flight
	// leaves the process unkillable (the open waits for a reply that only
	// the dead serve loop could send). barefs never polls its own files,
	// which is all the hack is for.
	go srv.Serve()

	var seq atomic.Uint64
	dump := func() {
		if *statsPath == "" {
			return
		}
		s := Stats{Seq: seq.Add(1), Pid: os.Getpid(), Requests: map[string]uint64{}}
		for i := range cfs.n {
			if v := cfs.n[i].Load(); v > 0 {
				s.Requests[opNames[i]] = v
			}
		}
		if err := writeJSON(*statsPath, &s); err != nil {
			log.Printf("barefs: stats: %v", err)
		}
	}

	served := make(chan struct{})
	go func() {
		srv.Wait()
		close(served)
	}()
	for {
		select {
		case <-served:
			dump()
			return nil
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				dump()
				continue
			}
			// Unmount directly (go-fuse's Unmount falls back to
			// fusermount and waits for the loops, which hangs on
			// a busy mount). A busy mount is detached: the kernel
			// finishes it when its last user goes.
			if err := syscall.Unmount(dir, 0); err != nil {
				log.Printf("barefs: unmount %s: %v; detaching", dir, err)
				if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
					log.Printf("barefs: detach %s: %v", dir, err)
				}
				dump()
				return nil
			}
			// Unmounted: the kernel is done with us; no need to
			// wait for the serve loop to notice.
			dump()
			return nil
		}
	}
}

type populateDir struct {
	dir string
	n   int
}

func parsePopulate(s string) ([]populateDir, error) {
	var r []populateDir
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ",") {
		d, ns, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(ns)
		if !ok || err != nil || n < 0 || d == "" || strings.Contains(d, "/") {
			return nil, fmt.Errorf("bad -populate entry %q: want DIR=N", f)
		}
		r = append(r, populateDir{d, n})
	}
	return r, nil
}

// writeJSON writes v to path atomically (a reader never sees a partial dump).
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
