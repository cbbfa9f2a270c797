#!/usr/bin/env bash
# Model-checks the spin models of test/model (docs/model.md says what they
# prove and under which bounds).
#
# Every model is checked both ways:
#   fix     the model of the committed Go code: every property must hold,
#           with the search complete (errors: 0, no depth truncation, no
#           memory cut-off);
#   mutant  each switch that restores a historical bug: spin must find a
#           counterexample of the property that bug violates (the expected
#           message is matched, so a mutant killed by something else does
#           not count).
# One line per run: model, switch, property, result, states, depth, time.
# Exits non-zero if a fixed model has a counterexample or an incomplete
# search, or a mutant survives. Works in a temporary directory; leaves
# nothing behind.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)

for tool in spin gcc; do
	if ! command -v "$tool" >/dev/null; then
		echo "check.sh: $tool not found (.ci/run installs spin)" >&2
		exit 1
	fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Memory bound for each pan (MB); the largest run needs about 300.
memlim=2048
failed=0

# run MODEL SWITCH PROPERTY EXPECT
#   SWITCH   "fix", or space-separated spin -D flags (MUT_R1, NOBOUND, ...)
#   PROPERTY safety   assertions + invalid end states (-DSAFETY)
#            live     the model's LTL claim under weak fairness (-a -f)
#            np       non-progress cycles under weak fairness (-DNP -l -f)
#   EXPECT   "-" for a fixed model (no counterexample), else an extended
#            regular expression the counterexample must match
run() {
	local model=$1 sw=$2 prop=$3 expect=$4
	local dir="$work/${model%.pml}-${sw// /+}-$prop"
	mkdir -p "$dir"
	cp "$here/$model" "$dir/"
	local dflags=() s
	if [ "$sw" != fix ]; then
		for s in $sw; do dflags+=("-D$s"); done
	fi
	# Compiling pan with -O2 takes ~35 s for rwsem.pml and pays off only
	# for the long liveness search; everything else is faster at -O0.
	local opt=-O0
	[ "$model:$sw:$prop" = rwsem.pml:fix:live ] && opt=-O2
	local cflags=(-w "$opt" "-DMEMLIM=$memlim") rflags=(-m100000)
	case $prop in
	safety) cflags+=(-DSAFETY -DNOCLAIM) ;;
	live) rflags+=(-a -f) ;;
	np) cflags+=(-DNP -DNFAIR=3) rflags+=(-l -f) ;;
	esac
	# The rwsem state vectors are large: store them compressed (lossless).
	[ "$model" = rwsem.pml ] && cflags+=(-DCOLLAPSE)
	local out="$dir/out"
	if ! (cd "$dir" && spin "${dflags[@]}" -a "$model" >"$out" 2>&1 &&
		gcc "${cflags[@]}" -o pan pan.c >>"$out" 2>&1); then
		printf '%-6s %-17s %-6s %-9s (spin or gcc failed)\n' "${model%.pml}" "$sw" "$prop" "ERROR"
		sed 's/^/    /' "$out" | tail -20
		failed=$((failed + 1))
		return
	fi
	(cd "$dir" && ./pan "${rflags[@]}" >"$out" 2>&1)
	local errors states depth secs result
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
	states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$out" | tail -1)
	depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$out" | tail -1)
	secs=$(sed -n 's/^pan: elapsed time \([0-9.e+]*\).*/\1/p' "$out" | tail -1)
	local truncated=
	if grep -qE 'max search depth too small|reached -DMEMLIM bound|out of memory' "$out"; then
		truncated=1
	fi
	if [ "$expect" = - ]; then
		if [ "$errors" = 0 ] && [ -z "$truncated" ] && ! grep -q 'Search not completed' "$out"; then
			result=ok
		elif [ -z "$truncated" ] && [ -n "$errors" ] && [ "$errors" != 0 ]; then
			result=COUNTEREX
		else
			result=INCOMPLETE
		fi
	else
		if [ -n "$errors" ] && [ "$errors" != 0 ] && grep -qE "$expect" "$out"; then
			result=killed
		else
			result=SURVIVED
		fi
	fi
	printf '%-6s %-17s %-6s %-10s states=%-9s depth=%-5s time=%ss\n' \
		"${model%.pml}" "$sw" "$prop" "$result" "${states:-?}" "${depth:-?}" "${secs:-?}"
	case $result in
	ok | killed) ;;
	*)
		failed=$((failed + 1))
		grep -E '^pan:|errors:|Warning' "$out" | sed 's/^/    /' | head -5
		if [ -f "$dir/$model.trail" ]; then
			echo "    counterexample (spin -t -p, last steps):"
			(cd "$dir" && spin "${dflags[@]}" -t -p "$model" 2>&1) | tail -25 | sed 's/^/    /'
		fi
		;;
	esac
}

# The lookup protocol (lookup.pml).
run lookup.pml fix safety -
run lookup.pml fix np -
run lookup.pml NOBOUND safety -
run lookup.pml MUT_R4 safety 'assertion violated waiter_released_by_step4'
run lookup.pml "MUT_R4 NOBOUND" safety 'invalid end state'
run lookup.pml MUT_STACK safety 'assertion violated record_alive'

# The rwsem (rwsem.pml).
run rwsem.pml fix safety -
run rwsem.pml fix live -
run rwsem.pml MUT_R1 safety 'assertion violated R1_no_touch_after_recycle'
run rwsem.pml MUT_R2 safety 'assertion violated R2_'
run rwsem.pml MUT_R3 safety 'invalid end state'
run rwsem.pml MUT_R3 live 'acceptance cycle'
run rwsem.pml MUT_R3H safety 'invalid end state'
run rwsem.pml MUT_R3H live 'acceptance cycle'

if [ "$failed" -ne 0 ]; then
	echo "models: $failed run(s) failed"
	exit 1
fi
echo "models: every fixed model holds, every mutant killed"
