// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build linux && mutant_herd

package fuse

// The mutant of readwait_linux.go: every waiting reader polls, so each
// request wakes all of them.
const pollEveryReader = true
