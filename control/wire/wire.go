// Package wire holds the JSON shapes and error codes of devfsd's control
// socket (HTTP/1.1 + JSON on a Unix socket, every path under /v1/). The
// server (package control) and the Go client (package control/client)
// share them; docs/api.md documents them for everyone else.
package wire

import "github.com/devfsd/devfsd/dcache"

// Prefix is the versioned path prefix of every endpoint.
const Prefix = "/v1/"

// Node is a node as stat and ls report it.
type Node struct {
	Path   string `json:"path"` // relative to the namespace root, "" for the root
	Type   string `json:"type"` // dir, char, block, symlink, fifo, socket, regular
	Mode   string `json:"mode"` // permission bits, 4 octal digits: "0660"
	Uid    uint32 `json:"uid"`
	Gid    uint32 `json:"gid"`
	Major  uint32 `json:"major,omitempty"`
	Minor  uint32 `json:"minor,omitempty"`
	Target string `json:"target,omitempty"` // symlinks
	Ino    uint64 `json:"ino"`
	Nlink  uint32 `json:"nlink"`
	Size   uint64 `json:"size"`
	Mtime  string `json:"mtime"` // RFC 3339 with nanoseconds
	Ctime  string `json:"ctime"`
}

// List is the answer of GET /v1/list.
type List struct {
	Path  string `json:"path"`
	Nodes []Node `json:"nodes"`
}

// RegisterRequest is the body of POST /v1/register. Pointers tell an
// absent field from a zero one; the server rejects unknown fields.
type RegisterRequest struct {
	Path   string  `json:"path"`
	Type   string  `json:"type"`           // char, block, dir, symlink, fifo, socket
	Mode   string  `json:"mode,omitempty"` // octal string; default 0600 devices, 0755 dirs, 0777 symlinks, 0644 others
	Major  *int64  `json:"major,omitempty"`
	Minor  *int64  `json:"minor,omitempty"`
	Uid    *int64  `json:"uid,omitempty"`
	Gid    *int64  `json:"gid,omitempty"`
	Target *string `json:"target,omitempty"`
}

// PathRequest is the body of POST /v1/unregister.
type PathRequest struct {
	Path string `json:"path"`
}

// ChmodRequest is the body of POST /v1/chmod.
type ChmodRequest struct {
	Path string `json:"path"`
	Mode string `json:"mode"`
}

// ChownRequest is the body of POST /v1/chown; at least one of Uid, Gid.
type ChownRequest struct {
	Path string `json:"path"`
	Uid  *int64 `json:"uid,omitempty"`
	Gid  *int64 `json:"gid,omitempty"`
}

// DoneRequest is the body of POST /v1/helper/done. With Register it is
// the one-request answer: the registrations are made, in order, before
// the lookup is released; they are all checked first (each as POST
// /v1/register checks its body, and against the namespace), and one that
// fails refuses the whole request with nothing changed and the lookup
// still pending.
type DoneRequest struct {
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"` // why the load failed, for the log; the lookup answers from the tree either way
	// Register lists nodes to register before releasing the lookup, at
	// most MaxDoneRegister; a directory before what goes in it.
	Register []RegisterRequest `json:"register,omitempty"`
	// ExistOK skips a registration whose name is taken (DoneAnswer.Existing
	// lists it) instead of refusing the request, as a loader's
	// devfs_register of a node that exists counts as done.
	ExistOK bool `json:"exist_ok,omitempty"`
}

// MaxDoneRegister bounds the registrations of one DoneRequest.
const MaxDoneRegister = 1024

// DoneAnswer is the answer of POST /v1/helper/done.
type DoneAnswer struct {
	ID uint64 `json:"id"`
	// Registered holds the nodes the request registered, in its order.
	Registered []Node `json:"registered,omitempty"`
	// Existing holds the paths skipped because they were taken (ExistOK).
	Existing []string `json:"existing,omitempty"`
	// Late says the lookup's wait ended (its loader timeout) while the
	// registrations were being made: they stand, and the lookup answered
	// from the tree as it was then.
	Late bool `json:"late,omitempty"`
}

// Record is one line of an NDJSON stream (GET /v1/events, GET
// /v1/helper). Type says which fields are set.
type Record struct {
	Type string `json:"type"` // event, overrun, hello, lookup

	// event
	Seq      uint64 `json:"seq,omitempty"`
	Time     string `json:"time,omitempty"`
	Kind     string `json:"kind,omitempty"` // REGISTER, UNREGISTER, LOOKUP, CHANGE, CREATE, DELETE
	Path     string `json:"path,omitempty"`
	NodeType string `json:"node_type,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Major    uint32 `json:"major,omitempty"`
	Minor    uint32 `json:"minor,omitempty"`
	Uid      uint32 `json:"uid,omitempty"`
	Gid      uint32 `json:"gid,omitempty"`
	Origin   string `json:"origin,omitempty"` // builtin, fuse, loader, control, kernel
	Pid      uint32 `json:"pid,omitempty"`    // the process that made the change (fuse, control, loader)

	// overrun: Missed events were dropped for this consumer, the first
	// and last of them being FirstSeq and LastSeq.
	Missed   uint64 `json:"missed,omitempty"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`

	// lookup (helper stream): load Name in Dir and answer done(ID).
	ID     uint64         `json:"id,omitempty"`
	Dir    *string        `json:"dir,omitempty"`
	Name   string         `json:"name,omitempty"`
	Caller *dcache.Caller `json:"caller,omitempty"`
}

// Wait is the answer of GET /v1/wait.
type Wait struct {
	Node    Node   `json:"node"`
	Elapsed string `json:"elapsed"`
}

// Stats is the answer of GET /v1/stats.
type Stats struct {
	Nodes    uint64      `json:"nodes"`
	MaxNodes uint64      `json:"max_nodes"`
	Bytes    uint64      `json:"bytes"`
	MaxBytes uint64      `json:"max_bytes"`
	Events   EventStats  `json:"events"`
	Helper   HelperStats `json:"helper"`
	Fallback string      `json:"fallback_loader"`
	// Extra holds the counters of the other layers (lookup, notify).
	Extra map[string]uint64 `json:"extra,omitempty"`
}

// EventStats counts the event fan-out.
type EventStats struct {
	LastSeq     uint64 `json:"last_seq"`
	Subscribers int    `json:"subscribers"`
	Delivered   uint64 `json:"delivered"` // records queued to subscribers
	Missed      uint64 `json:"missed"`    // records subscribers missed (reported as overruns)
}

// HelperStats describes the helper loader.
type HelperStats struct {
	Attached bool   `json:"attached"`
	Pid      uint32 `json:"pid,omitempty"`
	Sessions uint64 `json:"sessions"`
	Sent     uint64 `json:"lookups_sent"`
	Answered uint64 `json:"lookups_answered"`
	// AnsweredRegistering counts the answered lookups whose done carried
	// their registrations (the one-request form).
	AnsweredRegistering uint64 `json:"lookups_answered_registering"`
	TimedOut            uint64 `json:"lookups_timed_out"`
	Aborted             uint64 `json:"lookups_aborted"`
	Refused             uint64 `json:"lookups_refused"`
}

// ErrorBody is every error answer: {"error":{"code":...,"message":...}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is an error answer's content. Code is stable; Message is for
// people; Field names the offending field or parameter, if one.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// The stable error codes, with their HTTP statuses.
const (
	CodeBadJSON          = "bad_json"              // 400 not one JSON object, or trailing data
	CodeBadType          = "bad_type"              // 400 a field of the wrong JSON type
	CodeUnknownField     = "unknown_field"         // 400 a field or query parameter the endpoint does not take
	CodeDuplicateField   = "duplicate_field"       // 400 a field given twice
	CodeMissingField     = "missing_field"         // 400 a required field or parameter is absent
	CodeInvalidPath      = "invalid_path"          // 400 not a clean relative path: "", ".", "..", "//", NUL, leading or trailing "/"
	CodeNameTooLong      = "name_too_long"         // 400 a path element over 255 bytes
	CodePathTooLong      = "path_too_long"         // 400 a path over 4095 bytes
	CodeInvalidType      = "invalid_type"          // 400 a node type that is not char, block, dir, symlink, fifo, socket
	CodeInvalidMode      = "invalid_mode"          // 400 not an octal string of permission bits (<= 07777)
	CodeInvalidDevice    = "invalid_device_number" // 400 major >= 4096, minor >= 1<<20, negative, or given for a non-device
	CodeInvalidOwner     = "invalid_owner"         // 400 uid or gid outside 0..4294967294
	CodeInvalidTarget    = "invalid_target"        // 400 a symlink target empty, over 4095 bytes, with NUL, or given for a non-symlink
	CodeInvalidArgument  = "invalid_argument"      // 400 another bad value (timeout, buffer, ...)
	CodeInvalidUTF8      = "invalid_utf8"          // 400 a string JSON cannot carry exactly: bytes not UTF-8, a lone surrogate escape; send a name as an array of bytes (Name)
	CodeBodyTooLarge     = "body_too_large"        // 413 a body over 64 KiB
	CodePermission       = "permission_denied"     // 403 the peer may not change the namespace
	CodeNotHelper        = "not_helper"            // 403 done from a process that is not the attached helper
	CodeNotFound         = "not_found"             // 404 no node at that path
	CodeUnknownEndpoint  = "unknown_endpoint"      // 404 no such endpoint
	CodeUnknownLookup    = "unknown_lookup"        // 404 done for an id not pending (answered, timed out)
	CodeMethod           = "method_not_allowed"    // 405
	CodeExists           = "exists"                // 409 the name is taken
	CodeNotDir           = "not_a_directory"       // 409 a parent is not a directory
	CodeBusy             = "busy"                  // 409 the root cannot be unregistered
	CodeHelperAttached   = "helper_attached"       // 409 another helper is attached
	CodeNoSpace          = "no_space"              // 507 max_nodes or the depth limit reached
	CodeTimeout          = "timeout"               // 504 wait: the name did not appear in time
	CodeNotSupported     = "not_supported"         // 501 this daemon does not do that (no helper, no reload); 409 trigger without devices: kernel
	CodeInvalidConfig    = "invalid_config"        // 400 reload: the configuration file or flags are invalid; nothing changed
	CodeTooManyConsumers = "too_many_subscribers"  // 503 the event subscriber limit is reached
	CodeShuttingDown     = "shutting_down"         // 503 the daemon is stopping
	CodeInternal         = "internal"              // 500 a bug; logged
)

// Reload is the answer of POST /v1/reload: what the new configuration
// changed (file keys), and how many cached misses were dropped (in the
// daemon and the kernel) because their answer may have changed.
type Reload struct {
	Changed     []string `json:"changed"`
	Invalidated int      `json:"invalidated"`
}

// Upgrade is the answer of POST /v1/upgrade: the process that served
// until the upgrade, the one that serves now, the binary it runs, and how
// long the mounts were not read (from the old process's stop to the new
// one's first read).
type Upgrade struct {
	OldPid  int     `json:"old_pid"`
	NewPid  int     `json:"new_pid"`
	Binary  string  `json:"binary"`
	Mounts  int     `json:"mounts"`
	PauseMs float64 `json:"pause_ms"`
}

// DeviceInfo is the answer of GET /v1/info: what the kernel said about
// the device whose node is at Path (devices: kernel only).
type DeviceInfo struct {
	Path      string `json:"path"`
	Type      string `json:"type"` // char or block
	Major     uint32 `json:"major"`
	Minor     uint32 `json:"minor"`
	DevPath   string `json:"devpath"`   // DEVPATH, "/devices/virtual/mem/null"
	Subsystem string `json:"subsystem"` // SUBSYSTEM
	Driver    string `json:"driver"`    // DRIVER; "" if no driver is bound
	// Registered says whether the node at Path is the one the kernel
	// source registered for the device (false: another node holds the
	// name).
	Registered bool `json:"registered"`
	// Env is every uevent variable (MAJOR, MINOR, DEVNAME, ...).
	Env map[string]string `json:"env"`
}

// Trigger is the answer of POST /v1/trigger: the kernel source's state
// once its rescan of sysfs is done.
type Trigger struct {
	Devices    int    `json:"devices"`    // devices the source knows
	Registered int    `json:"registered"` // nodes registered for them
	Rescans    uint64 `json:"rescans"`    // rescans since start, this one included
}
