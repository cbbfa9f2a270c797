package daemon

import (
	"sync"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// lifecycle tells systemd (when NOTIFY_SOCKET is set; otherwise nothing)
// and the log where the daemon is: ready once the mount is live, stopping
// once shutdown has begun. Each is said at most once, whoever calls it and
// however often — shutdown paths call Stopping from more than one place.
type lifecycle struct {
	log      *zap.Logger
	ready    sync.Once
	stopping sync.Once
}

// Ready reports that the mount is live: READY=1.
func (lc *lifecycle) Ready() {
	lc.ready.Do(func() {
		lc.log.Info("mount is live")
		lc.notify(daemon.SdNotifyReady)
	})
}

// Stopping reports that shutdown has begun: STOPPING=1.
func (lc *lifecycle) Stopping() {
	lc.stopping.Do(func() {
		lc.log.Info("stopping")
		lc.notify(daemon.SdNotifyStopping)
	})
}

func (lc *lifecycle) notify(state string) {
	// NOTIFY_SOCKET is left in the environment: STOPPING=1 needs it after
	// READY=1. Loaders that exec programs must scrub it themselves.
	sent, err := daemon.SdNotify(false, state)
	switch {
	case err != nil:
		lc.log.Warn("sd_notify failed", zap.String("state", state), zap.Error(err))
	case sent:
		lc.log.Debug("sd_notify", zap.String("state", state))
	}
}
