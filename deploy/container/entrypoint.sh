#!/bin/sh
# devfsd-entrypoint: the container image's entrypoint.
#
#   devfsd-entrypoint mount [flags] DIR   prepare DIR, then exec devfsd mount
#   devfsd-entrypoint ARGS...             exec devfsd ARGS (helper, ctl, ...)
#
# Before `mount` it creates DIR and takes away a dead devfsd mount left on
# it by a predecessor that was killed (SIGKILL, OOM): such a mount answers
# ENOTCONN and would make the new daemon fail. Then it execs devfsd, so
# that devfsd is the process the runtime signals: SIGTERM unmounts (within
# shutdown_timeout), a second SIGTERM kills. devfsd handles SIGTERM and
# SIGINT itself, so it is safe as PID 1; run with --init (docker, podman)
# if the exec loader's programs leave orphans to reap.
set -eu

if [ "${1:-}" = "mount" ]; then
	dir=""
	for a in "$@"; do
		case "$a" in
		-*) ;;
		*) dir="$a" ;;
		esac
	done
	# dir is the last argument that is not a flag: DIR, or "mount" if none
	# was given (devfsd then reads mountpoint from --config).
	if [ -n "$dir" ] && [ "$dir" != "mount" ]; then
		if grep -qs " $dir fuse.devfsd " /proc/self/mounts; then
			echo "devfsd-entrypoint: removing a stale devfsd mount on $dir" >&2
			umount -l "$dir" || true
		fi
		mkdir -p "$dir"
	fi
fi
exec /usr/bin/devfsd "$@"
