#!/usr/bin/env bash
# Keeps the lab's real Linux guest, lab-guest, defined and running on one lab host, and
# prints its lab.json domain entry (one JSON line) on stdout. Idempotent: a running guest
# is left alone; a missing disk or a definition from another lab folder is made again.
#
# Usage: ensure.sh base|host13 LABDIR [up|down]     (root; build.sh must have run into LABDIR/guest)
#   up    (default) define, start, wait for the agent, print the entry
#   down  destroy and undefine lab-guest on that host (its disk stays)
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET=${1:?usage: ensure.sh base|host13 LABDIR [up|down]}
LAB=$(cd "${2:?usage: ensure.sh base|host13 LABDIR [up|down]}" && pwd)
ACTION=${3:-up}
NAME=lab-guest
# Not "pulumi-libvirt-lab virt=...": lab.sh reads that title to learn the boot-sector domains' virt type.
TITLE="pulumi-libvirt-lab-guest dir=$LAB"
die() { echo "guest/ensure.sh: $*" >&2; exit 1; }
json() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); console.log(j[process.argv[2]] ?? "")' "$1" "$2"; }

case $TARGET in
  base)
    V() { timeout 60 virsh -q -c qemu:///system "$@"; }
    DISKDIR=$LAB/disks ;;
  host13)
    HROOT=$(json "$LAB/host13/host.json" rootDir)
    [[ -n $HROOT ]] || die "no rootDir in $LAB/host13/host.json"
    # The root's own virsh reaches the root's libvirtd; LABDIR is bound into the root at its own path.
    V() { timeout 60 chroot "$HROOT" virsh -q -c qemu:///system "$@"; }
    DISKDIR=$LAB/host13/disks ;;
  *) die "unknown host '$TARGET' (base or host13)" ;;
esac
DISK=$DISKDIR/$NAME.qcow2

state() { V domstate "$NAME" 2>/dev/null || true; }
remove() {
  [[ -z $(state) ]] && return 0
  [[ $(state) == "shut off" ]] || V destroy "$NAME" >/dev/null 2>&1 || true
  V undefine "$NAME" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 || V undefine "$NAME" >/dev/null
}

if [[ $ACTION == down ]]; then remove; exit 0; fi
[[ $ACTION == up ]] || die "unknown action '$ACTION' (up or down)"
[[ -f $LAB/guest/vmlinux && -f $LAB/guest/initramfs.gz ]] || die "no guest build in $LAB/guest (run build.sh)"

cur=$(state)
if [[ -n $cur ]]; then
  title=$(V desc "$NAME" --title 2>/dev/null || true)
  if [[ $title != "$TITLE" || ! -e $DISK ]]; then remove; cur=""; fi
fi
if [[ -z $cur ]]; then
  mkdir -p "$DISKDIR"
  # An empty disk: the guest makes its ext4 on first boot.
  [[ -e $DISK ]] || qemu-img create -q -f qcow2 "$DISK" 256M
  xml=$(mktemp "$DISKDIR/.lab-guest.XXXXXX.xml")
  node "$HERE/domain.cjs" --name "$NAME" --title "$TITLE" --kernel "$LAB/guest/vmlinux" --initrd "$LAB/guest/initramfs.gz" \
    --disk "$DISK" --virt-type qemu >"$xml"
  V define "$xml" >/dev/null
  rm -f "$xml"
  cur="shut off"
fi
ping() { V qemu-agent-command "$NAME" '{"execute":"guest-ping"}' >/dev/null 2>&1; }
wait_agent() { # seconds
  local i
  for ((i = 0; i < $1 * 5; i++)); do ping && return 0; sleep 0.2; done
  return 1
}
case $cur in
  running) ;;
  paused) V resume "$NAME" >/dev/null ;;
  *) V start "$NAME" >/dev/null ;;
esac
# Tests rely on the agent: wait for it here rather than in every test. After libvirtd was
# killed (the faults suite does that), libvirt can keep the agent marked broken ('not
# available due to an error') until the guest restarts: the guest is disposable, so restart it.
if ! wait_agent $([[ $cur == running ]] && echo 10 || echo 60); then
  echo "guest/ensure.sh: $NAME on $TARGET: its agent does not answer; restarting the guest" >&2
  V destroy "$NAME" >/dev/null 2>&1 || true
  V start "$NAME" >/dev/null
  wait_agent 60 || die "$NAME on $TARGET: the guest agent does not answer 60 s after a restart"
fi
printf '{ "name": "%s", "state": "running", "disk": "%s", "format": "qcow2", "writer": false, "guest": true }\n' "$NAME" "$DISK"
