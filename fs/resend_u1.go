//go:build !mutant_u1

package fs

// resendAfterServe selects when Resume asks the kernel to resend what the
// predecessor left unanswered. It is false: before the server reads
// anything, so that no request the successor is handling is requeued and
// carried out twice. resend_mutant_u1.go, built with the tag mutant_u1,
// sets it.
const resendAfterServe = false

// u1AwaitRequest is mutant U1's: nothing here.
func u1AwaitRequest(*Server) {}
