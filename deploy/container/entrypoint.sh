#!/bin/sh
# devfsd-entrypoint: the container image's entrypoint.
#
#   devfsd-entrypoint mount [flags] DIR   prepare DIR, then exec devfsd mount
#   devfsd-entrypoint ARGS...             exec devfsd ARGS (helper, ctl, ...)
#
# Before `mount` it creates DIR (and the mount points of --view=FILE
# views) and takes away every devfsd mount that no
# longer answers — left by a predecessor that was killed (SIGKILL, OOM),
# its main mount and its views: such a mount answers ENOTCONN and would
# make the new daemon fail. Then it execs devfsd, so that devfsd is the
# process the runtime signals: SIGTERM unmounts (within
# shutdown_timeout), a second SIGTERM kills. devfsd handles SIGTERM and
# SIGINT itself, so it is safe as PID 1; run with --init (docker, podman)
# if the exec loader's programs leave orphans to reap.
set -eu

if [ "${1:-}" = "mount" ]; then
	# Dead devfsd mounts: stat fails (ENOTCONN); live ones answer.
	# (/proc/self/mounts escapes a space as \040: such paths are not handled.)
	while read -r _ target fstype _; do
		if [ "$fstype" = fuse.devfsd ] && ! timeout 2 stat -- "$target" >/dev/null 2>&1; then
			echo "devfsd-entrypoint: removing the dead devfsd mount on $target" >&2
			umount -l "$target" || true
		fi
	done </proc/self/mounts
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
		mkdir -p "$dir"
	fi
	# The mount points of --view=FILE views (a top-level "mountpoint:"
	# line of the view file), which must exist too.
	for a in "$@"; do
		case "$a" in
		--view=*)
			mp=$(sed -n 's/^mountpoint:[[:space:]]*//p' "${a#--view=}" | tr -d "\"'" | head -n 1)
			if [ -n "$mp" ]; then mkdir -p "$mp"; fi
			;;
		esac
	done
fi
exec /usr/bin/devfsd "$@"
