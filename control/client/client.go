// Package client is the Go client of devfsd's control socket: the control
// API, the event stream and the helper protocol (see docs/api.md). `devfsd
// ctl` is built on it, and so is the reference helper.
//
// A helper attaches with [Client.AttachHelper], reads LOOKUP requests from
// the stream, and answers each with [HelperStream.Answer]: the nodes that
// provide the name and the done in one request. The two-request form
// works too: [Client.Register] (on the same Client or any other made in
// the same process: the daemon knows the helper by its process, from the
// socket's peer credentials), then [HelperStream.Done].
package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/devfsd/devfsd/control/wire"
)

// Client talks to one daemon's socket. Safe for concurrent use: each
// request takes a kept-alive connection of its own (conn.go).
type Client struct {
	path string
	// Connections are kept alive between requests: a helper answers
	// every LOOKUP with a request, concurrently if it likes, and a dial
	// per request would cost the accept and the peer credential each
	// time.
	conns pool
}

// New returns a client of the socket at path. Nothing is dialled yet.
func New(path string) *Client { return &Client{path: path} }

// Close drops idle connections. The client may still be used.
func (c *Client) Close() { c.conns.closeIdle(false) }

// Error is an error answer of the daemon.
type Error struct {
	Status  int    // HTTP status
	Code    string // stable: see package wire
	Message string
	Field   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Field, e.Message)
	}
	return e.Code + ": " + e.Message
}

// Code returns the error code of err if it is an *Error, else "".
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrUnreachable wraps failures to reach the daemon at all.
var ErrUnreachable = errors.New("the daemon cannot be reached")

// target is path with q as its query.
func target(path string, q url.Values) string {
	if len(q) > 0 {
		return path + "?" + q.Encode()
	}
	return path
}

// do sends one request, body (if not nil) as JSON, over one of p's
// connections, and returns the answer. An error answer (status 300 or
// more) is an *Error; a daemon that cannot be reached ErrUnreachable
// wrapped; ctx's end its error.
//
// A kept connection the daemon has closed while it was idle (a restart,
// a shutdown, its idle timeout) is found closed before the request is
// written, and another one used. A request whose connection failed under
// it is sent again, once, on a fresh connection if nothing of it can have
// been acted on: its write failed (the daemon acts on whole requests
// only), or, for a request that changes nothing or may be repeated
// (GET; a helper's done, which once taken is answered unknown_lookup),
// the connection ended before any byte of an answer.
func (c *Client) do(ctx context.Context, p *pool, method, path string, q url.Values, body any) (answer, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = encodeBody(body); err != nil {
			return answer{}, err
		}
	}
	t := target(path, q)
	replay := method == http.MethodGet || path == "/v1/helper/done"
	for fresh := false; ; fresh = true {
		cn, err := p.get(ctx, c.path, fresh)
		if err != nil {
			if ctx.Err() != nil {
				return answer{}, ctx.Err()
			}
			return answer{}, fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
		a, written, unread, err := cn.exchange(ctx, method, t, b, body != nil)
		if err == nil {
			if a.keep {
				p.put(cn)
			} else {
				cn.c.Close()
			}
			if a.status >= 300 {
				return a, errorOf(a.status, a.body)
			}
			return a, nil
		}
		cn.c.Close()
		if ctx.Err() != nil {
			return answer{}, ctx.Err()
		}
		if fresh || cn.fresh || !(!written || replay && unread) {
			return answer{}, fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
	}
}

func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	a, err := c.do(ctx, &c.conns, method, path, q, body)
	if err != nil || out == nil {
		return err
	}
	if n, ok := out.(*wire.Node); ok {
		return decodeNode(a.body, n)
	}
	return json.Unmarshal(a.body, out)
}

// Stat returns the node at path ("" is the root).
func (c *Client) Stat(ctx context.Context, path string) (wire.Node, error) {
	var n wire.Node
	err := c.call(ctx, http.MethodGet, "/v1/stat", url.Values{"path": {path}}, nil, &n)
	return n, err
}

// List returns the nodes in directory path (the node itself if it is not a
// directory), the whole subtree if recursive.
func (c *Client) List(ctx context.Context, path string, recursive bool) (wire.List, error) {
	var l wire.List
	q := url.Values{"path": {path}}
	if recursive {
		q.Set("recursive", "true")
	}
	err := c.call(ctx, http.MethodGet, "/v1/list", q, nil, &l)
	return l, err
}

// Register registers a node.
func (c *Client) Register(ctx context.Context, r wire.RegisterRequest) (wire.Node, error) {
	var n wire.Node
	err := c.call(ctx, http.MethodPost, "/v1/register", nil, r, &n)
	return n, err
}

// Unregister removes the node at path (a directory with its contents).
func (c *Client) Unregister(ctx context.Context, path string) error {
	return c.call(ctx, http.MethodPost, "/v1/unregister", nil, wire.PathRequest{Path: path}, nil)
}

// Chmod sets the permission bits of path; mode is octal ("0660").
func (c *Client) Chmod(ctx context.Context, path, mode string) (wire.Node, error) {
	var n wire.Node
	err := c.call(ctx, http.MethodPost, "/v1/chmod", nil, wire.ChmodRequest{Path: path, Mode: mode}, &n)
	return n, err
}

// Chown sets the owner and/or group of path (nil: unchanged).
func (c *Client) Chown(ctx context.Context, path string, uid, gid *int64) (wire.Node, error) {
	var n wire.Node
	err := c.call(ctx, http.MethodPost, "/v1/chown", nil, wire.ChownRequest{Path: path, Uid: uid, Gid: gid}, &n)
	return n, err
}

// Wait returns once path exists, or fails with code "timeout" after
// timeout.
func (c *Client) Wait(ctx context.Context, path string, timeout time.Duration) (wire.Wait, error) {
	var w wire.Wait
	err := c.call(ctx, http.MethodGet, "/v1/wait", url.Values{"path": {path}, "timeout": {timeout.String()}}, nil, &w)
	return w, err
}

// Stats returns the daemon's counters.
func (c *Client) Stats(ctx context.Context) (wire.Stats, error) {
	var s wire.Stats
	err := c.call(ctx, http.MethodGet, "/v1/stats", nil, nil, &s)
	return s, err
}

// Reload asks the daemon to reload its configuration and returns what
// changed. An invalid configuration is an *Error with code invalid_config
// (nothing changed).
func (c *Client) Reload(ctx context.Context) (wire.Reload, error) {
	var r wire.Reload
	err := c.call(ctx, http.MethodPost, "/v1/reload", nil, struct{}{}, &r)
	return r, err
}

// Upgrade replaces the daemon by a new process of binary ("": the
// running one's) serving the same mounts (POST /v1/upgrade, root only);
// it returns once the new process serves.
func (c *Client) Upgrade(ctx context.Context, binary string) (wire.Upgrade, error) {
	var u wire.Upgrade
	var body any = struct{}{}
	if binary != "" {
		body = struct {
			Binary string `json:"binary"`
		}{binary}
	}
	err := c.call(ctx, http.MethodPost, "/v1/upgrade", nil, body, &u)
	return u, err
}

// Info returns what the kernel said about the device whose node is at
// path (GET /v1/info). A name that is no kernel device is an *Error with
// code not_found.
func (c *Client) Info(ctx context.Context, path string) (wire.DeviceInfo, error) {
	var i wire.DeviceInfo
	err := c.call(ctx, http.MethodGet, "/v1/info", url.Values{"path": {path}}, nil, &i)
	return i, err
}

// Trigger asks the daemon to rescan the kernel's devices (POST
// /v1/trigger). A daemon that does not serve them answers an *Error with
// code not_supported.
func (c *Client) Trigger(ctx context.Context) (wire.Trigger, error) {
	var t wire.Trigger
	err := c.call(ctx, http.MethodPost, "/v1/trigger", nil, struct{}{}, &t)
	return t, err
}

// Metrics returns the daemon's metrics in Prometheus text format (GET
// /metrics).
func (c *Client) Metrics(ctx context.Context) (string, error) {
	a, err := c.do(ctx, &c.conns, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return "", err
	}
	if a.status != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %d %s: %s", a.status, http.StatusText(a.status), strings.TrimSpace(string(a.body)))
	}
	return string(a.body), nil
}

// Stream is an NDJSON stream of records.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
	raw  []byte
}

func newStream(body io.ReadCloser) *Stream {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &Stream{body: body, sc: sc}
}

// Next returns the next record; io.EOF when the daemon ended the stream.
func (s *Stream) Next() (wire.Record, error) {
	var rec wire.Record
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return rec, err
		}
		return rec, io.EOF
	}
	s.raw = s.sc.Bytes()
	err := decodeRecord(s.raw, &rec)
	return rec, err
}

// Raw returns the JSON line of the last record Next returned.
func (s *Stream) Raw() []byte { return s.raw }

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }

// Events opens the event stream with a buffer of buffer events (0: the
// daemon's default).
func (c *Client) Events(ctx context.Context, buffer int) (*Stream, error) {
	q := url.Values{}
	if buffer > 0 {
		q.Set("buffer", fmt.Sprint(buffer))
	}
	return c.stream(ctx, target("/v1/events", q))
}

// stream opens a stream: GET target on a connection of its own, which
// the stream's Close closes, as ctx's end does.
func (c *Client) stream(ctx context.Context, target string) (*Stream, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	cn := &conn{c: nc, br: bufio.NewReaderSize(nc, 64<<10)}
	stop := cn.bound(ctx)
	fail := func(err error) (*Stream, error) {
		stop()
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := cn.request(http.MethodGet, target, nil, false); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrUnreachable, err))
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", ErrUnreachable, err))
	}
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fail(errorOf(resp.StatusCode, b))
	}
	return newStream(&streamBody{Reader: resp.Body, c: nc, stop: stop}), nil
}

// HelperStream is an attached helper's stream of LOOKUP requests and
// events. The first record was "hello"; Hello returns it.
type HelperStream struct {
	*Stream
	c     *Client
	hello wire.Record
	ans   pool // the answers' connections
}

// AttachHelper makes the calling process the daemon's loader until the
// stream is closed or the process exits.
func (c *Client) AttachHelper(ctx context.Context) (*HelperStream, error) {
	st, err := c.stream(ctx, "/v1/helper")
	if err != nil {
		return nil, err
	}
	hs := &HelperStream{Stream: st, c: c}
	rec, err := hs.Next()
	if err != nil || rec.Type != "hello" {
		hs.Close()
		return nil, fmt.Errorf("helper stream: no hello record (%v)", err)
	}
	hs.hello = rec
	return hs, nil
}

// Hello returns the hello record: the identity the daemon saw.
func (hs *HelperStream) Hello() wire.Record { return hs.hello }

// Done answers LOOKUP id; loadErr, if not empty, says why nothing was
// registered (for the daemon's log).
func (hs *HelperStream) Done(ctx context.Context, id uint64, loadErr string) error {
	return hs.answer(ctx, wire.DoneRequest{ID: id, Error: loadErr}, nil)
}

// Answer answers LOOKUP req.ID in one request: the daemon registers
// req.Register, in order, and then releases the lookup. A registration
// it refuses is an *Error whose Field names it ("register[2].major"),
// and then nothing was registered and the lookup is still pending (it
// may be answered again). Without registrations it is Done.
func (hs *HelperStream) Answer(ctx context.Context, req wire.DoneRequest) (wire.DoneAnswer, error) {
	var a wire.DoneAnswer
	err := hs.answer(ctx, req, &a)
	return a, err
}

// Close ends the stream and drops the answers' connections.
func (hs *HelperStream) Close() error {
	hs.ans.closeIdle(true)
	return hs.Stream.Close()
}

// answer posts req to /v1/helper/done over one of the stream's answer
// connections.
func (hs *HelperStream) answer(ctx context.Context, req wire.DoneRequest, out *wire.DoneAnswer) error {
	a, err := hs.c.do(ctx, &hs.ans, http.MethodPost, "/v1/helper/done", nil, req)
	if err != nil || out == nil {
		return err
	}
	return decodeDoneAnswer(a.body, out)
}

// errorOf is the *Error of an error answer.
func errorOf(status int, b []byte) error {
	var eb wire.ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
		return &Error{Status: status, Code: "http_" + fmt.Sprint(status), Message: strings.TrimSpace(string(b))}
	}
	return &Error{Status: status, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
}
