package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
)

const ctlUsage = `usage: devfsd ctl [--socket PATH | --mount DIR] COMMAND [ARGS]

The client of a running devfsd's control socket (docs/api.md).

  ls [-R] [--json] [PATH]           list a directory (the root by default)
  stat [--json] PATH                one node
  register [--mode M] [--uid U] [--gid G] PATH TYPE [ARGS]
                                    TYPE ARGS: char|block MAJOR MINOR,
                                    symlink TARGET, dir, fifo, socket
  unregister PATH                   remove a node (a directory with its contents)
  chmod MODE PATH                   set permission bits (octal)
  chown [UID][:GID] PATH            set owner and/or group (numbers)
  monitor [--json] [--buffer N]     print events as they happen, until SIGINT/SIGTERM
  wait [--timeout T] PATH           return once PATH exists; fail after T (default 5s)
  stats [--json]                    the daemon's counters
  reload [--json]                   reload the configuration (as SIGHUP does)
  upgrade [--binary PATH] [--json]  replace the daemon by a new process of PATH
                                    (default: the running binary) serving the
                                    same mounts, without unmounting (root only)
  info [--json] PATH                the kernel device at PATH: its uevent
                                    variables as KEY=VALUE lines (devices: kernel)
  trigger [--json]                  rescan the kernel's devices (devices: kernel)
  view ls [--json]                  the daemon's mounts: the main one and its views
  view add FILE                     mount one more view, described by a view file
  view add --mountpoint DIR [--allow GLOB]... [--deny GLOB]...
                                    the same, from flags (no overrides)
  view rm MOUNTPOINT                unmount a view (root only, as add)

PATH is relative to the mount's root; a leading / is ignored.

Socket: --socket PATH, else $DEVFSD_SOCKET, else the default socket of
--mount DIR, else that of the mount on /dev (/run/devfsd/dev.sock).

Exit status:
  0  success
  1  any other failure (an invalid request, an internal error)
  2  usage error (bad command line)
  3  not found (no such node)
  4  exists (register of a name that is taken)
  5  permission denied (only root or control_uid/control_gid may change)
  6  timeout (wait: the name did not appear in time)
  7  the daemon cannot be reached (no socket, nothing answers)
  8  not supported
Errors are printed to stderr as "devfsd: ctl: CODE: message", CODE being
the daemon's stable error code (docs/api.md).
`

// Exit statuses of devfsd ctl.
const (
	ctlExitOther        = 1
	ctlExitNotFound     = 3
	ctlExitExists       = 4
	ctlExitPermission   = 5
	ctlExitTimeout      = 6
	ctlExitUnreachable  = 7
	ctlExitNotSupported = 8
)

// exitError carries an exit status other than 1 and 2.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// ctlErr turns a client error into an exit status.
func ctlErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, client.ErrUnreachable) {
		return exitError{ctlExitUnreachable, fmt.Errorf("ctl: unreachable: %w", err)}
	}
	code := ctlExitOther
	switch client.Code(err) {
	case wire.CodeNotFound:
		code = ctlExitNotFound
	case wire.CodeExists:
		code = ctlExitExists
	case wire.CodePermission, wire.CodeNotHelper:
		code = ctlExitPermission
	case wire.CodeTimeout:
		code = ctlExitTimeout
	case wire.CodeNotSupported:
		code = ctlExitNotSupported
	}
	return exitError{code, fmt.Errorf("ctl: %w", err)}
}

func ctlUsageErr(format string, a ...any) error {
	return usageError{fmt.Errorf("ctl: "+format+" (devfsd ctl -h for help)", a...)}
}

// ctlPath turns a command-line path into an API path.
func ctlPath(p string) string { return strings.Trim(p, "/") }

// runCtl is `devfsd ctl`.
// ctlArgs parses a ctl command's flags and returns its positional
// arguments, between min and max of them; what names the command in the
// error.
func ctlArgs(sub *flag.FlagSet, args []string, min, max int, what string) ([]string, error) {
	pos, err := parseInterspersed(sub, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if len(pos) < min || len(pos) > max {
		return nil, ctlUsageErr("%s: wrong number of arguments", what)
	}
	return pos, nil
}

func runCtl(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devfsd ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	sock := fs.String("socket", "", "control socket `path`")
	mnt := fs.String("mount", "", "use the default socket of the mount on `DIR`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	path := *sock
	switch {
	case path != "":
	case os.Getenv("DEVFSD_SOCKET") != "":
		path = os.Getenv("DEVFSD_SOCKET")
	case *mnt != "":
		path = config.ClientSocket(*mnt)
	default:
		path = config.ClientSocket("/dev")
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, ctlUsage)
		return usageError{errors.New("ctl: no command given")}
	}
	c := client.New(path)
	defer c.Close()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := flag.NewFlagSet("devfsd ctl "+cmd, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	asJSON := func() *bool { return sub.Bool("json", false, "print JSON") }
	parse := func(min, max int) ([]string, error) { return ctlArgs(sub, rest, min, max, cmd) }
	err := func() error {
		switch cmd {
		case "ls":
			rec := sub.Bool("R", false, "recursive")
			js := asJSON()
			pos, err := parse(0, 1)
			if err != nil {
				return err
			}
			p := ""
			if len(pos) == 1 {
				p = ctlPath(pos[0])
			}
			l, err := c.List(ctx, p, *rec)
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, l)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 1, ' ', 0)
			for _, n := range l.Nodes {
				fmt.Fprintln(tw, nodeLine(n))
			}
			return tw.Flush()
		case "stat":
			js := asJSON()
			pos, err := parse(1, 1)
			if err != nil {
				return err
			}
			n, err := c.Stat(ctx, ctlPath(pos[0]))
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, n)
			}
			fmt.Fprintln(stdout, nodeLine(n))
			return nil
		case "register":
			mode := sub.String("mode", "", "permission bits, octal (default 0600 devices, 0755 dirs)")
			uid := sub.Int64("uid", 0, "owner")
			gid := sub.Int64("gid", 0, "group")
			pos, err := parse(2, 4)
			if err != nil {
				return err
			}
			req := wire.RegisterRequest{Path: ctlPath(pos[0]), Type: pos[1], Mode: *mode, Uid: uid, Gid: gid}
			switch pos[1] {
			case "char", "block":
				if len(pos) != 4 {
					return ctlUsageErr("register PATH %s MAJOR MINOR", pos[1])
				}
				maj, err1 := strconv.ParseInt(pos[2], 10, 64)
				min, err2 := strconv.ParseInt(pos[3], 10, 64)
				if err1 != nil || err2 != nil {
					return ctlUsageErr("register: MAJOR and MINOR are numbers")
				}
				req.Major, req.Minor = &maj, &min
			case "symlink":
				if len(pos) != 3 {
					return ctlUsageErr("register PATH symlink TARGET")
				}
				req.Target = &pos[2]
			default:
				if len(pos) != 2 {
					return ctlUsageErr("register PATH %s takes no more arguments", pos[1])
				}
			}
			n, err := c.Register(ctx, req)
			if err != nil {
				return ctlErr(err)
			}
			fmt.Fprintln(stdout, nodeLine(n))
			return nil
		case "unregister":
			pos, err := parse(1, 1)
			if err != nil {
				return err
			}
			return ctlErr(c.Unregister(ctx, ctlPath(pos[0])))
		case "chmod":
			pos, err := parse(2, 2)
			if err != nil {
				return err
			}
			n, err := c.Chmod(ctx, ctlPath(pos[1]), pos[0])
			if err != nil {
				return ctlErr(err)
			}
			fmt.Fprintln(stdout, nodeLine(n))
			return nil
		case "chown":
			pos, err := parse(2, 2)
			if err != nil {
				return err
			}
			u, g, _ := strings.Cut(pos[0], ":")
			var uid, gid *int64
			for _, x := range []struct {
				s string
				p **int64
			}{{u, &uid}, {g, &gid}} {
				if x.s == "" {
					continue
				}
				id, err := config.ParseID(x.s)
				if err != nil {
					return ctlUsageErr("chown: %v", err)
				}
				v := int64(id)
				*x.p = &v
			}
			n, err := c.Chown(ctx, ctlPath(pos[1]), uid, gid)
			if err != nil {
				return ctlErr(err)
			}
			fmt.Fprintln(stdout, nodeLine(n))
			return nil
		case "monitor":
			js := asJSON()
			buf := sub.Int("buffer", 0, "events the daemon buffers for this monitor (0: its default)")
			if _, err := parse(0, 0); err != nil {
				return err
			}
			return monitor(ctx, c, *buf, *js, stdout)
		case "wait":
			timeout := sub.Duration("timeout", 5*time.Second, "how long to wait")
			pos, err := parse(1, 1)
			if err != nil {
				return err
			}
			if *timeout <= 0 {
				return ctlUsageErr("wait: --timeout must be positive")
			}
			w, err := c.Wait(ctx, ctlPath(pos[0]), *timeout)
			if err != nil {
				return ctlErr(err)
			}
			fmt.Fprintln(stdout, nodeLine(w.Node))
			return nil
		case "stats":
			js := asJSON()
			if _, err := parse(0, 0); err != nil {
				return err
			}
			st, err := c.Stats(ctx)
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, st)
			}
			printStats(stdout, st)
			return nil
		case "reload":
			js := asJSON()
			if _, err := parse(0, 0); err != nil {
				return err
			}
			res, err := c.Reload(ctx)
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, res)
			}
			if len(res.Changed) == 0 {
				fmt.Fprintln(stdout, "reloaded: nothing changed")
			} else {
				fmt.Fprintf(stdout, "reloaded: changed %s; %d cached misses invalidated\n",
					strings.Join(res.Changed, ", "), res.Invalidated)
			}
			return nil
		case "upgrade":
			js := asJSON()
			bin := sub.String("binary", "", "the binary of the new process (absolute path; default: the running one)")
			if _, err := parse(0, 0); err != nil {
				return err
			}
			res, err := c.Upgrade(ctx, *bin)
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, res)
			}
			fmt.Fprintf(stdout, "upgraded: pid %d serves %d mounts (was pid %d); paused %.1f ms\n",
				res.NewPid, res.Mounts, res.OldPid, res.PauseMs)
			return nil
		case "info":
			js := asJSON()
			pos, err := parse(1, 1)
			if err != nil {
				return err
			}
			i, err := c.Info(ctx, ctlPath(pos[0]))
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, i)
			}
			printInfo(stdout, i)
			return nil
		case "trigger":
			js := asJSON()
			if _, err := parse(0, 0); err != nil {
				return err
			}
			t, err := c.Trigger(ctx)
			if err != nil {
				return ctlErr(err)
			}
			if *js {
				return printJSON(stdout, t)
			}
			fmt.Fprintf(stdout, "rescanned: %d devices, %d nodes registered\n", t.Devices, t.Registered)
			return nil
		case "view":
			return ctlView(ctx, c, rest, stdout, stderr)
		case "help":
			fmt.Fprint(stdout, ctlUsage)
			return nil
		}
		fmt.Fprint(stderr, ctlUsage)
		return usageError{fmt.Errorf("ctl: unknown command %q", cmd)}
	}()
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	var x exitError
	if errors.As(err, &x) && x.code == ctlExitUnreachable {
		if perr := socketPermission(path); perr != nil {
			return exitError{ctlExitPermission, perr}
		}
	}
	return err
}

// socketPermission says why the socket at path refuses this user, if
// that is what keeps the daemon unreachable: the socket's mode and owner,
// and what to change.
func socketPermission(path string) error {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return nil
	}
	if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EPERM) {
		return nil
	}
	what := path
	if fi, serr := os.Stat(path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			what = fmt.Sprintf("%s (mode %04o, owner %d:%d)", path, fi.Mode().Perm(), st.Uid, st.Gid)
		}
	}
	return fmt.Errorf("ctl: permission denied: uid %d may not connect to %s: run as root, or have the daemon "+
		"started with --socket-mode 0660 --control-gid GID (socket_mode, control_gid), GID a group of yours",
		os.Geteuid(), what)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nodeLine renders a node as ls -l says it, path last.
func nodeLine(n wire.Node) string {
	p := n.Path
	if p == "" {
		p = "/"
	}
	switch n.Type {
	case "char", "block":
		return fmt.Sprintf("%s\t%s\t%d:%d\t%d:%d\t%s", n.Type, n.Mode, n.Uid, n.Gid, n.Major, n.Minor, p)
	case "symlink":
		return fmt.Sprintf("%s\t%s\t%d:%d\t-\t%s -> %s", n.Type, n.Mode, n.Uid, n.Gid, p, n.Target)
	}
	return fmt.Sprintf("%s\t%s\t%d:%d\t-\t%s", n.Type, n.Mode, n.Uid, n.Gid, p)
}

// monitor prints the event stream until ctx ends or the daemon ends it.
func monitor(ctx context.Context, c *client.Client, buffer int, asJSON bool, w io.Writer) error {
	st, err := c.Events(ctx, buffer)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return ctlErr(err)
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Close() })
	defer stop()
	if !asJSON {
		fmt.Fprintln(w, "monitor: printing events (SEQ KIND PATH ...); Ctrl-C to stop")
	}
	for {
		rec, err := st.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return exitError{ctlExitOther, fmt.Errorf("ctl: monitor: the stream ended: %v", err)}
		}
		if asJSON {
			if _, err := fmt.Fprintf(w, "%s\n", st.Raw()); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintln(w, eventLine(rec)); err != nil {
			return err
		}
	}
}

// eventLine renders an event record for people, like udevadm monitor.
func eventLine(r wire.Record) string {
	switch r.Type {
	case "overrun":
		return fmt.Sprintf("-- OVERRUN: missed %d events (seq %d..%d)", r.Missed, r.FirstSeq, r.LastSeq)
	case "event":
	default:
		return fmt.Sprintf("-- %s", r.Type)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-6d %-10s %s", r.Seq, r.Kind, r.Path)
	if r.Kind != "LOOKUP" {
		fmt.Fprintf(&b, " %s %s %d:%d", r.NodeType, r.Mode, r.Uid, r.Gid)
		if r.NodeType == "char" || r.NodeType == "block" {
			fmt.Fprintf(&b, " dev=%d:%d", r.Major, r.Minor)
		}
	}
	fmt.Fprintf(&b, " (%s", r.Origin)
	if r.Pid != 0 {
		fmt.Fprintf(&b, " pid %d", r.Pid)
	}
	b.WriteString(")")
	return b.String()
}

func printStats(w io.Writer, s wire.Stats) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "nodes\t%d / %d\n", s.Nodes, s.MaxNodes)
	fmt.Fprintf(tw, "bytes\t%d / %d\n", s.Bytes, s.MaxBytes)
	fmt.Fprintf(tw, "events\tlast seq %d, %d subscribers, %d delivered, %d missed\n",
		s.Events.LastSeq, s.Events.Subscribers, s.Events.Delivered, s.Events.Missed)
	if s.Helper.Attached {
		fmt.Fprintf(tw, "helper\tattached, pid %d\n", s.Helper.Pid)
	} else {
		fmt.Fprintf(tw, "helper\tnot attached (fallback loader: %s)\n", s.Fallback)
	}
	fmt.Fprintf(tw, "helper lookups\t%d sent, %d answered, %d timed out, %d aborted, %d refused; %d sessions\n",
		s.Helper.Sent, s.Helper.Answered, s.Helper.TimedOut, s.Helper.Aborted, s.Helper.Refused, s.Helper.Sessions)
	keys := make([]string, 0, len(s.Extra))
	for k := range s.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\n", k, s.Extra[k])
	}
	tw.Flush()
}

// printInfo prints a kernel device as KEY=VALUE lines: SUBSYSTEM, DEVPATH
// and DRIVER (if bound) first, then every other uevent variable sorted.
func printInfo(w io.Writer, i wire.DeviceInfo) {
	fmt.Fprintf(w, "SUBSYSTEM=%s\nDEVPATH=%s\n", i.Subsystem, i.DevPath)
	if i.Driver != "" {
		fmt.Fprintf(w, "DRIVER=%s\n", i.Driver)
	}
	keys := make([]string, 0, len(i.Env))
	for k := range i.Env {
		switch k {
		case "SUBSYSTEM", "DEVPATH", "DRIVER":
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s=%s\n", k, i.Env[k])
	}
}
