package wire

import "encoding/json"

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

// viewJSON is View with its names as Names.
type viewJSON struct {
	Mountpoint Name           `json:"mountpoint"`
	Allow      []Name         `json:"allow,omitempty"`
	Deny       []Name         `json:"deny,omitempty"`
	Overrides  []ViewOverride `json:"overrides,omitempty"`
}

func (v View) toJSON() viewJSON {
	return viewJSON{Name(v.Mountpoint), names(v.Allow), names(v.Deny), v.Overrides}
}

func (j viewJSON) view() View {
	return View{string(j.Mountpoint), strs(j.Allow), strs(j.Deny), j.Overrides}
}

// MarshalJSON implements json.Marshaler (see Name).
func (v View) MarshalJSON() ([]byte, error) { return json.Marshal(v.toJSON()) }

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (v *View) UnmarshalJSON(b []byte) error {
	var j viewJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*v = j.view()
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (o ViewOverride) MarshalJSON() ([]byte, error) {
	type plain ViewOverride
	return json.Marshal(struct {
		Glob Name `json:"glob"`
		plain
	}{Name(o.Glob), plain(o)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (o *ViewOverride) UnmarshalJSON(b []byte) error {
	type plain ViewOverride
	aux := struct {
		*plain
		Glob Name `json:"glob"`
	}{plain: (*plain)(o)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	o.Glob = string(aux.Glob)
	return nil
}

// viewInfoJSON is ViewInfo with the names of its View as Names. (View's
// methods are promoted to any struct embedding View, so ViewInfo cannot
// use the shadowing of the other types; TestViewInfoJSONFields keeps the
// two field lists equal.)
type viewInfoJSON struct {
	viewJSON
	Main          bool   `json:"main,omitempty"`
	KnownNodes    int64  `json:"known_nodes"`
	LiveRequests  int64  `json:"live_requests"`
	NotifySent    uint64 `json:"notify_sent"`
	NotifyDropped uint64 `json:"notify_dropped"`
}

// MarshalJSON implements json.Marshaler (see Name).
func (vi ViewInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(viewInfoJSON{vi.View.toJSON(), vi.Main, vi.KnownNodes, vi.LiveRequests,
		vi.NotifySent, vi.NotifyDropped})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (vi *ViewInfo) UnmarshalJSON(b []byte) error {
	var j viewInfoJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*vi = ViewInfo{j.viewJSON.view(), j.Main, j.KnownNodes, j.LiveRequests, j.NotifySent, j.NotifyDropped}
	return nil
}

// MarshalJSON implements json.Marshaler (see Name).
func (r MountpointRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Mountpoint Name `json:"mountpoint"`
	}{Name(r.Mountpoint)})
}

// UnmarshalJSON implements json.Unmarshaler (see Name).
func (r *MountpointRequest) UnmarshalJSON(b []byte) error {
	var aux struct {
		Mountpoint Name `json:"mountpoint"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	r.Mountpoint = string(aux.Mountpoint)
	return nil
}
