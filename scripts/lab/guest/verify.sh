#!/usr/bin/env bash
# Builds the real guest, boots it as labguest-verify on one lab host and checks what the
# tests will rely on: agent answer time, the writer, freeze/thaw, a quiesced external
# disk-only snapshot, clean shutdown (ACPI and agent). Prints one figure a line, then
# removes everything it made (the domain, its snapshot metadata, disks and overlays).
#
# Usage: verify.sh [base|host13] [LABDIR]     (root; LABDIR default REPO/.lab)
#   base    the base lab's libvirt (URI from LABDIR/lab.json)
#   host13  the Debian 13 host, through `chroot ROOT virsh` (ROOT, URI from LABDIR/host13/host.json)
# Exit status: 0 when every check passed, 1 when one failed, 2 on a usage/setup error.
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
TARGET=${1:-base}
LAB=${2:-$REPO/.lab}
die() { echo "verify.sh: $*" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || die "run as root"
[[ -d $LAB ]] || die "no lab folder $LAB (bash scripts/lab.sh up)"
LAB=$(cd "$LAB" && pwd)
json() { node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); console.log(j[process.argv[2]] ?? "")' "$1" "$2"; }

case $TARGET in
  base)
    URI=$(json "$LAB/lab.json" libvirtUri)
    V() { virsh -q -c "$URI" "$@"; }
    PIDDIR=/run/libvirt/qemu ;;
  host13)
    [[ -f $LAB/host13/host.json ]] || die "no $LAB/host13/host.json (bash scripts/lab/host13.sh up $LAB)"
    HROOT=$(json "$LAB/host13/host.json" rootDir)
    URI=$(json "$LAB/host13/host.json" libvirtUri)
    # The root's own virsh reaches the root's libvirtd through its /run; the guest's files
    # must be under LABDIR, which is bound into the root at the same path.
    V() { chroot "$HROOT" virsh -q -c "$URI" "$@"; }
    PIDDIR=$HROOT/run/libvirt/qemu ;;
  *) die "usage: verify.sh [base|host13] [LABDIR]" ;;
esac
V version --daemon >/dev/null 2>&1 || die "$TARGET: libvirt at $URI does not answer (is the lab up?)"

NAME=labguest-verify
GUEST=$LAB/guest
SCR=$LAB/guest-scratch/$TARGET # under LABDIR: host13's qemu sees the same path
DISK=$SCR/$NAME.qcow2
mkdir -p "$LAB/guest-scratch"
exec 9>"$LAB/guest-scratch/$TARGET.lock" # one verify per host at a time: the name is fixed
flock -n 9 || die "another verify.sh runs on $TARGET"

now() { date +%s%N; }
ms() { echo $(( ($(now) - $1) / 1000000 )); }
fig() { printf '%-46s %s\n' "$1" "$2"; }
FAILS=0
check() { # check LABEL OK? DETAIL
  if [[ $2 == 1 ]]; then fig "ok   $1" "$3"; else fig "FAIL $1" "$3"; FAILS=$((FAILS + 1)); fi
}
gt() { [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ ]] && (( $1 > $2 )) && echo 1; } # "1" if A > B
oneline() { tr '\n' ' ' <<<"$1" | sed 's/  */ /g; s/ $//'; }
exists() { V dominfo "$NAME" >/dev/null 2>&1; }
state() { V domstate "$NAME" 2>/dev/null; }
remove_domain() { # only ever our own fixed name
  if exists; then
    [[ $(state) == "shut off" ]] || V destroy "$NAME" >/dev/null 2>&1 || true
    V undefine "$NAME" --snapshots-metadata >/dev/null 2>&1 || V undefine "$NAME" >/dev/null
  fi
}
cleanup() {
  remove_domain || echo "verify.sh: could not remove $NAME on $TARGET" >&2
  rm -rf "$SCR"
}

# ms from START_NS until guest-ping answers, or "timeout" after BOUND seconds
wait_agent() {
  local t0=$1 deadline=$(( $(now) + ${2:-60} * 1000000000 ))
  while (( $(now) < deadline )); do
    V qemu-agent-command "$NAME" '{"execute":"guest-ping"}' >/dev/null 2>&1 && { ms "$t0"; return 0; }
    sleep 0.1
  done
  echo timeout; return 1
}
# ms until the domain is shut off, or "timeout"
wait_off() {
  local t0=$1 deadline=$(( $(now) + ${2:-30} * 1000000000 ))
  while (( $(now) < deadline )); do
    [[ $(state) == "shut off" ]] && { ms "$t0"; return 0; }
    sleep 0.1
  done
  echo timeout; return 1
}
status() { V qemu-agent-command "$NAME" '{"execute":"guest-fsfreeze-status"}' 2>&1 | tr -d '\n'; }
# the raw counter from the HOST (qemu-io -U -r through the whole backing chain)
raw() { node "$HERE/counter.cjs" "${1:-$(V domblklist "$NAME" | awk '$1 == "vda" { print $2 }')}" | sed -n 's/.*"counter":\([0-9]*\).*/\1/p'; }
file_info() { node "$HERE/counter.cjs" "$1" --file 2>&1; } # the ext4's /counter, from a copy
boot() {
  local t a
  t=$(now); V start "$NAME" >/dev/null; fig "     virsh start returned" "$(ms "$t") ms"
  a=$(wait_agent "$t") || true
  check "$1: agent answers guest-ping" "$([[ $a != timeout ]] && echo 1)" "$a ms after virsh start"
  [[ $a != timeout ]] || { tail -n 20 "$SCR/console.log" >&2; exit 1; }
}

T_ALL=$(now)
fig "host" "$TARGET: libvirt $(V version --daemon | sed -n 's/^Running against daemon: //p'), $(V version --daemon | sed -n 's/^Running hypervisor: //p'); machine $(nproc) cpus, load $(cut -d' ' -f1 /proc/loadavg)"
t=$(now)
bash "$HERE/build.sh" "$GUEST" 2>&1 | sed 's/^/     /'
fig "     build.sh" "$(ms "$t") ms"

remove_domain # a labguest-verify left by a killed run
rm -rf "$SCR"; mkdir -p "$SCR"
trap cleanup EXIT
trap 'exit 143' INT TERM # so a killed run still runs the EXIT trap
qemu-img create -q -f qcow2 "$DISK" 64M
# Always TCG: this machine's KVM (kvm_pvm) can't boot Linux (NOTES §7).
node "$HERE/domain.cjs" --name "$NAME" --virt-type qemu --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.gz" \
  --disk "$DISK" --serial-log "$SCR/console.log" >"$SCR/$NAME.xml"
V define "$SCR/$NAME.xml" >/dev/null
fig "guest" "$(sed -n 's/.*"kernelRelease": "\(.*\)".*/\1/p' "$GUEST/manifest.json"), qemu-ga $(sed -n 's/.*"qemuGaVersion": "\(.*\)".*/\1/p' "$GUEST/manifest.json"), type qemu (TCG), 128 MiB"

# -------------------------------------------- first boot, ACPI shutdown ---
boot "boot 1 (makes the ext4)"
sleep 1
t=$(now); out=$(V shutdown "$NAME" --mode acpi 2>&1) && rc=0 || rc=$?
a=$(wait_off "$t") || true
# The guest logs "labguest: poweroff" from /sbin/shutdown (run by acpid): not a hard power-off.
check "virsh shutdown --mode acpi" "$([[ $rc == 0 && $a != timeout ]] && grep -q 'labguest: poweroff' "$SCR/console.log" && echo 1)" "rc=$rc, shut off after $a ms, console: $(grep -c 'labguest: poweroff' "$SCR/console.log") poweroff line"
f=$(file_info "$DISK")
check "ext4 clean after the ACPI shutdown" "$(grep -q '"clean":true' <<<"$f" && echo 1)" "$f"

# ----------------------------------------------- second boot, the writer ---
boot "boot 2 (ext4 exists)"
fig "     qemu RSS" "$(( $(awk '/^VmRSS/ { print $2 }' "/proc/$(cat "$PIDDIR/$NAME.pid")/status") / 1024 )) MiB"
c1=$(raw); sleep 2; c2=$(raw)
check "writer counter advances" "$(gt "$c2" "$c1")" "$c1 -> $c2 over 2 s (raw sector, read from the host)"

# ----------------------------------------------------------- freeze/thaw ---
t=$(now); out=$(V domfsfreeze "$NAME" 2>&1) && rc=0 || rc=$?
fig "     virsh domfsfreeze" "rc=$rc, $(ms "$t") ms $(oneline "$out")"
s=$(status)
check "guest-fsfreeze-status after domfsfreeze" "$([[ $s == *'"frozen"'* ]] && echo 1)" "$s"
sleep 0.6 # a raw write already past its fsync may still land
f1=$(raw); sleep 1.5; f2=$(raw)
check "counter stops while frozen" "$([[ -n $f1 && $f1 == "$f2" ]] && echo 1)" "$f1, 1.5 s later $f2"
t=$(now); out=$(V domfsthaw "$NAME" 2>&1) && rc=0 || rc=$?
fig "     virsh domfsthaw" "rc=$rc, $(ms "$t") ms $(oneline "$out")"
s=$(status)
check "guest-fsfreeze-status after domfsthaw" "$([[ $s == *'"thawed"'* ]] && echo 1)" "$s"
sleep 1.5; f3=$(raw)
check "counter resumes after thaw" "$(gt "$f3" "$f2")" "$f2 -> $f3"

# ------------------------------------- quiesced external disk-only snapshot ---
t=$(now); out=$(V snapshot-create-as "$NAME" s1 --disk-only --quiesce --atomic 2>&1) && rc=0 || rc=$?
check "snapshot-create-as s1 --disk-only --quiesce --atomic" "$([[ $rc == 0 ]] && echo 1)" "rc=$rc, $(ms "$t") ms: $(oneline "$out")"
s=$(status)
check "guest thawed after the snapshot" "$([[ $s == *'"thawed"'* ]] && echo 1)" "$s"
top=$(V domblklist "$NAME" | awk '$1 == "vda" { print $2 }')
check "vda now on an overlay" "$([[ $top != "$DISK" && -f $top ]] && echo 1)" "$top"
f=$(file_info "$DISK")
check "snapshot's base: ext4 clean (quiesced)" "$(grep -q '"clean":true' <<<"$f" && echo 1)" "$f"
o1=$(raw); sleep 1.5; o2=$(raw)
check "counter advances on the overlay" "$(gt "$o2" "$o1")" "$o1 -> $o2"

# ---------------------------------------------- shutdown through the agent ---
t=$(now); out=$(V shutdown "$NAME" 2>&1) && rc=0 || rc=$?
a=$(wait_off "$t") || true
check "virsh shutdown (default: agent)" "$([[ $rc == 0 && $a != timeout ]] && grep -q 'labguest: poweroff' "$SCR/console.log" && echo 1)" "rc=$rc, shut off after $a ms, console: $(grep -c 'labguest: poweroff' "$SCR/console.log") poweroff line"
f=$(file_info "$top")
check "ext4 clean after it (overlay chain)" "$(grep -q '"clean":true' <<<"$f" && echo 1)" "$f"

cleanup; trap - EXIT
check "cleanup" "$( ! exists && [[ ! -e $SCR ]] && echo 1)" "$NAME undefined, $SCR removed"
fig "total" "$(ms "$T_ALL") ms, $FAILS failed"
((FAILS == 0))
