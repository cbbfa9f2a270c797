//go:build devfsd_testhooks

package daemon

// Test-only hooks, built only with the build tag devfsd_testhooks (the
// test harness passes it; testhooks_off.go is the production build). They exist so that test/integration can drive the
// daemon, a separate process, into states a user cannot reach through the
// control socket: a slow loader, and registrations made outside FUSE by a
// signal, with no socket client in the way. They are switched on only by these
// environment variables, are logged at warn level when on, and are not
// part of the configuration or of the documented interface:
//
//	DEVFSD_TEST_LOADER_DELAY=DURATION
//	    every load waits DURATION before the built-in loader runs (the
//	    wait ends early when the load's deadline passes).
//	DEVFSD_TEST_HOOK_FILE=PATH
//	    on SIGUSR2 the daemon reads PATH, one command a line:
//	        register char|block PATH MAJOR MINOR [MODE]
//	        register dir PATH [MODE]
//	        register symlink PATH TARGET
//	        unregister PATH
//	    applies them in order through dcache.Namespace.Register and
//	    Unregister (Origin builtin, as the loader's registrations are),
//	    waits until the kernel has been sent the resulting notifies (as a
//	    control API would before answering), and then writes PATH.done
//	    atomically: the number of SIGUSR2s handled so
//	    far on the first line, then one line per command, "ok" or the error.
//	DEVFSD_TEST_POPULATE=DIR=N[,DIR=N...]
//	    before mounting, registers in each top-level DIR N empty regular
//	    files (mode 0644, root's) named f0000000, f0000001, ... (the names
//	    of test/harness.PopulateName and test/bench/barefs), so that a
//	    benchmark starts from a tree the kernel has never seen, as barefs
//	    builds its tree before mounting.
//	DEVFSD_TEST_DIE_AFTER_RESERVE=PATH
//	    if PATH exists once the daemon has written its id ceiling to the
//	    kept memfd (the first step of Run, before a kept mount is served
//	    again), the daemon removes PATH and kills itself (SIGKILL): a
//	    crash at the earliest moment a store can see.
//	DEVFSD_TEST_NO_RESEND=1
//	    the main mount is made without asking the kernel for HAS_RESEND
//	    (fs.Options.NoResend), so that a successor serves it as on a
//	    kernel before 6.9. It must be set for every start of a kept
//	    mount alike (a keeper passes its environment on).
//	DEVFSD_TEST_PPROF=HOST:PORT
//	    serves net/http/pprof's handlers on that TCP address (its own
//	    mux: nothing is added to the control socket or --metrics-addr),
//	    for profiling the daemon under a benchmark.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

type testHooks struct {
	loaderDelay time.Duration
	hookFile    string
	populate    []populateDir
	pprofAddr   string
	dieFlag     string
	noResendOn  bool
}

type populateDir struct {
	dir string
	n   int
}

func testHooksFromEnv() (testHooks, error) {
	var h testHooks
	if v := os.Getenv("DEVFSD_TEST_LOADER_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return h, config.Error{Err: fmt.Errorf("DEVFSD_TEST_LOADER_DELAY=%q: not a duration", v)}
		}
		h.loaderDelay = d
	}
	h.hookFile = os.Getenv("DEVFSD_TEST_HOOK_FILE")
	if v := os.Getenv("DEVFSD_TEST_POPULATE"); v != "" {
		for _, f := range strings.Split(v, ",") {
			dir, num, ok := strings.Cut(f, "=")
			n, err := strconv.Atoi(num)
			if !ok || err != nil || n < 0 || dir == "" || strings.Contains(dir, "/") {
				return h, config.Error{Err: fmt.Errorf("DEVFSD_TEST_POPULATE=%q: want DIR=N,...", v)}
			}
			h.populate = append(h.populate, populateDir{dir, n})
		}
	}
	h.pprofAddr = os.Getenv("DEVFSD_TEST_PPROF")
	h.dieFlag = os.Getenv("DEVFSD_TEST_DIE_AFTER_RESERVE")
	h.noResendOn = os.Getenv("DEVFSD_TEST_NO_RESEND") == "1"
	return h, nil
}

// noResend is DEVFSD_TEST_NO_RESEND.
func (h testHooks) noResend() bool { return h.noResendOn }

// afterReserve is DEVFSD_TEST_DIE_AFTER_RESERVE's crash; Run calls it
// right after the id ceiling is kept.
func (h testHooks) afterReserve(log *zap.Logger) {
	if h.dieFlag == "" {
		return
	}
	if err := os.Remove(h.dieFlag); err != nil {
		return // no flag: this start lives
	}
	log.Warn("test hook: killed right after the id ceiling was kept (DEVFSD_TEST_DIE_AFTER_RESERVE)")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL is not delivered synchronously to this thread
}

// populateTree registers DEVFSD_TEST_POPULATE's files; New calls it
// before mounting.
func (h testHooks) populateTree(ns *dcache.Namespace, log *zap.Logger) error {
	if len(h.populate) == 0 {
		return nil
	}
	c := dcache.Caller{Origin: dcache.OriginBuiltin}
	total := 0
	for _, p := range h.populate {
		if _, err := ns.Register(p.dir, dcache.Spec{Type: dcache.TypeDir, Mode: 0o755}, c); err != nil {
			return fmt.Errorf("DEVFSD_TEST_POPULATE: %w", err)
		}
		for i := 0; i < p.n; i++ {
			if _, err := ns.Register(fmt.Sprintf("%s/f%07d", p.dir, i), dcache.Spec{Type: dcache.TypeRegular, Mode: 0o644}, c); err != nil {
				return fmt.Errorf("DEVFSD_TEST_POPULATE: %w", err)
			}
		}
		total += p.n
	}
	log.Warn("TEST HOOK: populated before mounting", zap.Int("files", total))
	return nil
}

// startPprof serves pprof on DEVFSD_TEST_PPROF's address, if set.
func (h testHooks) startPprof(log *zap.Logger) (stop func(), err error) {
	if h.pprofAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", h.pprofAddr)
	if err != nil {
		return nil, fmt.Errorf("DEVFSD_TEST_PPROF: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Warn("TEST HOOK: pprof served", zap.String("addr", ln.Addr().String()))
	return func() { srv.Close() }, nil
}

// wrapLoader delays every load of l when DEVFSD_TEST_LOADER_DELAY is set.
func (h testHooks) wrapLoader(l modload.Loader, log *zap.Logger) modload.Loader {
	if h.loaderDelay <= 0 {
		return l
	}
	log.Warn("TEST HOOK: every load is delayed", zap.Duration("delay", h.loaderDelay))
	return delayedLoader{l, h.loaderDelay}
}

// delayedLoader delays every load (DEVFSD_TEST_LOADER_DELAY).
type delayedLoader struct {
	l     modload.Loader
	delay time.Duration
}

func (d delayedLoader) Load(ctx context.Context, dir, name string, c dcache.Caller) error {
	t := time.NewTimer(d.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.l.Load(ctx, dir, name, c)
}

// start installs the SIGUSR2 hook if DEVFSD_TEST_HOOK_FILE is set and
// returns its stop function.
func (h testHooks) start(ns *dcache.Namespace, syncNotifies func(context.Context) error, log *zap.Logger) func() {
	if h.hookFile == "" {
		return func() {}
	}
	log.Warn("TEST HOOK: SIGUSR2 applies the commands of a file", zap.String("file", h.hookFile))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		n := 0
		for {
			select {
			case <-sigs:
			case <-done:
				return
			}
			n++
			var out bytes.Buffer
			fmt.Fprintf(&out, "%d\n", n)
			results := runHookFile(ns, h.hookFile)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := syncNotifies(ctx); err != nil {
				log.Error("test hook: notifies not sent", zap.Error(err))
			}
			cancel()
			for _, r := range results {
				fmt.Fprintln(&out, r)
			}
			tmp := h.hookFile + ".done.tmp"
			if err := os.WriteFile(tmp, out.Bytes(), 0o644); err == nil {
				err = os.Rename(tmp, h.hookFile+".done")
				if err != nil {
					log.Error("test hook: writing the result", zap.Error(err))
				}
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

func runHookFile(ns *dcache.Namespace, path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{"error: " + err.Error()}
	}
	var res []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	builtinCaller := dcache.Caller{Origin: dcache.OriginBuiltin}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		err := func() error {
			switch {
			case f[0] == "unregister" && len(f) == 2:
				return ns.Unregister(f[1], builtinCaller)
			case f[0] == "register" && len(f) >= 3:
				spec := dcache.Spec{Mode: 0o644}
				var perr error
				num := func(s string) uint32 {
					v, e := strconv.ParseUint(s, 10, 32)
					if e != nil && perr == nil {
						perr = e
					}
					return uint32(v)
				}
				mode := func(s string) uint32 {
					m, e := config.ParseMode(s)
					if e != nil && perr == nil {
						perr = e
					}
					return uint32(m)
				}
				switch f[1] {
				case "char", "block":
					if len(f) < 5 {
						return fmt.Errorf("want register %s PATH MAJOR MINOR [MODE]", f[1])
					}
					spec.Type = dcache.TypeChar
					if f[1] == "block" {
						spec.Type = dcache.TypeBlock
					}
					spec.Major, spec.Minor = num(f[3]), num(f[4])
					if len(f) > 5 {
						spec.Mode = mode(f[5])
					}
				case "dir":
					spec.Type, spec.Mode = dcache.TypeDir, 0o755
					if len(f) > 3 {
						spec.Mode = mode(f[3])
					}
				case "symlink":
					if len(f) != 4 {
						return fmt.Errorf("want register symlink PATH TARGET")
					}
					spec.Type, spec.Mode, spec.Target = dcache.TypeSymlink, 0o777, f[3]
				default:
					return fmt.Errorf("unknown type %q", f[1])
				}
				if perr != nil {
					return perr
				}
				_, rerr := ns.Register(f[2], spec, builtinCaller)
				return rerr
			}
			return fmt.Errorf("bad command %q", sc.Text())
		}()
		if err != nil {
			res = append(res, "error: "+err.Error())
		} else {
			res = append(res, "ok")
		}
	}
	return res
}
