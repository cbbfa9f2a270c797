// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestOneRequestWakesOneWaitingReader: with several readers waiting for
// requests, a request wakes one of them, not all (readwait_linux.go).
// poll(2) wakes every poller for each request; those that find it taken
// sleep again inside the kernel, unseen by the server but each a thread
// switched in and out. So the test counts the context switches of the
// threads that wait (waiters.trace) over requests that come one at a
// time from another process, each once every reader waits, in rounds
// that alternate the readers' waits between the server's epoll instances
// and poll(2) (waiters.polling), and wants the first to cost clearly
// fewer.
func TestOneRequestWakesOneWaitingReader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2)")
	}
	// Room for eight readers (maxReaders follows GOMAXPROCS).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	mnt := t.TempDir()
	fs := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 10, block: make(chan struct{})}
	close(fs.block)
	srv, err := NewServer(fs, mnt, &MountOptions{DirectMount: true, DirectMountStrict: true})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(); close(served) }()
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH); <-served })
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	r := srv.fuseFD
	readers := func() int {
		r.reqMu.Lock()
		defer r.reqMu.Unlock()
		return r.reqReaders
	}
	until := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s", what)
			}
		}
	}
	grown := 0
	grow := func() { // concurrent misses until at least four readers wait
		until("four readers", func() bool {
			var wg sync.WaitGroup
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func(name string) {
					defer wg.Done()
					var st syscall.Stat_t
					syscall.Lstat(name, &st)
				}(filepath.Join(mnt, fmt.Sprintf("grow-%d-%d", grown, i)))
			}
			wg.Wait()
			grown++
			return readers() >= 4
		})
	}
	// A shell's test -e: a stat(2) each, no fork, one per line read.
	sh := exec.Command("sh", "-c", `while read -r i; do [ -e "$1/miss-$i" ] && exit 1; echo "$i"; done`, "sh", mnt)
	in, _ := sh.StdinPipe()
	outp, _ := sh.StdoutPipe()
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); sh.Wait() })
	out := bufio.NewReader(outp)
	r.waiters.trace.Store(true)
	const rounds, perRound = 6, 15
	var switches, requests [2]int // [0] epoll, [1] poll
	seq := 0
	for round := 0; round < rounds; round++ {
		mode := round % 2
		// Every reader starts its next wait the new way: a stop ends
		// the waits of all, and a restart starts new readers.
		r.waiters.polling.Store(mode == 1)
		if _, err := srv.StopServing(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := srv.RestartServing(); err != nil {
			t.Fatal(err)
		}
		grow()
		for i := 0; i < perRound; i++ {
			var tids []int
			until("every reader waiting", func() bool {
				tids = r.waiters.waitingThreads()
				return int(r.waiting.Load()) == readers() && len(tids) == readers()
			})
			sw := ctxSwitches(t, tids)
			fmt.Fprintf(in, "%d\n", seq)
			if l, err := out.ReadString('\n'); err != nil || l != fmt.Sprintf("%d\n", seq) {
				t.Fatalf("stat %d: %q %v", seq, l, err)
			}
			until("the readers waiting again", func() bool { return int(r.waiting.Load()) == readers() })
			switches[mode] += ctxSwitches(t, tids) - sw
			requests[mode]++
			seq++
		}
	}
	per := func(m int) float64 { return float64(switches[m]) / float64(requests[m]) }
	t.Logf("context switches a request: %.1f with the epoll waits, %.1f with poll(2), %d readers", per(0), per(1), readers())
	if per(0) > 0.6*per(1) {
		t.Fatalf("%.1f context switches a request with the epoll waits, %.1f with poll(2): want clearly fewer (one reader woken a request, not every one)", per(0), per(1))
	}
}

// ctxSwitches sums the voluntary context switches of the threads tids
// of this process.
func ctxSwitches(t *testing.T, tids []int) int {
	sum := 0
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
		if err != nil {
			continue // a thread that ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				sum += n
			}
		}
	}
	return sum
}
