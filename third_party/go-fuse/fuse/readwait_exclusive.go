// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build linux && !mutant_herd

package fuse

// pollEveryReader: false, waiting readers wait in epoll instances that
// watch the descriptor exclusively (readwait_linux.go).
const pollEveryReader = false
