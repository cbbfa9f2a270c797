// Command testhelper is the helper daemon the integration tests run in a
// separate process: it attaches to a devfsd control socket with
// control/client and answers every LOOKUP by registering a character
// device 1:3 (mode 0666) under the looked-up name, then done(id) — or,
// with --one-request, in one done that carries the registration. It
// reports what it does on stdout, one line each, for the test to wait on:
//
//	attached PID
//	lookup ID PATH
//	event SEQ KIND PATH ORIGIN
//	overrun MISSED
//	registered PATH
//	refused CODE FIELD                 (--bad-first: the malformed answer's error)
//	dying ID                           (--die-mid-request)
//	selfstat NAME ERRNO MILLISECONDS   (os.Stat from this process)
//	execstat NAME EXIT MILLISECONDS    (stat(1) run as a child)
//	ended ERROR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
)

var (
	out                          sync.Mutex
	oneRequest, badFirst, dieMid bool
	sockPath                     string
)

func say(format string, a ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", a...)
}

func main() {
	sock := flag.String("socket", "", "control socket")
	mnt := flag.String("mount", "", "the mount (for --self-stat)")
	delay := flag.Duration("delay", 0, "wait this long before answering a lookup")
	hang := flag.Bool("hang", false, "never answer lookups")
	selfStat := flag.String("self-stat", "", "after attaching, stat MOUNT/NAME from this process and MOUNT/NAME-exec from a child")
	flag.BoolVar(&oneRequest, "one-request", false, "answer with one done carrying the registration")
	flag.BoolVar(&badFirst, "bad-first", false, "with --one-request: first send a done whose second registration is invalid (and a first, NAME-first, valid)")
	flag.BoolVar(&dieMid, "die-mid-request", false, "answer the first lookup with half a done request, then die (SIGKILL)")
	flag.Parse()
	sockPath = *sock
	if err := os.Chdir("/"); err != nil { // never inside the mount
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c := client.New(*sock)
	ctx := context.Background()
	hs, err := c.AttachHelper(ctx)
	if err != nil {
		say("ended %v", err)
		os.Exit(1)
	}
	say("attached %d", hs.Hello().Pid)
	if *selfStat != "" {
		go func() {
			start := time.Now()
			_, err := os.Stat(filepath.Join(*mnt, *selfStat))
			var no syscall.Errno
			errors.As(err, &no)
			say("selfstat %s %d %d", *selfStat, int(no), time.Since(start).Milliseconds())
			start = time.Now()
			cmd := exec.Command("stat", filepath.Join(*mnt, *selfStat+"-exec"))
			err = cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				code = -1
			}
			say("execstat %s %d %d", *selfStat, code, time.Since(start).Milliseconds())
		}()
	}
	for {
		rec, err := hs.Next()
		if err != nil {
			say("ended %v", err)
			os.Exit(0)
		}
		switch rec.Type {
		case "lookup":
			say("lookup %d %s", rec.ID, rec.Path)
			if *hang {
				continue
			}
			go answer(ctx, c, hs, rec, *delay)
		case "event":
			say("event %d %s %s %s", rec.Seq, rec.Kind, rec.Path, rec.Origin)
		case "overrun":
			say("overrun %d", rec.Missed)
		}
	}
}

func answer(ctx context.Context, c *client.Client, hs *client.HelperStream, rec wire.Record, delay time.Duration) {
	if delay > 0 {
		time.Sleep(delay) // the behaviour under test: a slow helper
	}
	if dieMid {
		dieMidRequest(rec)
	}
	major, minor := int64(1), int64(3)
	reg := wire.RegisterRequest{Path: rec.Path, Type: "char", Mode: "0666", Major: &major, Minor: &minor}
	if oneRequest {
		if badFirst {
			bigMajor := int64(5000)
			first := reg
			first.Path = rec.Path + "-first"
			bad := reg
			bad.Path, bad.Major = rec.Path+"-bad", &bigMajor
			_, err := hs.Answer(ctx, wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{first, bad}})
			var ce *client.Error
			if !errors.As(err, &ce) {
				say("refused-not %d %v", rec.ID, err)
				return
			}
			say("refused %s %s", ce.Code, ce.Field)
		}
		ans, err := hs.Answer(ctx, wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{reg}, ExistOK: true})
		if err != nil {
			say("done-failed %d %v", rec.ID, err)
			return
		}
		for _, n := range ans.Registered {
			say("registered %s", n.Path)
		}
		return
	}
	_, err := c.Register(ctx, reg)
	msg := ""
	if err != nil && client.Code(err) != wire.CodeExists {
		msg = err.Error()
	} else {
		say("registered %s", rec.Path)
	}
	if err := hs.Done(ctx, rec.ID, msg); err != nil && !strings.Contains(err.Error(), "unknown_lookup") {
		say("done-failed %d %v", rec.ID, err)
	}
}

// dieMidRequest sends the head and half the body of a done that would
// register rec's name, and kills this process before the rest.
func dieMidRequest(rec wire.Record) {
	conn, err := net.Dial("unix", sockPath)
	if err != nil {
		say("dial-failed %v", err)
		return
	}
	body := fmt.Sprintf(`{"id":%d,"register":[{"path":%q,"type":"char","major":1,"minor":3}]}`, rec.ID, rec.Path)
	half := body[:len(body)/2]
	fmt.Fprintf(conn, "POST /v1/helper/done HTTP/1.1\r\nHost: devfsd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), half)
	say("dying %d", rec.ID)
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never returns
}
