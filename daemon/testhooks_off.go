//go:build !devfsd_testhooks

package daemon

import (
	"context"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// testHooks is empty in the production build: no environment variable
// is read, no signal handler or listener is installed (testhooks.go has
// the test build's).
type testHooks struct{}

func testHooksFromEnv() (testHooks, error) { return testHooks{}, nil }

func (testHooks) populateTree(*dcache.Namespace, *zap.Logger) error { return nil }

func (testHooks) startPprof(*zap.Logger) (func(), error) { return func() {}, nil }

func (testHooks) afterReserve(*zap.Logger) {}

func (testHooks) noResend() bool { return false }

func (testHooks) wrapLoader(l modload.Loader, _ *zap.Logger) modload.Loader { return l }

func (testHooks) start(*dcache.Namespace, func(context.Context) error, *zap.Logger) func() {
	return func() {}
}
