// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build mutant_orphans

package fuse

const orphanEnding = false
