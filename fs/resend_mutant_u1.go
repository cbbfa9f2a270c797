//go:build mutant_u1

package fs

import "time"

// resendAfterServe, mutant U1: Resume does not resend; the daemon does,
// with ResendLate, once every mount serves and while one handles a
// request, which is requeued and carried out twice (mknod EEXIST, unlink
// ENOENT); TestUpgradeUnderLoad (test/integration) must fail in this
// build.
const resendAfterServe = true

// u1AwaitRequest waits, for at most a second, until s handles a request.
func u1AwaitRequest(s *Server) {
	for deadline := time.Now().Add(time.Second); s.liveRequests() == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
}
