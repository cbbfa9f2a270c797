package client

import (
	"context"
	"net/http"

	"github.com/devfsd/devfsd/control/wire"
)

// Views lists the daemon's mounts: the main one, then its views.
func (c *Client) Views(ctx context.Context) ([]wire.ViewInfo, error) {
	var v wire.Views
	err := c.call(ctx, http.MethodGet, "/v1/views", nil, nil, &v)
	return v.Views, err
}

// AddView mounts one more view of the namespace (root only) and returns
// it once the mount is live.
func (c *Client) AddView(ctx context.Context, v wire.View) (wire.ViewInfo, error) {
	var info wire.ViewInfo
	err := c.call(ctx, http.MethodPost, "/v1/views/add", nil, v, &info)
	return info, err
}

// RemoveView unmounts the view at mountpoint (root only).
func (c *Client) RemoveView(ctx context.Context, mountpoint string) error {
	return c.call(ctx, http.MethodPost, "/v1/views/remove", nil, wire.MountpointRequest{Mountpoint: mountpoint}, nil)
}
