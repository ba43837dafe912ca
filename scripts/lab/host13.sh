#!/usr/bin/env bash
# The lab's second host: Debian 13 "trixie" (libvirt 11.3, qemu 10.0) in a chroot that lives
# outside the checkout, with its own network namespace and address, its own sshd and libvirtd,
# and the same four small domains as the base lab.
#
#   bash scripts/lab/host13.sh up LABDIR           build or unpack the root if needed, start what
#                                                  is not running (idempotent, fast on a re-run)
#   bash scripts/lab/host13.sh down LABDIR         destroy its domains, stop its daemons, unmount
#                                                  everything, remove the veth and the namespace
#   bash scripts/lab/host13.sh status LABDIR       print what runs
#   bash scripts/lab/host13.sh remove-root LABDIR  down, then delete the root (the tarball stays)
#
# LABDIR is the base lab's folder (.lab; `scripts/lab.sh up` must have made its client keys).
# This host's state goes to LABDIR/host13, its root tarball to LABDIR/cache, and LABDIR itself
# is bind-mounted into the root at the same path, so a file under LABDIR is the same file on
# both hosts.
#
# Env: LAB13_ROOT_BASE (default /var/lib/pulumi-libvirt-lab/debian13), LAB_VIRT_TYPE=kvm|qemu
#      (default: keep the existing domains' type, else probe KVM for real with this host's qemu),
#      LAB13_MIRROR, LAB13_SECURITY_MIRROR (Debian's by default).
# Runs as root. What it does like scripts/lab.sh (daemons, keys, sshd, labuser, domains, host.json)
# is in scripts/lab/lib.sh; this file says what this host has of its own: the root, its mounts, the
# network namespace, and how its daemons start there.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF="bash scripts/lab/host13.sh"
CMD=${1:-}
if [[ $# -ne 2 || ! $CMD =~ ^(up|down|status|remove-root)$ ]]; then
  echo "usage: $SELF up|down|status|remove-root LABDIR" >&2
  exit 2
fi
LAB=$(realpath -m -- "$2")

NAME=debian13
ROOT_BASE=$(realpath -m -- "${LAB13_ROOT_BASE:-/var/lib/pulumi-libvirt-lab/debian13}")
ROOT="$ROOT_BASE/root"
BUILD="$ROOT_BASE/root.build"   # a root being built or unpacked; renamed to ROOT when complete
STATE="$LAB/host13"
CACHE="$LAB/cache/debian13-root.tar.zst"
SUITE=trixie
MIRROR=${LAB13_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${LAB13_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
NETNS=plvlab13
VETH_HOST=plv13h   # base side of the veth pair
VETH_NS=plv13n     # namespace side
HOST_IP=10.213.13.1
NS_IP=10.213.13.2
PREFIX=30
# What lib.sh needs to know of this host (see its header).
LOG_TAG=host13
SCRIPT=scripts/lab/host13.sh
SSH_ADDR=$NS_IP
SSH_PORT=22
HOST_JSON="$STATE/host.json"
# /usr/local/bin/virsh: the tests' dispatcher to a logging wrapper (test/support/virshWrapper.ts),
# which execs /usr/bin/virsh; sudo -n finds it first on its secure_path.
SUDO_VIRSH="/usr/bin/virsh, /usr/local/bin/virsh"
RESET_HINT="'$SELF remove-root $LAB' (drops the root's domain definitions; the tarball stays) and up again with it"
# OpenSSH 10 blocks a source address for a while after a burst of failed connections; every test client
# here comes from HOST_IP. (Debian 12's OpenSSH 9.2 does not know the option.)
SSHD_EXTRA="PerSourcePenalties no"
# libvirt-daemon-system is left out on purpose: it pulls in the default network (a bridge,
# dnsmasq and firewall rules). sysvinit-core satisfies the qemu driver's init dependency
# without systemd.
ROOT_PACKAGES=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
  qemu-utils openssh-server tini sudo sysvinit-core)
# Added after roots of this recipe existed: installed into an existing root in place (below), so adding
# one here never rebuilds the root (nor does a root unpacked from an older cache); a new root gets them
# with the others. ovmf for UEFI domains, swtpm for TPM ones (test/support/specialDomains.ts).
EXTRA_ROOT_PACKAGES=(ovmf swtpm swtpm-tools)
HOST_PACKAGES=(debootstrap zstd)
# A root (or tarball) made from another recipe is rebuilt, never patched.
RECIPE="v1 $SUITE minbase ${ROOT_PACKAGES[*]}"
RECIPE_FILE="etc/pulumi-libvirt-lab-root"   # inside the root

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# shellcheck source=lib.sh
source "$REPO/scripts/lab/lib.sh"

# Paths go into mountinfo matching, sshd_config and JSON unquoted-safe only if they are plain.
plain_path() { [[ $1 =~ ^/[A-Za-z0-9._/+-]+$ && $1 != *"/../"* && $1 != *"/./"* ]]; }
plain_path "$LAB" || die "LABDIR must be a plain absolute path (letters, digits, . _ - + /): $LAB"
plain_path "$ROOT_BASE" || die "LAB13_ROOT_BASE must be a plain absolute path: $ROOT_BASE"
[[ $ROOT_BASE =~ ^/[^/]+/.+ ]] || die "LAB13_ROOT_BASE is too shallow: $ROOT_BASE"
# `rm -rf LABDIR` or `git clean` of the checkout must never reach the root, and removing
# the root must never reach LABDIR except through the bind mount, which is checked below.
for p in "$LAB" "$REPO"; do
  [[ $ROOT_BASE/ != "$p"/* ]] || die "the root ($ROOT_BASE) must not be inside $p"
  [[ $p/ != "$ROOT_BASE"/* ]] || die "$p must not be inside the root folder $ROOT_BASE"
done

# Processes chrooted into our root: only this script, its daemons and their children run there.
pids_in_root() {
  local d
  for d in /proc/[0-9]*; do
    in_host "${d#/proc/}" && alive "${d#/proc/}" && echo "${d#/proc/}"
  done
  return 0
}

# ------------------------------------------------------------- mounts ---
# Mount points at or under $1 in this mount namespace, in mount order. Paths are plain
# (checked above), so mountinfo's octal escapes never matter.
mounts_under() { awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo; }
is_mounted() { awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# "kind source target option" for each mount a root gets; $2=1 adds LABDIR at its own path.
# /dev and /sys are bound read-only: devices still open read-write (the flag does not apply
# to device nodes), but a mistaken recursive delete of the root cannot unlink the base
# host's /dev. /dev/pts stays writable for the guests' serial ptys.
mount_specs() {
  local r=$1
  printf '%s\n' "bind /proc $r/proc rw" "bind /sys $r/sys ro" "bind /dev $r/dev ro" \
    "bind /dev/pts $r/dev/pts rw" "tmpfs $NETNS-run $r/run 755" "tmpfs $NETNS-tmp $r/tmp 1777"
  [[ ${2:-0} != 1 ]] || printf '%s\n' "bind $LAB $r$LAB rw"
}

mount_one() { # kind source target option
  local kind=$1 src=$2 dst=$3 opt=$4
  mkdir -p "$dst"
  if [[ $kind == bind ]]; then
    mount --bind "$src" "$dst"
    [[ $opt != ro ]] || mount -o remount,bind,ro "$dst"
  else
    mount -t tmpfs -o "mode=$opt,nosuid,nodev" "$src" "$dst"
  fi
  # Private: nothing mounted later under the base's /dev, /proc or LABDIR shows up in the
  # root, and an unmount in the root never propagates back.
  mount --make-private "$dst"
}

# Is the LABDIR bind still the current LABDIR? After `rm -rf LABDIR` and a re-created
# LABDIR, the old bind keeps showing the deleted directory.
lab_bind_current() {
  [[ -d $LAB && -d $ROOT$LAB ]] && [[ $(stat -c %d:%i "$LAB") == "$(stat -c %d:%i "$ROOT$LAB")" ]]
}

missing_mounts() { # root with_lab: how many of its mounts are missing
  local kind src dst opt n=0
  while read -r kind src dst opt; do is_mounted "$dst" || n=$((n + 1)); done < <(mount_specs "$1" "$2")
  echo "$n"
}

# Mounts what is missing; NEW_MOUNTS counts them. $2=1: include LABDIR.
NEW_MOUNTS=0
ensure_mounts() {
  local r=$1 with_lab=${2:-0} kind src dst opt
  NEW_MOUNTS=0
  while read -r kind src dst opt; do
    is_mounted "$dst" && continue
    mount_one "$kind" "$src" "$dst" "$opt"
    NEW_MOUNTS=$((NEW_MOUNTS + 1))
  done < <(mount_specs "$r" "$with_lab")
}

# Unmount everything at or under $1, innermost (last mounted) first, one at a time, never
# lazily: a lazy unmount would hide a mount that is still in use.
unmount_all_under() {
  local r=$1 list p i n=0
  for ((i = 0; i < 100; i++)); do
    list=$(mounts_under "$r")
    [[ -n $list ]] || { ((n == 0)) || did "unmounted $n mounts under $r"; return 0; }
    p=$(tail -n 1 <<<"$list")
    if ! umount -- "$p" 2>/dev/null; then
      die "cannot unmount $p (in use? try: fuser -vm $p); nothing under $r was removed"
    fi
    n=$((n + 1))
  done
  die "still mounted under $r after 100 unmounts: $(mounts_under "$r" | tr '\n' ' ')"
}

# The only recursive delete in this script. It refuses while anything is mounted inside:
# --one-file-system alone would not stop it, because the LABDIR bind is on the same
# filesystem (same st_dev) as the root.
safe_rm_tree() {
  local d=$1 m
  [[ $d == "$ROOT_BASE"/?* ]] || die "refusing to remove $d: not inside $ROOT_BASE"
  [[ -e $d ]] || return 0
  m=$(mounts_under "$d")
  [[ -z $m ]] || die "refusing to remove $d: mounted inside it: $(tr '\n' ' ' <<<"$m")"
  rm -rf --one-file-system -- "$d"
}

# -------------------------------------------------------------- root ---
root_ready() { [[ -f $ROOT/$RECIPE_FILE && $(cat "$ROOT/$RECIPE_FILE") == "$RECIPE" ]]; }
cache_ready() { [[ -s $CACHE && -f $CACHE.recipe && $(cat "$CACHE.recipe") == "$RECIPE" ]]; }

# Remove a half-built root left by an interrupted run (its mounts are ours: ours or debootstrap's).
clean_build_dir() {
  [[ -e $BUILD ]] || return 0
  unmount_all_under "$BUILD"
  safe_rm_tree "$BUILD"
}

# Files of ours inside a root: /etc/hosts, /etc/hostname, the qemu.conf block (QEMU_CONF_CHANGED=1
# if qemu.conf changed: libvirtd must then restart).
write_root_files() {
  local r=$1 tmp
  # Minbase has no /etc/hosts; libvirtd then warns about getaddrinfo of its hostname.
  tmp=$(mktemp "$r/etc/.hosts.XXXXXX")
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n%s\t%s.lab\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$NAME" "$NS_IP" "$NAME" >"$tmp"
  chmod 644 "$tmp"
  replace_if_changed "$tmp" "$r/etc/hosts" || true
  tmp=$(mktemp "$r/etc/.hostname.XXXXXX")
  echo "$NAME" >"$tmp"; chmod 644 "$tmp"
  replace_if_changed "$tmp" "$r/etc/hostname" || true
  write_qemu_conf "$r/etc/libvirt/qemu.conf"
}

chroot_apt() { # root, apt-get args...
  local r=$1; shift
  chroot "$r" "${CHROOT_ENV[@]}" DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

build_root() {
  local t0 t1 t2
  t0=$(date +%s%N)
  install_missing "" "$STATE/build.log" "${HOST_PACKAGES[@]}"
  clean_build_dir
  mkdir -p "$BUILD"
  # If we die from here on, unmount whatever is mounted in the half-built root;
  # the next run removes the rest.
  ON_EXIT+=("mounts_under '$BUILD' | tac | while read -r m; do umount -- \"\$m\"; done")
  say "debootstrap --variant=minbase $SUITE (about 30 s; log: $STATE/build.log)"
  printf '\n==== %s debootstrap %s\n' "$(date -Is)" "$SUITE" >>"$STATE/build.log"
  debootstrap --variant=minbase "$SUITE" "$BUILD" "$MIRROR" >>"$STATE/build.log" 2>&1 ||
    { tail -n 30 "$STATE/build.log" >&2; die "debootstrap failed (log: $STATE/build.log)"; }
  t1=$(date +%s%N)
  cat >"$BUILD/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
  # The base host's apt may accept an old Release file (a pinned snapshot mirror); so must the root's.
  if apt-config dump 2>/dev/null | grep -qx 'Acquire::Check-Valid-Until "false";'; then
    printf 'Acquire::Check-Valid-Until "false";\n' >"$BUILD/etc/apt/apt.conf.d/99pulumi-libvirt-lab"
  fi
  # Package scripts must not start services: there is no init system in the root.
  printf '#!/bin/sh\nexit 101\n' >"$BUILD/usr/sbin/policy-rc.d"
  chmod 755 "$BUILD/usr/sbin/policy-rc.d"
  ensure_mounts "$BUILD" 0
  say "installing libvirt, qemu and openssh in the root (13 to 30 s)"
  printf '\n==== %s apt-get install %s\n' "$(date -Is)" "${ROOT_PACKAGES[*]}" >>"$STATE/build.log"
  { chroot_apt "$BUILD" update -qq &&
    chroot_apt "$BUILD" install -y -qq --no-install-recommends "${ROOT_PACKAGES[@]}" "${EXTRA_ROOT_PACKAGES[@]}" &&
    chroot_apt "$BUILD" clean; } >>"$STATE/build.log" 2>&1 ||
    { tail -n 30 "$STATE/build.log" >&2; die "apt-get in the root failed (log: $STATE/build.log)"; }
  chroot "$BUILD" "${CHROOT_ENV[@]}" dpkg-query -W -f='${Package} ${Version}\n' \
    libvirt-daemon qemu-system-x86 openssh-server tini >"$STATE/packages.txt"
  unmount_all_under "$BUILD"
  rm -f "$BUILD/usr/sbin/policy-rc.d"
  # apt's lists and caches are 200 MB the lab never needs; nothing is mounted here now.
  find "$BUILD/var/lib/apt/lists" "$BUILD/var/cache/apt" -xdev -type f -delete
  # Its host key is the stable one in LABDIR, not keys baked into a tarball.
  rm -f "$BUILD"/etc/ssh/ssh_host_*
  write_root_files "$BUILD"
  echo "$RECIPE" >"$BUILD/$RECIPE_FILE"
  mv -T "$BUILD" "$ROOT"
  t2=$(date +%s%N)
  did "built the root: debootstrap $(((t1 - t0) / 1000000)) ms, packages $(((t2 - t1) / 1000000)) ms"
  write_cache
}

# EXTRA_ROOT_PACKAGES a root (built or unpacked before they were added) lacks, installed in place with
# the root's own apt. Needs the root's mounts (/proc, /dev); services stay stopped (policy-rc.d).
ensure_extra_packages() {
  install_missing "$ROOT" "$STATE/build.log" "${EXTRA_ROOT_PACKAGES[@]}"
  [[ -n $APT_INSTALLED ]] || return 0
  in_root apt-get clean
  find "$ROOT/var/lib/apt/lists" "$ROOT/var/cache/apt" -xdev -type f -delete
}

write_cache() {
  local t0 tmp
  t0=$(date +%s%N)
  [[ -z $(mounts_under "$ROOT") ]] || die "not writing the cache: something is mounted in $ROOT"
  mkdir -p "$LAB/cache"
  tmp="$CACHE.tmp.$$"
  ON_EXIT+=("rm -f '$tmp'")
  tar -C "$ROOT" --one-file-system --numeric-owner --xattrs --xattrs-include='*' -cf - . |
    zstd -q -T0 -3 >"$tmp"
  mv -f "$tmp" "$CACHE"
  echo "$RECIPE" >"$CACHE.recipe"
  did "cached the root in $CACHE ($(du -m "$CACHE" | cut -f1) MB, $((($(date +%s%N) - t0) / 1000000)) ms)"
}

unpack_cache() {
  local t0; t0=$(date +%s%N)
  clean_build_dir
  mkdir -p "$BUILD"
  say "unpacking the root from $CACHE"
  zstd -q -dc "$CACHE" | tar -C "$BUILD" --numeric-owner --xattrs --xattrs-include='*' -xpf - ||
    die "unpacking $CACHE failed"
  [[ -f $BUILD/$RECIPE_FILE && $(cat "$BUILD/$RECIPE_FILE") == "$RECIPE" ]] ||
    die "$CACHE does not hold a root of this recipe; remove it to rebuild"
  mv -T "$BUILD" "$ROOT"
  did "unpacked the root from the cache ($((($(date +%s%N) - t0) / 1000000)) ms)"
}

ensure_root() {
  root_ready && return 0
  if [[ -e $ROOT ]]; then
    [[ -z $(mounts_under "$ROOT") ]] ||
      die "$ROOT is incomplete or of another recipe and has mounts: run '$SELF down $LAB' first"
    say "removing the incomplete or outdated root $ROOT"
    safe_rm_tree "$ROOT"
  fi
  mkdir -p "$ROOT_BASE"
  if cache_ready; then
    install_missing "" "$STATE/build.log" "${HOST_PACKAGES[@]}"
    unpack_cache
  else
    build_root
  fi
}

# ----------------------------------------------------------- network ---
ensure_netns() {
  if [[ ! -e /run/netns/$NETNS ]]; then
    ip netns add "$NETNS"
    did "created network namespace $NETNS"
  fi
  if ! ip link show dev "$VETH_HOST" >/dev/null 2>&1; then
    local other
    other=$(ip -4 -o addr show | awk -v a="${HOST_IP%.*}." 'index($4, a) == 1 { print $2 }' | head -n 1)
    [[ -z $other ]] || die "the subnet ${HOST_IP%.*}.0/$PREFIX is already used on $other"
    ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS"
    # No IPv6 on the pair: no router solicitations or DAD chatter, only our IPv4 /30.
    sysctl -qw "net.ipv6.conf.$VETH_HOST.disable_ipv6=1" 2>/dev/null || true
    ip netns exec "$NETNS" sysctl -qw "net.ipv6.conf.$VETH_NS.disable_ipv6=1" 2>/dev/null || true
    did "created veth $VETH_HOST <-> $NETNS/$VETH_NS"
  fi
  ip -n "$NETNS" link show dev "$VETH_NS" >/dev/null 2>&1 ||
    die "$VETH_HOST exists but its peer is not in $NETNS: run '$SELF down $LAB' first"
  if ! ip -4 -o addr show dev "$VETH_HOST" | grep -q " inet $HOST_IP/$PREFIX "; then
    ip addr add "$HOST_IP/$PREFIX" dev "$VETH_HOST"; did "address $HOST_IP/$PREFIX on $VETH_HOST"
  fi
  if ! ip -n "$NETNS" -4 -o addr show dev "$VETH_NS" | grep -q " inet $NS_IP/$PREFIX "; then
    ip -n "$NETNS" addr add "$NS_IP/$PREFIX" dev "$VETH_NS"; did "address $NS_IP/$PREFIX in $NETNS"
  fi
  ip link set dev "$VETH_HOST" up
  ip -n "$NETNS" link set dev lo up
  ip -n "$NETNS" link set dev "$VETH_NS" up
}

remove_netns() {
  if ip link show dev "$VETH_HOST" >/dev/null 2>&1; then
    ip link del dev "$VETH_HOST"; did "deleted veth $VETH_HOST"
  fi
  if [[ -e /run/netns/$NETNS ]]; then
    ip netns del "$NETNS"; did "deleted network namespace $NETNS"
  fi
}

# ----------------------------------------------------------- daemons ---
# A daemon of this host runs in its network namespace (nsenter joins only the network, so
# it stays in the base mount namespace and `down` sees every mount it has to undo), with
# a hostname of its own (unshare --uts), chrooted into the root with a clean environment.
# Every step execs, so $! of `setsid "${IN_HOST[@]}" prog &` is prog's PID.
IN_HOST=(nsenter "--net=/run/netns/$NETNS" unshare --uts chroot "$ROOT" "${CHROOT_ENV[@]}"
  /bin/sh -c 'echo "$0" >/proc/sys/kernel/hostname && exec "$@"' "$NAME")

# Is our sshd in the network namespace that /run/netns/NAME names now? (lib.sh's ensure_sshd
# restarts it when the namespace was re-created under it.)
sshd_in_place() {
  [[ -e /run/netns/$NETNS ]] || return 1
  [[ $(readlink "/proc/$1/ns/net" 2>/dev/null) == "net:[$(stat -L -c %i "/run/netns/$NETNS")]" ]]
}

ensure_keys() { # the base lab's client keys, this host's own host key
  [[ -s $LAB/client_ed25519 && -s $LAB/client_ed25519.pub && -s $LAB/client_enc_ed25519.pub ]] ||
    die "no client keys in $LAB: bring the base lab up first (bash scripts/lab.sh up)"
  ensure_host_keys
}

# The encrypted key's passphrase stays out: it is in lab.json.
host_json_fields() {
  cat <<EOF
  "name": "$NAME",
  "rootDir": $(json_str "$ROOT"),
EOF
}

# ----------------------------------------------------------- commands ---
cmd_up() {
  ensure_root
  # Mounts missing under running daemons (someone unmounted them, or LABDIR was deleted and
  # re-created under a live bind): restart the daemons on fresh mounts.
  if is_mounted "$ROOT$LAB" && ! lab_bind_current; then
    say "the LABDIR bind in the root shows an old (deleted?) $LAB: remounting"
    stop_daemons
    umount -- "$ROOT$LAB"
  fi
  if [[ $(missing_mounts "$ROOT" 1) != 0 ]] && [[ -n $(ours_libvirtd_pid) || -n $(ours_sshd_pid) ]]; then
    say "mounts are missing under running daemons: restarting them"
    stop_daemons
  fi
  ensure_mounts "$ROOT" 1
  ((NEW_MOUNTS == 0)) || did "mounted $NEW_MOUNTS filesystems in $ROOT"
  lab_bind_current || die "$ROOT$LAB is not the same directory as $LAB"
  ensure_extra_packages
  ensure_netns
  write_root_files "$ROOT"
  ensure_libvirtd "$QEMU_CONF_CHANGED"
  ensure_keys
  up_host 0
  if ((${#CHANGED[@]})); then
    print_changes
    say "up in $(elapsed): $NAME at $NS_IP:$SSH_PORT (netns $NETNS), virt=$VIRT_TYPE; see $STATE/host.json"
  else
    say "already up ($(elapsed)): $NAME at $NS_IP:$SSH_PORT, virt=$VIRT_TYPE"
  fi
}

cmd_down() {
  local pids p
  if [[ -d $ROOT ]]; then
    stop_daemons
    # Whatever is still chrooted here came from our daemons: ssh sessions, a qemu that
    # outlived its libvirtd. They would keep the mounts busy.
    pids=$(pids_in_root)
    if [[ -n $pids ]]; then
      for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
      for p in $pids; do wait_gone "$p" 5 || true; done
      did "stopped leftover processes in the root: $(tr '\n' ' ' <<<"$pids")"
    fi
  fi
  unmount_all_under "$ROOT"
  remove_netns
  print_changes
  say "down ($(elapsed)); root $ROOT, keys and disks in $STATE kept"
}

cmd_remove_root() {
  cmd_down
  [[ -z $(mounts_under "$ROOT_BASE") ]] || die "still mounted under $ROOT_BASE: not removing"
  safe_rm_tree "$BUILD"
  safe_rm_tree "$ROOT"
  say "removed $ROOT (the tarball $CACHE is kept)"
}

cmd_status() {
  local rc=0 m
  if root_ready; then say "root: $ROOT (ready)"; elif [[ -e $ROOT ]]; then say "root: $ROOT (incomplete)"; rc=1
  else say "root: none"; rc=1; fi
  if cache_ready; then say "cache: $CACHE ($(du -m "$CACHE" | cut -f1) MB)"; else say "cache: none"; fi
  m=$(mounts_under "$ROOT")
  say "mounts: $(if [[ -n $m ]]; then wc -l <<<"$m"; else echo 0; fi) under $ROOT"
  if [[ -e /run/netns/$NETNS ]] && ip -n "$NETNS" -4 -o addr show dev "$VETH_NS" 2>/dev/null | grep -q " inet $NS_IP/"; then
    say "network: namespace $NETNS, $HOST_IP <-> $NS_IP"
  else say "network: namespace $NETNS not set up"; rc=1; fi
  status_host
  ((STATUS_RC == 0)) || rc=1
  return $rc
}

# One up/down at a time, machine-wide: there is one root and one namespace per machine,
# whichever checkout's LABDIR asks. The lock file sits beside the root, never inside it.
lock() {
  mkdir -p "$ROOT_BASE"
  exec 9>"$ROOT_BASE/host13.lock"
  flock -w 300 9 || die "another host13.sh holds $ROOT_BASE/host13.lock for 5 min"
}

[[ $(id -u) == 0 ]] || die "run as root"
case "$CMD" in
  up) [[ -d $LAB ]] || die "$LAB does not exist: bring the base lab up first (bash scripts/lab.sh up)"
    lock; mkdir -p "$STATE"; cmd_up ;;
  down) lock; cmd_down ;;
  remove-root) lock; cmd_remove_root ;;
  status) cmd_status ;;
esac
