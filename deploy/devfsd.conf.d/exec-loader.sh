#!/bin/sh
# An example program for the daemon's exec loader (devfsd.yaml:
# `loader: exec`, `exec_program: /usr/libexec/devfsd/exec-loader.sh`).
# It is run once per lookup of a missing name, with the name as its last
# argument and DEVNAME, DEVPATH, ACTION=lookup, MNTPNT in its environment,
# in a process group of its own, with / as its directory; it is killed
# after exec_timeout. It registers by printing lines on standard output:
#
#   register char|block PATH MAJOR MINOR [MODE [UID [GID]]]
#   register dir PATH [MODE [UID [GID]]]
#   register symlink PATH TARGET
#
# Exit 0: done (the lookup answers from the tree); another status: no
# module provides the name.
set -eu
name=$1
case "$name" in
dsp|mixer|audio)
	modprobe -q snd-pcm-oss 2>/dev/null || true
	echo "register char mixer 14 0 0660 0 29"
	echo "register char dsp 14 3 0660 0 29"
	echo "register char audio 14 4 0660 0 29"
	;;
net|net/tun)
	modprobe -q tun 2>/dev/null || true
	echo "register dir net 0755"
	echo "register char net/tun 10 200 0666"
	;;
*)
	exit 1
	;;
esac
