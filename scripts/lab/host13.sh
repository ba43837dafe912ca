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
# Runs as root.
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
SSH_PORT=22
URI="qemu:///system"
MARK="pulumi-libvirt-lab"            # domain <title> prefix, as in scripts/lab.sh
TMP_MARK="pulumi-libvirt-lab-tmp"    # title prefix of throwaway domains
SUDO_USER_NAME="labuser"             # as in scripts/lab.sh
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
# name:wanted-state:format:writer
DOMAINS=("lab-writer:running:qcow2:1" "lab-idle:running:qcow2:0" "lab-off:shut off:qcow2:0"
  "lab-raw:shut off:raw:0")
CHROOT_ENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LC_ALL=C HOME=/root)

export LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
T0=$(date +%s%N)
CHANGED=()   # what this run did, for the summary

say() { printf 'host13: %s\n' "$*"; }
die() { printf 'host13: ERROR: %s\n' "$*" >&2; exit 1; }
did() { CHANGED+=("$*"); }
elapsed() { echo "$((($(date +%s%N) - T0) / 1000000)) ms"; }

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

# ------------------------------------------------------------ helpers ---
VIRSH_TIMEOUT=${LAB_VIRSH_TIMEOUT:-60}
# virsh of this host, from the base side: it talks to the root's own libvirtd through the
# unix socket in the root's /run, so it needs no network namespace.
virsh13() {
  local rc=0
  timeout -k 5 "$VIRSH_TIMEOUT" chroot "$ROOT" "${CHROOT_ENV[@]}" virsh -c "$URI" "$@" || rc=$?
  ((rc != 124)) || printf 'host13: virsh %s: no answer within %ss (see %s)\n' "$*" "$VIRSH_TIMEOUT" "$STATE/libvirtd.log" >&2
  return $rc
}
virsh13_() { virsh13 -q "$@"; }
in_root() { chroot "$ROOT" "${CHROOT_ENV[@]}" "$@"; }

# A PID is alive if /proc/PID/stat exists and its state is not zombie/dead
# (kill -0 succeeds on zombies). Optional $2: expected comm.
alive() {
  local pid=$1 want=${2:-} stat state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }; state=${state%% *}
  [[ $state != Z && $state != X ]] || return 1
  [[ -z $want || "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$want" ]]
}
pid_from() { [[ -s $1 ]] && tr -dc 0-9 <"$1" || true; }
ppid_of() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; s=${s#* }; echo "${s%% *}"; }
# Processes chrooted into our root: only this script, its daemons and their children run there.
rooted_here() { [[ $(readlink "/proc/$1/root" 2>/dev/null) == "$ROOT" ]]; }
pids_in_root() {
  local d
  for d in /proc/[0-9]*; do
    rooted_here "${d#/proc/}" && alive "${d#/proc/}" && echo "${d#/proc/}"
  done
  return 0
}
# First live process named $1 chrooted into our root, optionally whose parent is not named $2.
find_in_root() {
  local comm=$1 not_parent=${2:-} d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $(cat "$d/comm" 2>/dev/null) == "$comm" ]] || continue
    rooted_here "$pid" && alive "$pid" || continue
    [[ -z $not_parent || $(cat "/proc/$(ppid_of "$pid")/comm" 2>/dev/null) != "$not_parent" ]] || continue
    echo "$pid"; return 0
  done
  return 1
}

# Wait (bounded) until PID is gone; SIGKILL after $2 seconds.
wait_gone() {
  local pid=$1 secs=${2:-15} i
  for ((i = 0; i < secs * 20; i++)); do alive "$pid" || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 40; i++)); do alive "$pid" || return 0; sleep 0.05; done
  return 1
}

json_str() { # minimal JSON string escaping (paths and keys here are plain ASCII)
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

# Replace $2 with $1 only if the content differs (keeps no-op runs no-op). Returns 0 if replaced.
replace_if_changed() {
  local new=$1 dst=$2
  if [[ -f $dst ]] && cmp -s "$new" "$dst"; then rm -f "$new"; return 1; fi
  mv -f "$new" "$dst"
}

# Things to undo if the script dies half-way (a build's mounts, a policy-rc.d we created).
ON_EXIT=()
on_exit() { local c; for c in "${ON_EXIT[@]}"; do eval "$c" || true; done; }
trap on_exit EXIT

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

# ----------------------------------------------------- host packages ---
APT_UPDATED=0
ensure_host_packages() {
  local missing=() p have
  have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${HOST_PACKAGES[@]}" 2>/dev/null || true)
  for p in "${HOST_PACKAGES[@]}"; do grep -qx "$p installed" <<<"$have" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} on the base host"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    ON_EXIT+=("rm -f /usr/sbin/policy-rc.d")
  fi
  {
    if ((!APT_UPDATED)); then DEBIAN_FRONTEND=noninteractive apt-get update -qq; fi &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >>"$STATE/build.log" 2>&1 || { tail -n 30 "$STATE/build.log" >&2; die "apt-get failed (log: $STATE/build.log)"; }
  APT_UPDATED=1
  did "installed ${missing[*]} on the base host"
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

# Settings that make qemu domains work as root without systemd, cgroups or virtlogd
# (the same block scripts/lab.sh writes on the base host).
QEMU_KEYS=(user group dynamic_ownership remember_owner security_driver namespaces cgroup_controllers stdio_handler
  swtpm_user swtpm_group)
QEMU_BLOCK='user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
swtpm_user = "root"
swtpm_group = "root"'

# Files of ours inside a root. Returns 0 if qemu.conf changed (libvirtd must then restart).
write_root_files() {
  local r=$1 tmp conf keys changed=1
  conf="$r/etc/libvirt/qemu.conf"
  # Minbase has no /etc/hosts; libvirtd then warns about getaddrinfo of its hostname.
  tmp=$(mktemp "$r/etc/.hosts.XXXXXX")
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n%s\t%s.lab\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
    "$NAME" "$NS_IP" "$NAME" >"$tmp"
  chmod 644 "$tmp"
  replace_if_changed "$tmp" "$r/etc/hosts" || true
  tmp=$(mktemp "$r/etc/.hostname.XXXXXX")
  echo "$NAME" >"$tmp"; chmod 644 "$tmp"
  replace_if_changed "$tmp" "$r/etc/hostname" || true
  [[ -f $conf ]] || die "$conf missing (is libvirt-daemon-driver-qemu installed in the root?)"
  tmp=$(mktemp "$conf.lab.XXXXXX")
  keys=$(IFS='|'; echo "${QEMU_KEYS[*]}")
  # Drop our old block, comment out other active settings of the same keys
  # (libvirt takes the first occurrence), then append the block once.
  awk -v b="# BEGIN $MARK" -v e="# END $MARK" -v keys="^[ \t]*($keys)[ \t]*=" '
    $0 == b { skip = 1; next }
    $0 == e { skip = 0; next }
    skip { next }
    $0 ~ keys { print "#" $0 " # disabled by " b; next }
    { print }' "$conf" >"$tmp"
  printf '# BEGIN %s\n%s\n# END %s\n' "$MARK" "$QEMU_BLOCK" "$MARK" >>"$tmp"
  chmod --reference="$conf" "$tmp"
  replace_if_changed "$tmp" "$conf" && changed=0
  return $changed
}

chroot_apt() { # root, apt-get args...
  local r=$1; shift
  chroot "$r" "${CHROOT_ENV[@]}" DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

build_root() {
  local t0 t1 t2
  t0=$(date +%s%N)
  ensure_host_packages
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
  write_root_files "$BUILD" || true
  echo "$RECIPE" >"$BUILD/$RECIPE_FILE"
  mv -T "$BUILD" "$ROOT"
  t2=$(date +%s%N)
  did "built the root: debootstrap $(((t1 - t0) / 1000000)) ms, packages $(((t2 - t1) / 1000000)) ms"
  write_cache
}

# EXTRA_ROOT_PACKAGES a root (built or unpacked before they were added) lacks, installed in place with
# the root's own apt. Needs the root's mounts (/proc, /dev); services stay stopped (policy-rc.d).
ensure_extra_packages() {
  local r=$1 have p missing=() made_policy=0
  have=$(chroot "$r" "${CHROOT_ENV[@]}" dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${EXTRA_ROOT_PACKAGES[@]}" 2>/dev/null || true)
  for p in "${EXTRA_ROOT_PACKAGES[@]}"; do grep -qx "$p installed" <<<"$have" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} in the root (log: $STATE/build.log)"
  if [[ ! -e $r/usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
    made_policy=1
    ON_EXIT+=("rm -f '$r/usr/sbin/policy-rc.d'")
  fi
  printf '\n==== %s apt-get install %s (in place)\n' "$(date -Is)" "${missing[*]}" >>"$STATE/build.log"
  { chroot_apt "$r" update -qq &&
    chroot_apt "$r" install -y -qq --no-install-recommends "${missing[@]}" &&
    chroot_apt "$r" clean; } >>"$STATE/build.log" 2>&1 ||
    { tail -n 30 "$STATE/build.log" >&2; die "apt-get in the root failed (log: $STATE/build.log)"; }
  ((!made_policy)) || rm -f "$r/usr/sbin/policy-rc.d"
  find "$r/var/lib/apt/lists" "$r/var/cache/apt" -xdev -type f -delete
  did "installed ${missing[*]} in the root"
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
    ensure_host_packages
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

ours_libvirtd_pid() {
  local pid; pid=$(pid_from "$STATE/libvirtd.pid")
  if ! { alive "$pid" libvirtd && rooted_here "$pid"; }; then
    pid=$(find_in_root libvirtd) || return 1 # the pid file went away with LABDIR
    local ppid; ppid=$(ppid_of "$pid")
    if [[ -d $STATE ]]; then
      echo "$pid" >"$STATE/libvirtd.pid"
      ! alive "$ppid" tini || echo "$ppid" >"$STATE/tini.pid"
    fi
  fi
  echo "$pid"
}
ours_tini_pid() {
  local pid; pid=$(pid_from "$STATE/tini.pid")
  alive "$pid" tini && rooted_here "$pid" && echo "$pid" && return 0
  find_in_root tini
}
virsh_answers() { timeout 10 chroot "$ROOT" "${CHROOT_ENV[@]}" virsh -c "$URI" version >/dev/null 2>&1; }

start_libvirtd() {
  rm -f "$STATE/libvirtd.pid" "$STATE/tini.pid"
  printf '\n==== %s host13.sh starting libvirtd\n' "$(date -Is)" >>"$STATE/libvirtd.log"
  # tini -s is a subreaper: qemu (double-forked by libvirtd) is reaped by it at once, not
  # by the base's late-reaping PID 1, which would make every destroy or revert wait.
  # 9>&-: the daemon must not inherit our lock fd.
  setsid "${IN_HOST[@]}" tini -s -- /usr/sbin/libvirtd -p "$STATE/libvirtd.pid" \
    </dev/null >>"$STATE/libvirtd.log" 2>&1 9>&- &
  local tpid=$! i
  echo "$tpid" >"$STATE/tini.pid"
  for ((i = 0; i < 300; i++)); do
    if [[ -n $(ours_libvirtd_pid) ]] && timeout 5 chroot "$ROOT" "${CHROOT_ENV[@]}" virsh -c "$URI" list --name >/dev/null 2>&1; then
      did "started libvirtd (pid $(ours_libvirtd_pid), tini $tpid)"
      return 0
    fi
    alive "$tpid" || break
    sleep 0.1
  done
  tail -n 25 "$STATE/libvirtd.log" >&2 || true
  die "libvirtd in the root did not answer 'virsh -c $URI list' within 30 s (log: $STATE/libvirtd.log)"
}

# "name<TAB>state<TAB>title" for every domain of this host, from one virsh call.
list_domains() {
  local out
  out=$(virsh13 list --all --title) || die "virsh list --all --title failed on $NAME"
  awk 'NR > 2 && NF {
      name = $2; rest = $0; sub(/^ *[^ ]+ +[^ ]+ +/, "", rest)
      state = rest; title = ""
      if (match(rest, /  +[^ ]/)) { state = substr(rest, 1, RSTART - 1); title = substr(rest, RSTART + RLENGTH - 1) }
      sub(/ +$/, "", state)
      print name "\t" state "\t" title }' <<<"$out"
}

# Every domain of this libvirtd is ours (it is this lab's own daemon), throwaway ones too.
destroy_running_domains() {
  local name state _t
  while IFS=$'\t' read -r name state _t; do
    [[ -n $name && $state != "shut off" ]] || continue
    virsh13_ destroy "$name" >/dev/null 2>&1 && did "destroyed $name" || true
  done < <(list_domains)
}

stop_libvirtd() {
  local pid tpid
  pid=$(ours_libvirtd_pid || true)
  tpid=$(ours_tini_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 20 || die "libvirtd (pid $pid) did not exit"
    did "stopped libvirtd (pid $pid)"
  fi
  if alive "$tpid" tini; then
    kill -TERM "$tpid" 2>/dev/null || true
    wait_gone "$tpid" 5 || die "tini (pid $tpid) did not exit"
  fi
  rm -f "$STATE/libvirtd.pid" "$STATE/tini.pid"
}

# Stop the daemons; qemu processes first, so none outlives its libvirtd.
stop_daemons() {
  if [[ -n $(ours_libvirtd_pid) ]] && virsh_answers; then destroy_running_domains; fi
  stop_libvirtd
  stop_sshd
}

# ensure_libvirtd CONF_CHANGED
ensure_libvirtd() {
  if [[ -n $(ours_libvirtd_pid) ]]; then
    if (($1)); then
      say "qemu.conf changed: restarting libvirtd (its domains first)"
      virsh_answers && destroy_running_domains
      stop_libvirtd
    else
      local i
      for ((i = 0; i < 100; i++)); do virsh_answers && return 0; sleep 0.1; done
      die "libvirtd (pid $(ours_libvirtd_pid)) does not answer (stuck in a job? see $STATE/libvirtd.log)"
    fi
  fi
  start_libvirtd
}

# ---------------------------------------------------------- ssh + keys ---
ensure_keys() {
  [[ -s $LAB/client_ed25519 && -s $LAB/client_ed25519.pub && -s $LAB/client_enc_ed25519.pub ]] ||
    die "no client keys in $LAB: bring the base lab up first (bash scripts/lab.sh up)"
  mkdir -p "$STATE/authorized_keys"
  # Stable across rebuilt roots: a changed key would make clients retry, and OpenSSH 10
  # penalises bursts of failed connections.
  if [[ ! -s $STATE/ssh_host_ed25519_key ]]; then
    rm -f "$STATE/ssh_host_ed25519_key"{,.pub}
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-$NAME-host" -f "$STATE/ssh_host_ed25519_key"
    did "generated the $NAME host key"
  fi
  chmod 600 "$STATE/ssh_host_ed25519_key"
  local tmp; tmp=$(mktemp "$STATE/authorized_keys/.root.XXXXXX")
  cat "$LAB/client_ed25519.pub" "$LAB/client_enc_ed25519.pub" >"$tmp"
  replace_if_changed "$tmp" "$STATE/authorized_keys/root" || true
  tmp=$(mktemp "$STATE/.known_hosts.XXXXXX")
  printf '%s %s\n' "$NS_IP" "$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")" >"$tmp"
  replace_if_changed "$tmp" "$STATE/known_hosts" || true
}

write_sshd_config() { # returns 0 if changed
  local tmp; tmp=$(mktemp "$STATE/.sshd_config.XXXXXX")
  # Paths are under LABDIR, which is the same path inside the root.
  cat >"$tmp" <<EOF
# Generated by scripts/lab/host13.sh; overwritten on every 'up'.
Port $SSH_PORT
ListenAddress $NS_IP
HostKey $STATE/ssh_host_ed25519_key
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys/%u
AllowUsers root $SUDO_USER_NAME
PermitRootLogin prohibit-password
PubkeyAuthentication yes
# For $SUDO_USER_NAME, which logs in by password, as on the base lab. UsePAM no: sshd checks the root's /etc/shadow.
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# OpenSSH 10 blocks a source address for a while after a burst of failed connections;
# every test client here comes from $HOST_IP.
PerSourcePenalties no
AllowAgentForwarding yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
# Stock limits on purpose, so the provider meets what real hosts enforce.
MaxSessions 10
MaxStartups 10:30:100
# As on the base lab: bash skips ~/.bashrc at SHLVL >= 2, keeping per-command cost even.
SetEnv SHLVL=1
LogLevel VERBOSE
EOF
  replace_if_changed "$tmp" "$STATE/sshd_config"
}

ours_sshd_pid() {
  local pid; pid=$(pid_from "$STATE/sshd.pid")
  if ! { alive "$pid" sshd && rooted_here "$pid"; }; then
    # OpenSSH 10's per-connection processes are sshd-session; still skip any sshd child.
    pid=$(find_in_root sshd sshd) || return 1
    [[ ! -d $STATE ]] || echo "$pid" >"$STATE/sshd.pid"
  fi
  echo "$pid"
}
# Is PID in the network namespace that /run/netns/NAME names now?
in_our_netns() {
  [[ -e /run/netns/$NETNS ]] || return 1
  [[ $(readlink "/proc/$1/ns/net" 2>/dev/null) == "net:[$(stat -L -c %i "/run/netns/$NETNS")]" ]]
}
port_busy() { timeout 2 bash -c ": </dev/tcp/$NS_IP/$SSH_PORT" 2>/dev/null; }

stop_sshd() {
  local pid; pid=$(ours_sshd_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "sshd (pid $pid) did not exit"
    did "stopped sshd (pid $pid)"
  fi
  rm -f "$STATE/sshd.pid"
}

# The base lab's password user, with the same password: reaches libvirt only through 'sudo -n virsh'.
ensure_sudo_user() {
  local pwfile="$LAB/$SUDO_USER_NAME.password"
  [[ -s $pwfile ]] || die "no $pwfile: bring the base lab up first (bash scripts/lab.sh up)"
  in_root id -u "$SUDO_USER_NAME" >/dev/null 2>&1 || { in_root useradd -m -s /bin/bash "$SUDO_USER_NAME"; did "created user $SUDO_USER_NAME"; }
  printf '%s:%s\n' "$SUDO_USER_NAME" "$(cat "$pwfile")" | in_root chpasswd
  local tmp; tmp=$(mktemp "$ROOT/tmp/lab-sudoers.XXXXXX")
  # /usr/local/bin/virsh: the tests' dispatcher to a logging wrapper (test/support/virshWrapper.ts),
  # which execs /usr/bin/virsh; sudo -n finds it first on its secure_path.
  printf '# Generated by scripts/lab/host13.sh\n%s ALL=(root) NOPASSWD: /usr/bin/virsh, /usr/local/bin/virsh\n' "$SUDO_USER_NAME" >"$tmp"
  in_root visudo -cf "${tmp#"$ROOT"}" >/dev/null || { rm -f "$tmp"; die "visudo rejected the sudoers file"; }
  chmod 440 "$tmp"
  mkdir -p "$ROOT/etc/sudoers.d"
  replace_if_changed "$tmp" "$ROOT/etc/sudoers.d/pulumi-libvirt-lab" && did "wrote the root's sudoers for $SUDO_USER_NAME"
  return 0
}

ensure_sshd() {
  local changed=0 running i err
  running=$(ours_sshd_pid || true)
  write_sshd_config && changed=1
  mkdir -p "$ROOT/run/sshd" && chmod 755 "$ROOT/run/sshd"
  if [[ -n $running ]]; then
    if ! in_our_netns "$running"; then
      say "sshd (pid $running) is not in the current $NETNS (the namespace was re-created): restarting it"
    else
      ((changed)) || return 0
      say "sshd_config changed: restarting sshd"
    fi
    stop_sshd
  fi
  for ((i = 0; i < 40; i++)); do port_busy || break; sleep 0.05; done
  port_busy && die "$NS_IP:$SSH_PORT is in use by a process this script did not start"
  err=$(in_root /usr/sbin/sshd -t -f "$STATE/sshd_config" 2>&1) || die "sshd -t rejected $STATE/sshd_config: $err"
  setsid "${IN_HOST[@]}" /usr/sbin/sshd -D -f "$STATE/sshd_config" -E "$STATE/sshd.log" \
    </dev/null >>"$STATE/sshd.log" 2>&1 9>&- &
  local spid=$!
  for ((i = 0; i < 100; i++)); do
    [[ -n $(ours_sshd_pid) ]] && port_busy && { did "started sshd on $NS_IP:$SSH_PORT (pid $spid)"; return 0; }
    alive "$spid" || break
    sleep 0.05
  done
  tail -n 20 "$STATE/sshd.log" >&2 || true
  die "sshd did not start on $NS_IP:$SSH_PORT (log: $STATE/sshd.log)"
}

SSH13=(ssh -F /dev/null -p "$SSH_PORT" -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$STATE/known_hosts"
  -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR -o IdentitiesOnly=yes)

verify_ssh() { # $1=1: also the encrypted key (slower)
  local out
  out=$("${SSH13[@]}" -o BatchMode=yes -i "$LAB/client_ed25519" "root@$NS_IP" \
    "timeout 30 virsh -c $URI list --name >/dev/null && echo ok" 2>&1) ||
    die "ssh root@$NS_IP with client_ed25519 failed: $out (log: $STATE/sshd.log)"
  [[ $out == ok ]] || die "ssh by key printed unexpected output: $out"
  [[ ${1:-0} == 1 && -s $LAB/client_enc_ed25519.passphrase ]] || return 0
  printf '#!/bin/sh\nprintf "%%s\\n" "$LAB_ASKPASS_SECRET"\n' >"$STATE/askpass.sh"
  chmod 700 "$STATE/askpass.sh"
  out=$(LAB_ASKPASS_SECRET="$(cat "$LAB/client_enc_ed25519.passphrase")" SSH_ASKPASS="$STATE/askpass.sh" \
    SSH_ASKPASS_REQUIRE=force "${SSH13[@]}" -o BatchMode=no -o NumberOfPasswordPrompts=1 \
    -o PreferredAuthentications=publickey -i "$LAB/client_enc_ed25519" "root@$NS_IP" 'echo ok' </dev/null 2>&1) ||
    die "ssh root@$NS_IP with the encrypted key failed: $out"
  [[ $out == ok ]] || die "ssh with the encrypted key printed unexpected output: $out"
}

# ---------------------------------------------------------------- KVM ---
# Really run a guest with KVM for a moment, with this host's qemu, and ask it whether KVM
# is on and the VM still runs; a /dev/kvm file test is not enough.
probe_kvm() {
  [[ -c $ROOT/dev/kvm ]] || return 1
  local out
  out=$({ sleep 0.3; printf 'info kvm\ninfo status\nquit\n'; } |
    timeout 10 chroot "$ROOT" "${CHROOT_ENV[@]}" qemu-system-x86_64 -accel kvm -machine pc -m 16 \
      -nodefaults -display none -serial none -parallel none -monitor stdio 2>&1) || return 1
  grep -q 'kvm support: enabled' <<<"$out" && grep -q 'VM status: running' <<<"$out"
}

VIRT_TYPE=""
# Keep the type the existing lab domains have (never switch silently); LAB_VIRT_TYPE must
# then agree. No lab domains yet: LAB_VIRT_TYPE, else a real KVM probe.
choose_virt_type() { # $1: list_domains output
  local existing
  case "${LAB_VIRT_TYPE:-}" in "" | kvm | qemu) ;; *) die "LAB_VIRT_TYPE must be kvm or qemu, not '$LAB_VIRT_TYPE'" ;; esac
  existing=$(awk -F'\t' -v m="$MARK virt=" -v d=" dir=$LAB" '
    index($3, m) == 1 && substr($3, length($3) - length(d) + 1) == d {
      t = substr($3, length(m) + 1); print substr(t, 1, length(t) - length(d)); exit }' <<<"$1")
  if [[ -n $existing ]]; then
    [[ -z ${LAB_VIRT_TYPE:-} || $LAB_VIRT_TYPE == "$existing" ]] ||
      die "the $NAME lab domains are '$existing' but LAB_VIRT_TYPE=$LAB_VIRT_TYPE: run '$SELF remove-root $LAB' (drops the root's domain definitions; the tarball stays) and up again with it"
    VIRT_TYPE=$existing
  elif [[ -n ${LAB_VIRT_TYPE:-} ]]; then
    VIRT_TYPE=$LAB_VIRT_TYPE
  elif probe_kvm; then
    VIRT_TYPE=kvm; did "KVM probe (qemu of $NAME): works, using kvm"
  else
    VIRT_TYPE=qemu; did "KVM probe (qemu of $NAME): not usable, using qemu (TCG emulation)"
  fi
}

# ------------------------------------------------------------ domains ---
ensure_bootsector() {
  # The base lab makes it; make it the same way if this runs first.
  if [[ ! -s $LAB/bootsector.bin || ! -s $LAB/bootsector.layout.json ]]; then
    node "$REPO/scripts/lab/bootsector.cjs" "$LAB/bootsector.bin" "$LAB/bootsector.layout.json"
    did "generated boot sector"
  fi
}

disk_path() { echo "$STATE/disks/$1.$2"; }

make_disk() { # name format writer; with this host's qemu-img, on the shared path
  local disk; disk=$(disk_path "$1" "$2")
  mkdir -p "$STATE/disks"
  rm -f "$disk"
  in_root qemu-img create -q -f "$2" "$disk" 64M
  if [[ $3 == 1 ]]; then
    in_root qemu-io -f "$2" -c "write -q -s $LAB/bootsector.bin 0 512" "$disk" >/dev/null
  fi
}

domain_xml() { # name format: the one shape every lab host's domains have (scripts/lab/domain-xml.cjs)
  local name=$1 format=$2
  node "$REPO/scripts/lab/domain-xml.cjs" --name "$name" --title "$MARK virt=$VIRT_TYPE dir=$LAB" --virt-type "$VIRT_TYPE" \
    --disk "$(disk_path "$name" "$format")" --format "$format"
}

remove_domain() {
  virsh13_ destroy "$1" >/dev/null 2>&1 || true
  virsh13_ undefine "$1" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 || true
}

ensure_domains() { # $1: list_domains output
  local listing=$1 entry name want format writer cur title disk redefine
  local want_title="$MARK virt=$VIRT_TYPE dir=$LAB"
  mkdir -p "$STATE/disks/tmp" "$STATE/xml"
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    disk=$(disk_path "$name" "$format")
    cur=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' <<<"$listing")
    title=$(awk -F'\t' -v n="$name" '$1 == n { print $3 }' <<<"$listing")
    redefine=0
    if [[ -n $cur && $title != "$want_title" ]]; then
      say "$name is not this lab's ('$title'): redefining it"
      redefine=1
    fi
    [[ -n $cur && ! -e $disk ]] && { say "$name: disk $disk is missing: recreating"; redefine=1; }
    if [[ -z $cur || $redefine == 1 ]]; then
      [[ -z $cur ]] || remove_domain "$name"
      make_disk "$name" "$format" "$writer"
      domain_xml "$name" "$format" >"$STATE/xml/$name.xml"
      virsh13_ define "$STATE/xml/$name.xml" >/dev/null
      cur="shut off"
      did "defined $name"
    fi
    if [[ $want == running ]]; then
      case "$cur" in
        running) ;;
        paused) virsh13_ resume "$name" >/dev/null; did "resumed $name" ;;
        *) virsh13_ start "$name" >/dev/null; did "started $name" ;;
      esac
    elif [[ $cur != "shut off" ]]; then
      virsh13_ destroy "$name" >/dev/null; did "stopped $name"
    fi
  done
}

# ---------------------------------------------------------- host.json ---
write_host_json() {
  local ver qemu_ver entry name want format writer first=1 doms=""
  # From the running daemon, never assumed from the package name.
  ver=$(virsh13 version --daemon 2>/dev/null) || die "virsh version --daemon failed on $NAME"
  qemu_ver=$(sed -n 's/^Running hypervisor: QEMU //p' <<<"$ver")
  ver=$(sed -n 's/^Running against daemon: //p' <<<"$ver")
  [[ -n $ver && -n $qemu_ver ]] || die "could not read the versions from 'virsh version --daemon'"
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    ((first)) || doms+=","
    first=0
    doms+=$'\n    '"{ \"name\": $(json_str "$name"), \"state\": $(json_str "$want"), \"disk\": $(json_str "$(disk_path "$name" "$format")"), \"format\": \"$format\", \"writer\": $([[ $writer == 1 ]] && echo true || echo false) }"
  done
  local tmp; tmp=$(mktemp "$STATE/.host.json.XXXXXX")
  chmod 600 "$tmp"
  cat >"$tmp" <<EOF
{
  "name": "$NAME",
  "host": "$NS_IP",
  "port": $SSH_PORT,
  "user": "root",
  "privateKeyPath": $(json_str "$LAB/client_ed25519"),
  "encryptedKeyPath": $(json_str "$LAB/client_enc_ed25519"),
  "hostKey": $(json_str "$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")"),
  "hostKeyPath": $(json_str "$STATE/ssh_host_ed25519_key.pub"),
  "knownHostsPath": $(json_str "$STATE/known_hosts"),
  "libvirtUri": "$URI",
  "libvirtVersion": $(json_str "$ver"),
  "qemuVersion": $(json_str "$qemu_ver"),
  "virtType": "$VIRT_TYPE",
  "labDir": $(json_str "$LAB"),
  "rootDir": $(json_str "$ROOT"),
  "bootSectorPath": $(json_str "$LAB/bootsector.bin"),
  "writerLayout": $(cat "$LAB/bootsector.layout.json"),
  "tmpDiskDir": $(json_str "$STATE/disks/tmp"),
  "domains": [$doms
  ]
}
EOF
  replace_if_changed "$tmp" "$STATE/host.json" && did "wrote $STATE/host.json"
  return 0
}

# ----------------------------------------------------------- commands ---
cmd_up() {
  local conf_changed=0 sshd_was_running=0
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
  ensure_extra_packages "$ROOT"
  ensure_netns
  write_root_files "$ROOT" && conf_changed=1
  ensure_libvirtd "$conf_changed"
  ensure_keys
  ensure_sudo_user
  [[ -n $(ours_sshd_pid) ]] && sshd_was_running=1
  ensure_sshd
  ensure_bootsector
  local listing; listing=$(list_domains)
  choose_virt_type "$listing"
  ensure_domains "$listing"
  echo "$VIRT_TYPE" >"$STATE/virt_type"
  write_host_json
  if ((${#CHANGED[@]})) || ((!sshd_was_running)); then verify_ssh 1; else verify_ssh 0; fi
  if ((${#CHANGED[@]})); then
    printf 'host13: %s\n' "${CHANGED[@]/#/- }"
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
  if ((${#CHANGED[@]})); then printf 'host13: %s\n' "${CHANGED[@]/#/- }"; fi
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
  local pid rc=0 m
  if root_ready; then say "root: $ROOT (ready)"; elif [[ -e $ROOT ]]; then say "root: $ROOT (incomplete)"; rc=1
  else say "root: none"; rc=1; fi
  if cache_ready; then say "cache: $CACHE ($(du -m "$CACHE" | cut -f1) MB)"; else say "cache: none"; fi
  m=$(mounts_under "$ROOT")
  say "mounts: $(if [[ -n $m ]]; then wc -l <<<"$m"; else echo 0; fi) under $ROOT"
  if [[ -e /run/netns/$NETNS ]] && ip -n "$NETNS" -4 -o addr show dev "$VETH_NS" 2>/dev/null | grep -q " inet $NS_IP/"; then
    say "network: namespace $NETNS, $HOST_IP <-> $NS_IP"
  else say "network: namespace $NETNS not set up"; rc=1; fi
  pid=$( [[ -d $ROOT ]] && ours_libvirtd_pid || true)
  if [[ -n $pid ]]; then say "libvirtd: running (pid $pid, tini $(ours_tini_pid || echo '?'))"
  else say "libvirtd: not running"; rc=1; fi
  pid=$( [[ -d $ROOT ]] && ours_sshd_pid || true)
  if [[ -n $pid ]]; then say "sshd: running (pid $pid) on $NS_IP:$SSH_PORT"
  else say "sshd: not running"; rc=1; fi
  say "virt type: $(cat "$STATE/virt_type" 2>/dev/null || echo unknown)"
  if [[ -d $ROOT ]] && virsh_answers; then
    say "libvirt: $(virsh13 version --daemon 2>/dev/null | sed -n 's/^Running against daemon: //p'), qemu $(virsh13 version 2>/dev/null | sed -n 's/^Running hypervisor: QEMU //p')"
    local name state title
    while IFS=$'\t' read -r name state title; do
      case "$title" in
        "$MARK "*) printf '  %-28s %-10s lab (%s)\n' "$name" "$state" "${title#"$MARK "}" ;;
        "$TMP_MARK "*) printf '  %-28s %-10s throwaway (%s)\n' "$name" "$state" "${title#"$TMP_MARK "}" ;;
        *) printf '  %-28s %-10s\n' "$name" "$state" ;;
      esac
    done < <(list_domains)
  fi
  [[ -f $STATE/host.json ]] && say "host.json: $STATE/host.json" || say "host.json: missing"
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
