// Command testhelper is the helper daemon the integration tests run in a
// separate process: it attaches to a devfsd control socket with
// control/client and answers every LOOKUP by registering a character
// device 1:3 (mode 0666) under the looked-up name, then done(id). It
// reports what it does on stdout, one line each, for the test to wait on:
//
//	attached PID
//	lookup ID PATH
//	event SEQ KIND PATH ORIGIN
//	overrun MISSED
//	registered PATH
//	selfstat NAME ERRNO MILLISECONDS   (os.Stat from this process)
//	execstat NAME EXIT MILLISECONDS    (stat(1) run as a child)
//	ended ERROR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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

var out sync.Mutex

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
	flag.Parse()
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
	major, minor := int64(1), int64(3)
	_, err := c.Register(ctx, wire.RegisterRequest{Path: rec.Path, Type: "char", Mode: "0666", Major: &major, Minor: &minor})
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
