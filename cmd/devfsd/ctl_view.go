package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/daemon"
)

// patternList is a repeatable flag of patterns.
type patternList []string

func (p *patternList) String() string { return strings.Join(*p, ",") }

// Set implements flag.Value.
func (p *patternList) Set(s string) error { *p = append(*p, s); return nil }

// ctlView is `devfsd ctl view ls|add|rm`.
func ctlView(ctx context.Context, c *client.Client, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return ctlUsageErr("view: ls, add or rm")
	}
	sub := flag.NewFlagSet("devfsd ctl view "+args[0], flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	parse := func(min, max int) ([]string, error) { return ctlArgs(sub, args[1:], min, max, "view "+args[0]) }
	switch args[0] {
	case "ls":
		js := sub.Bool("json", false, "print JSON")
		if _, err := parse(0, 0); err != nil {
			return err
		}
		vs, err := c.Views(ctx)
		if err != nil {
			return ctlErr(err)
		}
		if *js {
			return printJSON(stdout, wire.Views{Views: vs})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 1, ' ', 0)
		for _, v := range vs {
			fmt.Fprintln(tw, viewLine(v))
		}
		return tw.Flush()
	case "add":
		mp := sub.String("mountpoint", "", "where to mount the view (instead of FILE)")
		var allow, deny patternList
		sub.Var(&allow, "allow", "a `glob` the view shows (repeatable; none: everything)")
		sub.Var(&deny, "deny", "a `glob` the view hides (repeatable)")
		pos, err := parse(0, 1)
		if err != nil {
			return err
		}
		var v wire.View
		switch {
		case len(pos) == 1 && (*mp != "" || len(allow) > 0 || len(deny) > 0):
			return ctlUsageErr("view add: FILE or --mountpoint with --allow/--deny, not both")
		case len(pos) == 1:
			cv, err := config.ReadView(pos[0])
			if err != nil {
				return exitError{ctlExitOther, fmt.Errorf("ctl: %w", err)}
			}
			v = daemon.WireView(cv)
		case *mp == "":
			return ctlUsageErr("view add: give a view FILE or --mountpoint DIR")
		default:
			v = wire.View{Mountpoint: *mp, Allow: allow, Deny: deny}
			if abs, err := filepath.Abs(v.Mountpoint); err == nil {
				v.Mountpoint = abs // the daemon's cwd is not ours; a file's must be absolute
			}
		}
		info, err := c.AddView(ctx, v)
		if err != nil {
			return ctlErr(err)
		}
		fmt.Fprintln(stdout, viewLine(info))
		return nil
	case "rm":
		pos, err := parse(1, 1)
		if err != nil {
			return err
		}
		mp := pos[0]
		if abs, err := filepath.Abs(mp); err == nil {
			mp = abs
		}
		return ctlErr(c.RemoveView(ctx, mp))
	}
	return ctlUsageErr("view: unknown command %q (ls, add, rm)", args[0])
}

// viewLine renders a mount for `view ls`.
func viewLine(v wire.ViewInfo) string {
	what := "view"
	if v.Main {
		what = "main"
	}
	rules := "everything"
	if len(v.Allow) > 0 {
		rules = "allow " + strings.Join(v.Allow, ",")
	}
	if len(v.Deny) > 0 {
		rules += " deny " + strings.Join(v.Deny, ",")
	}
	if len(v.Overrides) > 0 {
		rules += fmt.Sprintf(" (%d overrides)", len(v.Overrides))
	}
	return fmt.Sprintf("%s\t%s\t%s\tknown %d, live %d, notifies %d sent %d dropped",
		what, v.Mountpoint, rules, v.KnownNodes, v.LiveRequests, v.NotifySent, v.NotifyDropped)
}
