#!/usr/bin/env bash
# Runs every mutant listed in test/mutants.txt and fails if one survives.
#
# A mutant is the project with one fix taken out, selected by a build tag
# (files named *_mutant_*.go behind `//go:build mutant_rN`). Its regression
# test must fail: the named test must print `--- FAIL: Name`. A build error
# or a panic elsewhere does not count as a kill, so a broken mutant cannot
# pass for a killed one.
#
# Line format:  race  build-tag  package  test-name
# (package DIR:PKG for a package of the module in DIR)
set -uo pipefail
cd "$(dirname "$0")/.."

killed=0
survived=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
while read -r race tag pkg test; do
	case "$race" in "" | "#"*) continue ;; esac
	# The test itself bounds every wait with a deadline; the timeout here is
	# only a backstop.
	# A package in a module of its own is written DIR:PKG (go test runs in
	# DIR): third_party/go-fuse:./fuse.
	dir=.
	case "$pkg" in *:*) dir=${pkg%%:*} pkg=${pkg#*:} ;; esac
	(cd "$dir" && timeout 300 go test -count=1 -tags "$tag" -run "^${test}\$" "$pkg") >"$out" 2>&1
	rc=$?
	if [ $rc -ne 0 ] && grep -q -- "--- FAIL: ${test}" "$out"; then
		echo "killed   $race ($tag): $pkg $test"
		killed=$((killed + 1))
	else
		echo "SURVIVED $race ($tag): $pkg $test (exit $rc)"
		tail -20 "$out" | sed 's/^/    /'
		survived=$((survived + 1))
	fi
done <test/mutants.txt
echo "mutants: $killed killed, $survived survived"
[ "$survived" -eq 0 ] && [ "$killed" -gt 0 ]
