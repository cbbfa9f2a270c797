#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI runs.
#
#   gofmt, go mod tidy -diff (go.mod says what the code imports) and go vet;
#   every package (unit and integration tests) under the race
#   detector; the concurrency packages again at GOMAXPROCS 1 and 2; every
#   mutant of test/mutants.txt, each of which must be killed by its test; the
#   spin models of test/model, if any.
#
# Integration tests mount FUSE filesystems: run as root with /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
step() {
	local name=$1
	shift
	echo "== $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		echo "!! step failed: $name"
		failed=$((failed + 1))
	fi
}

fmtcheck() {
	local bad
	bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
	if [ -n "$bad" ]; then
		echo "gofmt: not formatted: $bad"
		return 1
	fi
}

# Packages with concurrency code that get a second pass at GOMAXPROCS 1 and 2.
concurrency_pkgs() {
	local p
	for p in ./sync/... ./dcache/... ./lookup/... ./fs/...; do
		[ -d "${p%/...}" ] && echo "$p"
	done
}

step "gofmt" fmtcheck
step "go mod tidy -diff" go mod tidy -diff
step "go vet" go vet ./...
step "go test -race ./..." go test -race -count=1 -timeout 30m ./...
# shellcheck disable=SC2046
step "go test -race -cpu 1,2 (concurrency packages)" \
	go test -race -count=1 -cpu 1,2 -timeout 30m $(concurrency_pkgs)
step "mutants" bash test/mutants.sh
# third_party/go-fuse is a module of its own (devfsd's patch to go-fuse,
# PATCH.md): the patch's tests.
step "go-fuse patch tests" \
	bash -c 'cd third_party/go-fuse && go vet ./fuse && go test -race -count=1 -run "^(TestResumeServesWhatTheFirstServerDropped|TestRestartServing|TestReadBuffersAreMappedBeforeTheKernelCopiesIntoThem|TestResumeWithoutResendLetsASignalEndAnOrphan|TestOneRequestWakesOneWaitingReader)$" ./fuse'
# Bounded fuzzing of the control socket's request decoder (the seed corpus
# already runs in the plain go test pass above).
step "fuzz control decoder (30s)" \
	go test ./control -run '^$' -fuzz '^FuzzDecode$' -fuzztime 30s
step "fuzz devfsd.conf parser (30s)" \
	go test ./modload/devfsdconf -run '^$' -fuzz '^FuzzParse$' -fuzztime 30s
# deploy/ is its own Go module (k8s.io/api and BuildKit's parser stay out
# of the daemon's go.mod): systemd units, Kubernetes manifests, Dockerfile.
step "deploy validation (go test in deploy/)" \
	bash -c 'cd deploy && go mod tidy -diff && go vet ./... && go test -count=1 ./...'
if [ -x test/model/check.sh ]; then
	step "spin models" bash test/model/check.sh
fi

echo
echo "suite: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
