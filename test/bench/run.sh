#!/usr/bin/env bash
# The FUSE benchmarks of issue 4: devfsd vs tmpfs vs bare go-fuse.
#
#   test/bench/run.sh            full sizes, 5 repetitions (minutes)
#   test/bench/run.sh -quick     small sizes, one repetition (seconds)
#   test/bench/run.sh -reps 9 -backends tmpfs,barefs
#
# Run as root with /dev/fuse, from anywhere in the repository. The report
# (a markdown table) goes to stdout; progress to stderr. Figures are only
# comparable within one run: record the load (the report's first line).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/fusebench" ./test/bench/fusebench
"$bin/fusebench" "$@"
