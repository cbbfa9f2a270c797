package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/test/harness"
)

// Item 5: the socket's floors, for scale against item 4. One request
// that changes nothing (GET /v1/stat?path=null, answered with a node's
// JSON) from this process over a kept-alive Unix socket connection to:
//
//	raw       a server process that answers 64 bytes with 300: the
//	          kernel's and the Go runtime's wake-ups alone, no HTTP
//	loop      a server process of one goroutine per connection that
//	          reads each request with http.ReadRequest and writes a
//	          fixed answer: HTTP/1.1 parsed and written, nothing more
//	net/http  a bare net/http server process with a handler writing the
//	          same answer
//	devfsd    the daemon (GET /v1/stat of its null node)
//
// The clients are this repository's control/client (a hand-written
// request and http.ReadResponse on the caller's goroutine), except for
// raw. Samples are interleaved, one of each in an order rotated from
// one to the next.

// floorAnswer is the node every floor server answers.
var floorAnswer = []byte(`{"path":"null","type":"char","mode":"0666","uid":0,"gid":0,"major":1,"minor":3,"ino":2,"nlink":1,"size":0,` +
	`"mtime":"2026-01-01T00:00:00.000000001Z","ctime":"2026-01-01T00:00:00.000000001Z"}` + "\n")

// serveFloor is the probe re-executed as a floor server (-serve-floor).
func serveFloor(kind, path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	switch kind {
	case "net/http":
		return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(floorAnswer)
		}))
	case "raw", "loop":
	default:
		return fmt.Errorf("-serve-floor %q: raw, loop or net/http", kind)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if kind == "raw" {
				in, out := make([]byte, 64), make([]byte, 300)
				for {
					if _, err := io.ReadFull(c, in); err != nil {
						return
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}
			br, bw := bufio.NewReader(c), bufio.NewWriter(c)
			for {
				r, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, r.Body)
				bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ")
				bw.WriteString(strconv.Itoa(len(floorAnswer)))
				bw.WriteString("\r\n\r\n")
				bw.Write(floorAnswer)
				if bw.Flush() != nil {
					return
				}
			}
		}()
	}
}

func socketFloors(w io.Writer) error {
	base, err := harness.Base()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type backend struct {
		label string
		do    func() error
		lat   []float64
	}
	var bs []*backend
	ctx := context.Background()
	for i, kind := range []string{"raw", "loop", "net/http"} {
		path := filepath.Join(base, fmt.Sprintf("floor-%d.sock", i))
		cmd := exec.Command(self, "-serve-floor", kind, "-serve-path", path)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		atExit(func() { cmd.Process.Kill(); cmd.Wait() })
		// Listening, not only bound: the socket file is there before
		// listen(2), and a dial in between is refused.
		if !harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
			c, err := net.Dial("unix", path)
			if err == nil {
				c.Close()
			}
			return err == nil
		}) {
			return fmt.Errorf("the %s floor server did not listen", kind)
		}
		if kind == "raw" {
			c, err := net.Dial("unix", path)
			if err != nil {
				return err
			}
			atExit(func() { c.Close() })
			in, out := make([]byte, 300), make([]byte, 64)
			bs = append(bs, &backend{label: kind, do: func() error {
				if _, err := c.Write(out); err != nil {
					return err
				}
				_, err := io.ReadFull(c, in)
				return err
			}})
			continue
		}
		c := client.New(path)
		atExit(c.Close)
		bs = append(bs, &backend{label: kind, do: func() error { _, err := c.Stat(ctx, "null"); return err }})
	}
	m, err := mountDevfsd("", harness.Options{})
	if err != nil {
		return err
	}
	dc := client.New(m.Dir + ".sock")
	atExit(dc.Close)
	bs = append(bs, &backend{label: "devfsd", do: func() error { _, err := dc.Stat(ctx, "null"); return err }})
	for _, b := range bs { // one each: dial
		if err := b.do(); err != nil {
			return fmt.Errorf("%s: %w", b.label, err)
		}
	}
	for i := 0; i < *regN; i++ {
		for j := range bs {
			b := bs[(i+j)%len(bs)]
			t := time.Now()
			if err := b.do(); err != nil {
				return fmt.Errorf("%s: %w", b.label, err)
			}
			b.lat = append(b.lat, float64(time.Since(t))/float64(time.Microsecond))
		}
	}
	fmt.Fprintf(w, "\n## 5: the socket's floors: one request that changes nothing, over a kept-alive Unix socket connection, interleaved\n\n")
	fmt.Fprintln(w, "| server | samples | p10 µs | p50 µs | p90 µs | max µs |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, b := range bs {
		sort.Float64s(b.lat)
		fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.0f | %.0f |\n", b.label, len(b.lat), q(b.lat, 0.1), q(b.lat, 0.5), q(b.lat, 0.9), b.lat[len(b.lat)-1])
	}
	return nil
}
