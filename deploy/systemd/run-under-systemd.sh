#!/bin/bash
# run-under-systemd.sh: start devfsd@.service and devfsd-helper@.service
# under a real systemd (PID 1 of new PID, mount and cgroup namespaces) on a
# machine whose own PID 1 is not systemd, and check what the units promise:
# READY=1, the mount seen in systemd's (the "host's") mount namespace,
# reload, the helper attached, the kill test (20 SIGKILLs under load: 16
# of the daemon, which the unit's keeper starts again, and 4 of the keeper
# itself, which systemd starts again with the unit's file descriptor
# store, the mount and a view kept throughout: killload), an upgrade that
# the keeper follows, a clean stop; then that ProtectSystem= hides the
# mount (why the daemon unit does without it). As root:
#
#   bash deploy/systemd/run-under-systemd.sh
#
# The inner systemd must not touch the machine: its namespaces are
# private, /proc/sys is read-only, /run, /tmp, /var/tmp, /var/lib and
# /var/log are fresh tmpfs, and every unit other than the ones tested is
# masked (nothing of sysinit.target runs: no tmpfiles, sysctl, binfmt).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }

work=$(mktemp -d /var/cache/devfsd-systemd.XXXXXX) # not below a tmpfs of boot.sh
cg=devfsd-systemd-$$
cleanup() {
	# DEVFSD_SYSTEMD_LOG=FILE keeps the daemon's whole log, FILE.systemd
	# systemd's, FILE.helper the helper's status at the stop and
	# FILE.helperlog its log.
	if [ -n "${DEVFSD_SYSTEMD_LOG:-}" ]; then
		cp "$work/devfsd.log" "$DEVFSD_SYSTEMD_LOG" 2>/dev/null || true
		cp "$work/systemd.log" "$DEVFSD_SYSTEMD_LOG.systemd" 2>/dev/null || true
		cp "$work/helper.status" "$DEVFSD_SYSTEMD_LOG.helper" 2>/dev/null || true
		cp "$work/helper.log" "$DEVFSD_SYSTEMD_LOG.helperlog" 2>/dev/null || true
	fi
	[ -n "${sdpid:-}" ] && kill -KILL "$sdpid" 2>/dev/null || true
	sleep 0.2
	for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
		[ -d "$h/$cg" ] && find "$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

CGO_ENABLED=0 go build -o "$work/devfsd" ./cmd/devfsd
(cd deploy && CGO_ENABLED=0 go build -o "$work/killload" ./systemd/killload)
cp deploy/systemd/devfsd@.service deploy/systemd/devfsd-helper@.service deploy/systemd/devfsd.yaml "$work/"
printf 'LOOKUP .* MODLOAD\nREGISTER ^null$ PERMISSIONS root.root 0666\n' >"$work/devfsd.conf"

# Runs inside the new namespaces, then becomes systemd.
cat >"$work/boot.sh" <<'BOOT'
#!/bin/bash
set -euo pipefail
work=$1
mount --make-rprivate /
for d in /run /tmp /var/tmp /var/lib /var/log; do mount -t tmpfs -o mode=0755 tmpfs "$d"; done
chmod 1777 /tmp /var/tmp
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
# This cgroup namespace's root, for systemd.
if [ -d /sys/fs/cgroup/systemd ]; then
	umount -l /sys/fs/cgroup
	mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
	mkdir /sys/fs/cgroup/systemd /sys/fs/cgroup/unified
	mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
	mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
else
	umount -l /sys/fs/cgroup
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi
u=/run/systemd/system
mkdir -p $u /run/dtest/dev /run/dtest/views/v /etc/devfsd 2>/dev/null || true
# Mask every unit something wants at boot; only ours will run.
for w in /lib/systemd/system/*.wants /etc/systemd/system/*.wants /usr/lib/systemd/system/*.wants; do
	[ -d "$w" ] || continue
	for f in "$w"/*; do
		n=$(basename "$f")
		case "$n" in *@*.service|*.target) ;; *) ln -sf /dev/null "$u/$n" ;; esac
	done
done
for n in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
	systemd-udevd.service systemd-tmpfiles-setup.service systemd-sysctl.service \
	systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-remount-fs.service; do
	ln -sf /dev/null "$u/$n"
done
printf '[Unit]\nDescription=devfsd test\nDefaultDependencies=no\n' >$u/devfsd-test.target
sed -e "s#/usr/local/bin/devfsd#$work/devfsd#g; s#/etc/devfsd/devfsd.yaml#$work/devfsd.yaml#" \
	-e "s#\$DEVFSD_OPTS#--views-dir=/run/dtest/views \$DEVFSD_OPTS#" \
	-e "s#^\[Service\]#[Service]\nStandardOutput=append:$work/devfsd.log\nStandardError=append:$work/devfsd.log#" \
	"$work/devfsd@.service" >$u/devfsd@.service
sed -e "s#/usr/local/bin/devfsd#$work/devfsd#g; s#/etc/devfsd.conf#$work/devfsd.conf#" \
	-e "s#^\[Service\]#[Service]\nStandardOutput=append:$work/helper.log\nStandardError=append:$work/helper.log#" \
	"$work/devfsd-helper@.service" >$u/devfsd-helper@.service
export container=devfsd-test
exec /lib/systemd/systemd --system --unit=devfsd-test.target --log-target=console --show-status=no
BOOT
chmod +x "$work/boot.sh"

h=/sys/fs/cgroup
[ -d $h/systemd ] && mkdir -p $h/systemd/$cg $h/unified/$cg || mkdir -p $h/$cg
(
	if [ -d $h/systemd ]; then
		echo $BASHPID >$h/systemd/$cg/cgroup.procs
		echo $BASHPID >$h/unified/$cg/cgroup.procs
	else
		echo $BASHPID >$h/$cg/cgroup.procs
	fi
	exec unshare --pid --fork --mount --cgroup --mount-proc "$work/boot.sh" "$work"
) >"$work/systemd.log" 2>&1 &

# The inner PID 1, once it answers.
inside() { nsenter -t "$sdpid" -m -p -- "$@"; }
for _ in $(seq 100); do
	sdpid=$(pgrep -f -n "^/lib/systemd/systemd --system --unit=devfsd-test.target" || true)
	if [ -n "$sdpid" ] && inside systemctl is-system-running >/dev/null 2>&1; then break; fi
	sleep 0.1
done
echo "== systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) is PID 1 of its namespace (host pid $sdpid): $(inside systemctl is-system-running || true)"

mnt=/run/dtest/dev
unit=$(systemd-escape --path --template=devfsd@.service $mnt)
inst=${unit#devfsd@}
inst=${inst%.service}
fail() {
	echo "FAIL: $*"
	inside systemctl status --no-pager "devfsd*" || true
	tail -50 "$work/systemd.log"
	echo "-- the daemon's log (warnings, errors, starts):"
	grep -v -e '"level":"debug"' -e '"msg":"miss"' "$work/devfsd.log" 2>/dev/null |
		grep -e '"level":"warn"' -e '"level":"error"' -e '"msg":"starting"' -e '"msg":"serving the kept' -e '^devfsd:' | tail -80 || true
	exit 1
}

echo "== systemctl start $unit"
inside systemctl start "$unit" || fail "start"
inside systemctl is-active "$unit"
mainpid=$(inside systemctl show -p MainPID --value "$unit")
# The daemon: the keeper's child (its command line says mount).
daemonpid() {
	local k
	for k in $(inside sh -c "cat /proc/$1/task/*/children" 2>/dev/null); do
		inside cat /proc/"$k"/cmdline 2>/dev/null | tr '\0' ' ' | grep -q ' mount ' && { echo "$k"; return 0; }
	done
	return 0 # none (between two daemons, or a successor not yet the keeper's child)
}
dpid=$(daemonpid "$mainpid")
echo "MainPID $mainpid (the keeper, inner), daemon $dpid; $(inside findmnt -n -o SOURCE,FSTYPE,OPTIONS $mnt)"
[ -n "$dpid" ] || fail "no daemon under the keeper"
[ "$(inside readlink /proc/1/ns/mnt)" = "$(inside readlink /proc/$dpid/ns/mnt)" ] ||
	fail "the daemon has a mount namespace of its own"
inside sh -c "grep -E '^Cap(Bnd|Eff)|NoNewPrivs|Seccomp:' /proc/$dpid/status"
inside mknod $mnt/test-null c 1 3 && inside chmod 0666 $mnt/test-null && inside stat -c '%n %F %t:%T %a' $mnt/test-null ||
	fail "mknod through the mount"
sock=/run/devfsd/$inst.sock
inside "$work/devfsd" ctl --socket "$sock" stats >"$work/stats.txt" && head -3 "$work/stats.txt"

echo "== systemctl reload $unit"
inside systemctl reload "$unit"
for _ in $(seq 50); do
	inside curl -s --unix-socket "$sock" http://devfsd/metrics | grep -q 'devfsd_reloads_total{result="ok"} 1' && break
	sleep 0.1
done
inside curl -s --unix-socket "$sock" http://devfsd/metrics | grep 'devfsd_reloads_total{result="ok"} 1' || fail "reload"

hunit=devfsd-helper@$inst.service
echo "== systemctl start $hunit"
inside systemctl start "$hunit" || fail "helper start"
inside systemctl is-active "$hunit"
inside "$work/devfsd" ctl --socket "$sock" stats --json | grep -E '"attached": *true' || fail "helper not attached"

echo "== a view through the control socket (kept in the descriptor store too)"
printf 'mountpoint: /run/dtest/views/v\nallow: [null, zero, full, tty, "p-*"]\n' >"$work/view.yaml"
inside "$work/devfsd" ctl --socket "$sock" view add "$work/view.yaml" || fail "view add"

echo "== the kill test: 8 workers, 10s, 20 SIGKILLs: 16 of the daemon (the keeper restarts it), 4 of the keeper (systemd restarts the unit from its fd store)"
before=$(inside systemctl show -p NRestarts --value "$unit")
kbefore=$(grep -c -e 'keeper: the daemon was killed; starting it again' -e 'a thread of it is stuck in the kernel; starting' "$work/devfsd.log" || true)
dev=$(inside stat -c %d $mnt)
inside "$work/killload" --unit "$unit" --mount $mnt --view /run/dtest/views/v --log "$work/devfsd.log" --keeper-kills 4 \
	--view-allow 'null,zero,full,tty,p-*' --socket "$sock" || fail "the kill test"
after=$(inside systemctl show -p NRestarts --value "$unit")
kafter=$(grep -c -e 'keeper: the daemon was killed; starting it again' -e 'a thread of it is stuck in the kernel; starting' "$work/devfsd.log" || true)
stuck=$(grep -c 'a thread of it is stuck in the kernel; starting' "$work/devfsd.log" || true)
echo "restarts by systemd $before -> $after, by the keeper $kbefore -> $kafter ($stuck past a stuck thread), mount device $dev -> $(inside stat -c %d $mnt), $(inside systemctl is-active "$unit")"
for _ in $(seq 50); do inside systemctl is-active -q "$hunit" && break; sleep 0.1; done
echo "helper: $(inside systemctl show -p ActiveState -p SubState -p NRestarts -p Result "$hunit" | tr '\n' ' ')"
inside systemctl is-active -q "$hunit" || fail "the helper is not running after the kill test"
[ $((after - before)) = 4 ] || fail "systemd restarted the unit $((after - before)) times, want 4 (the keeper's kills)"
[ $((kafter - kbefore)) = 16 ] || fail "the keeper restarted the daemon $((kafter - kbefore)) times, want 16 (the daemon's kills)"
[ "$(inside stat -c %d $mnt)" = "$dev" ] || fail "the mount was made again, not kept"
inside stat -c '%n %F %t:%T %a' $mnt/test-null || fail "the node made before the kills is gone"
# pts and shm (O_PATH descriptors, stored with FDPOLL=0) came back from
# systemd's store after each kill of the keeper.
grep -q "special mounts were not given back" "$work/devfsd.log" && fail "systemd's store did not give back the special mounts' descriptors"
echo "given back by systemd at each start of the keeper: $(grep -o '"keeper: descriptors given back by the service manager","descriptors":[0-9]*' "$work/devfsd.log" | grep -o '[0-9]*$' | tr '\n' ' ')descriptors"

echo "== devfsd ctl upgrade: the keeper follows the new daemon; the new one, killed, is started again"
mainpid=$(inside systemctl show -p MainPID --value "$unit")
old=$(daemonpid "$mainpid")
inside "$work/devfsd" ctl --socket "$sock" upgrade || fail "upgrade"
for _ in $(seq 100); do
	new=$(daemonpid "$mainpid")
	[ -n "$new" ] && [ "$new" != "$old" ] && break
	sleep 0.1
done
echo "daemon $old -> $new under the keeper $mainpid (MainPID now $(inside systemctl show -p MainPID --value "$unit"))"
[ "$(inside systemctl show -p MainPID --value "$unit")" = "$mainpid" ] || fail "the keeper is no longer the main process after the upgrade"
[ -n "$new" ] && [ "$new" != "$old" ] || fail "no new daemon under the keeper after the upgrade"
grep -q '"keeper: the daemon handed over to its successor; following it"' "$work/devfsd.log" || fail "the keeper did not follow the upgrade"
inside kill -KILL "$new"
for _ in $(seq 100); do
	again=$(daemonpid "$mainpid")
	[ -n "$again" ] && [ "$again" != "$new" ] && inside stat $mnt/test-null >/dev/null 2>&1 && break
	sleep 0.1
done
echo "the upgraded daemon $new killed; the keeper started $again"
[ -n "$again" ] && [ "$again" != "$new" ] || fail "the keeper did not start the upgraded daemon again"
[ "$(inside stat -c %d $mnt)" = "$dev" ] || fail "the mount was made again after the upgrade"

echo "== systemctl stop $unit (the helper stops with it)"
inside systemctl stop "$unit"
inside systemctl status --no-pager -n 30 "$hunit" >"$work/helper.status" 2>&1 || true
echo "daemon: $(inside systemctl is-active "$unit" || true), helper: $(inside systemctl is-active "$hunit" || true)," \
	"result $(inside systemctl show -p Result --value "$unit"), status $(inside systemctl show -p ExecMainStatus --value "$unit")"
[ "$(inside systemctl is-active "$hunit" || true)" = inactive ] || fail "the helper did not stop cleanly"
inside findmnt $mnt >/dev/null && fail "still mounted after stop"
inside findmnt /run/dtest/views/v >/dev/null && fail "the view is still mounted after stop"
echo "unmounted"

echo "== with ProtectSystem=full added (a drop-in), the mount stays inside the service"
inside mkdir -p /run/systemd/system/$unit.d
inside sh -c "printf '[Service]\nProtectSystem=full\n' >/run/systemd/system/$unit.d/ns.conf"
inside systemctl daemon-reload
inside systemctl start "$unit" || fail "start with ProtectSystem"
mainpid=$(inside systemctl show -p MainPID --value "$unit")
echo "service sees: $(inside nsenter -t "$mainpid" -m findmnt -n -o FSTYPE $mnt || echo nothing)"
echo "PID 1 sees:   $(inside findmnt -n -o FSTYPE $mnt || echo nothing)"
inside findmnt $mnt >/dev/null && fail "the mount reached the host with ProtectSystem=full"
inside systemctl stop "$unit"
echo "PASS"
