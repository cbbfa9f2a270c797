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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devfsd/devfsd/control/wire"
)

// Client talks to one daemon's socket. Safe for concurrent use.
type Client struct {
	hc   *http.Client
	path string
}

// New returns a client of the socket at path. Nothing is dialled yet.
func New(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		// Connections are kept alive between requests: a helper answers
		// every LOOKUP with a request, concurrently if it likes, and a
		// dial per answer would cost the accept and the peer credential
		// each time. The daemon closes idle ones after 2 minutes; the
		// client drops them first, so that a request never meets a
		// connection the daemon is closing.
		MaxIdleConns:        16,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{hc: &http.Client{Transport: tr}, path: path}
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

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

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://devfsd" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb wire.ErrorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
			return nil, &Error{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Message: strings.TrimSpace(string(b))}
		}
		return nil, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	resp, err := c.do(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
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
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
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
	err := json.Unmarshal(s.raw, &rec)
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
	resp, err := c.do(ctx, http.MethodGet, "/v1/events", q, nil)
	if err != nil {
		return nil, err
	}
	return newStream(resp.Body), nil
}

// HelperStream is an attached helper's stream of LOOKUP requests and
// events. The first record was "hello"; Hello returns it.
type HelperStream struct {
	*Stream
	c     *Client
	hello wire.Record
	ans   answerConns
}

// AttachHelper makes the calling process the daemon's loader until the
// stream is closed or the process exits.
func (c *Client) AttachHelper(ctx context.Context) (*HelperStream, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/helper", nil, nil)
	if err != nil {
		return nil, err
	}
	hs := &HelperStream{Stream: newStream(resp.Body), c: c}
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
	hs.ans.close()
	return hs.Stream.Close()
}

// answer posts req to /v1/helper/done over one of the stream's answer
// connections: HTTP/1.1 written and read on the caller's goroutine, on a
// connection kept alive for the next answer. net/http's client would hand
// each request to its connection's writer goroutine and the answer back
// from its reader goroutine: two wake-ups more on the path of every miss
// a helper answers.
func (hs *HelperStream) answer(ctx context.Context, req wire.DoneRequest, out *wire.DoneAnswer) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var (
		ac     *answerConn
		status int
		b      []byte
		keep   bool
	)
	for fresh := false; ; fresh = true {
		ac, err = hs.ans.get(ctx, hs.c.path, fresh)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
		var unread bool
		status, b, keep, unread, err = ac.post(ctx, "/v1/helper/done", body)
		if err == nil {
			break
		}
		ac.c.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A kept connection the daemon closed while it was idle (a
		// restart, a shutdown) took nothing of the request: once more
		// on a new one. (Were the request taken after all — a daemon
		// that closed without an answer — the repeat changes nothing: a
		// done for a lookup no longer pending is unknown_lookup.)
		if !unread || ac.fresh || fresh {
			return fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
	}
	if keep {
		hs.ans.put(ac)
	} else {
		ac.c.Close()
	}
	if status >= 300 {
		return errorOf(status, b)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// errorOf is the *Error of an error answer.
func errorOf(status int, b []byte) error {
	var eb wire.ErrorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error.Code == "" {
		return &Error{Status: status, Code: "http_" + fmt.Sprint(status), Message: strings.TrimSpace(string(b))}
	}
	return &Error{Status: status, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
}

// answerConns are a helper stream's kept-alive connections for answers.
type answerConns struct {
	mu     sync.Mutex
	idle   []*answerConn // guarded by mu; most recently used last
	closed bool          // guarded by mu
}

// Answer connection bounds: how many are kept, and how long one idle is
// trusted (the daemon closes idle connections after 2 minutes).
const (
	maxIdleAnswerConns = 4
	answerConnIdle     = 60 * time.Second
)

type answerConn struct {
	c     net.Conn
	br    *bufio.Reader
	buf   []byte // the request being written, reused
	used  time.Time
	fresh bool // dialled for this request, not kept from an earlier one
}

func (a *answerConns) get(ctx context.Context, path string, fresh bool) (*answerConn, error) {
	a.mu.Lock()
	for !fresh && len(a.idle) > 0 {
		ac := a.idle[len(a.idle)-1]
		a.idle = a.idle[:len(a.idle)-1]
		if time.Since(ac.used) < answerConnIdle {
			a.mu.Unlock()
			ac.fresh = false
			return ac, nil
		}
		ac.c.Close()
	}
	a.mu.Unlock()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	return &answerConn{c: c, br: bufio.NewReaderSize(c, 4096), fresh: true}, nil
}

func (a *answerConns) put(ac *answerConn) {
	ac.used = time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || len(a.idle) >= maxIdleAnswerConns {
		ac.c.Close()
		return
	}
	a.idle = append(a.idle, ac)
}

func (a *answerConns) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for _, ac := range a.idle {
		ac.c.Close()
	}
	a.idle = nil
}

// post sends one POST with a JSON body and reads the answer: its status,
// its body, and whether the connection may carry the next request. On an
// error, unread says the write failed or the connection ended before any
// byte of an answer, as when the daemon had closed it while idle.
func (ac *answerConn) post(ctx context.Context, path string, body []byte) (status int, rb []byte, keep, unread bool, err error) {
	if dl, ok := ctx.Deadline(); ok {
		ac.c.SetDeadline(dl)
	} else {
		ac.c.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { ac.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b := ac.buf[:0]
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: devfsd\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	ac.buf = b
	if _, err := ac.c.Write(b); err != nil {
		return 0, nil, false, true, err
	}
	if _, err := ac.br.Peek(1); err != nil {
		return 0, nil, false, err == io.EOF, err
	}
	resp, err := http.ReadResponse(ac.br, nil)
	if err != nil {
		return 0, nil, false, false, err
	}
	rb, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, nil, false, false, err
	}
	return resp.StatusCode, rb, !resp.Close, false, nil
}
