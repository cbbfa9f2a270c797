package wire

// View is a view: one more mount of the namespace at Mountpoint, showing
// the paths Allow admits (all if empty) that Deny does not, with the
// attributes Overrides set. Body of POST /v1/views/add; docs/api.md,
// "views", gives the rules.
type View struct {
	Mountpoint string         `json:"mountpoint"` // absolute, clean
	Allow      []string       `json:"allow,omitempty"`
	Deny       []string       `json:"deny,omitempty"`
	Overrides  []ViewOverride `json:"overrides,omitempty"`
}

// ViewOverride sets mode and/or owner of the nodes whose path Glob
// matches, in one view; the first matching override applies.
type ViewOverride struct {
	Glob string `json:"glob"`
	Mode string `json:"mode,omitempty"` // octal permission bits: "0666"
	Uid  *int64 `json:"uid,omitempty"`
	Gid  *int64 `json:"gid,omitempty"`
}

// ViewInfo is one mount of the daemon as GET /v1/views lists it: the
// main mount (Main, no patterns: the whole namespace) or a view.
type ViewInfo struct {
	View
	Main          bool   `json:"main,omitempty"`
	KnownNodes    int64  `json:"known_nodes"`    // node ids its kernel holds
	LiveRequests  int64  `json:"live_requests"`  // FUSE requests being served
	NotifySent    uint64 `json:"notify_sent"`    // kernel notifies sent to it
	NotifyDropped uint64 `json:"notify_dropped"` // lost to a full queue
}

// Views is the answer of GET /v1/views.
type Views struct {
	Views []ViewInfo `json:"views"`
}

// MountpointRequest is the body of POST /v1/views/remove.
type MountpointRequest struct {
	Mountpoint string `json:"mountpoint"`
}

// Error codes of the view endpoints.
const (
	CodeInvalidMountpoint = "invalid_mountpoint" // 400 not an absolute clean path, not a directory, or inside (or above) a mount of this daemon
	CodeMountFailed       = "mount_failed"       // 500 the kernel refused the mount; nothing changed
)
