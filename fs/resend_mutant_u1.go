//go:build mutant_u1

package fs

// resendAfterServe, mutant U1: Resume does not resend; the daemon does,
// with ResendLate, once every mount serves, so a request a successor
// handles at that moment is requeued and carried out twice (mknod EEXIST,
// unlink ENOENT); TestUpgradeUnderLoad (test/integration) must fail in
// this build.
const resendAfterServe = true
