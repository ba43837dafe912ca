#!/usr/bin/env bash
# Builds the lab's real Linux guest from Debian 12's own packages:
#   OUTDIR/vmlinux        uncompressed kernel (ELF with a PVH entry note): qemu boots it
#                         directly, which is about twice as fast under TCG as the bzImage
#   OUTDIR/initramfs.gz   busybox + qemu-ga + mke2fs + the virtio/ext4 modules + ./init
#   OUTDIR/manifest.json  versions, module list, counter layout, sha256 of the outputs
# Nothing is installed except, when missing on the build host, e2fsprogs and the shared
# libraries qemu-ga links against (its binary and libs are copied from this host).
#
# Usage: build.sh OUTDIR            (root; idempotent: a stamp of every input skips the work)
# Env:   LABGUEST_KERNEL_PKG  kernel package to use (default: what linux-image-amd64 depends on)
#        LABGUEST_CACHE       where the downloaded .debs are kept (default OUTDIR/.cache)
#        LABGUEST_FORCE=1     rebuild even when the stamp matches
set -euo pipefail
export LC_ALL=C

die() { echo "build.sh: $*" >&2; exit 1; }
say() { echo "build.sh: $*" >&2; }

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 OUTDIR"
[[ $(id -u) -eq 0 ]] || die "must run as root (mknod /dev/console in the initramfs, apt-get)"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SRC=$HERE/init
[[ -f $INIT_SRC ]] || die "missing $INIT_SRC"
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
CACHE=${LABGUEST_CACHE:-$OUT/.cache}
DEBS=$CACHE/debs
mkdir -p "$DEBS"
for t in apt-get apt-cache dpkg-deb dpkg-query tar xz gzip sha256sum ldd; do
  command -v "$t" >/dev/null || die "needs $t on the build host"
done

# Two builds into the same OUTDIR (parallel test runs) take turns.
exec 8>"$OUT/.lock"
flock -w 600 8 || die "another build holds $OUT/.lock"

T0=$(date +%s%N)
elapsed() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }

json_str() { # JSON string literal of $1
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ------------------------------------------------------------ packages ---
# apt-cache on this kind of host has no pkgcache.bin and parses every list on each call
# (0.3 to 1.7 s), so apt is asked only when its lists or sources changed: the answer is
# kept in OUT/.resolved, keyed on that state.
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  say "apt lists missing: apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
fi
APT_STATE=$(
  {
    echo "kernel=${LABGUEST_KERNEL_PKG:-}"
    ls -l --time-style=+%s /var/lib/apt/lists/*_Packages* /var/lib/apt/lists/*Release 2>/dev/null || true
    cat /etc/apt/sources.list /etc/apt/sources.list.d/* /etc/apt/preferences /etc/apt/preferences.d/* 2>/dev/null || true
  } | sha256sum | cut -d' ' -f1
)
declare -A VER SHA FILE
KPKG=""
load_resolved() {
  [[ -f $OUT/.resolved && $(head -n1 "$OUT/.resolved") == "state $APT_STATE" ]] || return 1
  local kind a b c d
  while read -r kind a b c d; do
    case $kind in
      kpkg) KPKG=$a ;;
      deb) VER[$a]=$b SHA[$a]=$c FILE[$a]=$DEBS/$d ;;
    esac
  done <"$OUT/.resolved"
  [[ -n $KPKG && -n ${VER[$KPKG]:-} && -n ${VER[busybox-static]:-} && -n ${VER[qemu-guest-agent]:-} ]]
}
resolve() {
  KPKG=${LABGUEST_KERNEL_PKG:-}
  if [[ -z $KPKG ]]; then
    KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
  fi
  local empty uris url f size hash p v n=0
  # --print-uris skips packages whose .deb is in the current folder: ask from an empty one.
  empty=$(mktemp -d)
  uris=$(cd "$empty" && apt-get download --print-uris "$KPKG" busybox-static qemu-guest-agent 2>&1) ||
    { rmdir "$empty"; die "apt-get download --print-uris failed: $uris"; }
  rmdir "$empty"
  while read -r url f size hash; do
    [[ $url == \'* && $hash == SHA256:* ]] || continue
    p=${f%%_*}; v=${f#*_}; v=${v%_*}; v=${v//%3a/:}
    VER[$p]=$v SHA[$p]=${hash#SHA256:} FILE[$p]=$DEBS/$f
    n=$((n + 1))
  done <<<"$uris"
  [[ $n -eq 3 && -n ${VER[$KPKG]:-} ]] || die "apt did not resolve $KPKG busybox-static qemu-guest-agent: $uris"
  {
    echo "state $APT_STATE"
    echo "kpkg $KPKG"
    for p in "$KPKG" busybox-static qemu-guest-agent; do
      echo "deb $p ${VER[$p]} ${SHA[$p]} $(basename "${FILE[$p]}")"
    done
  } >"$OUT/.resolved"
}
load_resolved || resolve
[[ $KPKG =~ ^linux-image-(6\.1\.0-[0-9]+-amd64)(-unsigned)?$ ]] ||
  die "kernel package '$KPKG' is not Debian 12's linux-image-6.1.0-*-amd64 (set LABGUEST_KERNEL_PKG)"
KREL=${BASH_REMATCH[1]} # uname -r of that kernel, e.g. 6.1.0-57-amd64
PKGS=("$KPKG" busybox-static qemu-guest-agent)

# ---------------------------------------------------------------- stamp ---
# Every input: this script, init, the three .debs (by apt's sha256) and each file taken
# from this host (mke2fs, its config, every library of qemu-ga and mke2fs).
stamp_of() { # $1: the host files, one a line
  {
    echo "build.sh $(sha "${BASH_SOURCE[0]}")"
    echo "init $(sha "$INIT_SRC")"
    for p in "${PKGS[@]}"; do echo "deb $p ${VER[$p]} ${SHA[$p]}"; done
    while read -r f; do echo "host $f $(sha "$f" 2>/dev/null || echo missing)"; done <<<"$1"
  } | sha256sum | cut -d' ' -f1
}
outputs_ok() {
  [[ -f $OUT/.stamp && -f $OUT/.hostfiles && -f $OUT/vmlinux && -f $OUT/initramfs.gz && -f $OUT/manifest.json ]] &&
    [[ $(cat "$OUT/.stamp") == "$(stamp_of "$(cat "$OUT/.hostfiles")")" ]] &&
    grep -q "\"sha256\": \"$(sha "$OUT/initramfs.gz")\"" "$OUT/manifest.json"
}
if [[ ${LABGUEST_FORCE:-0} != 1 ]] && outputs_ok; then
  say "up to date ($KREL, stamp $(head -c 12 "$OUT/.stamp")) in $(elapsed) ms"
  exit 0
fi

fetch_deb() { # download into the cache unless a copy with apt's sha256 is already there
  local p=$1 f=${FILE[$1]}
  if [[ -f $f && $(sha "$f") == "${SHA[$p]}" ]]; then return 0; fi
  rm -f "$f"
  say "apt-get download $p=${VER[$p]}"
  # apt drops to user _apt, which can't write into a root-owned cache folder: that only warns.
  (cd "$DEBS" && apt-get download -q "$p=${VER[$p]}" 2>&1 | grep -v 'unsandboxed' >&2) || true
  [[ -f $f ]] || die "apt-get download $p=${VER[$p]} did not produce $f"
  [[ $(sha "$f") == "${SHA[$p]}" ]] || die "$f: sha256 differs from apt's"
}
for p in "${PKGS[@]}"; do fetch_deb "$p"; done
# Old versions left in the cache after an upgrade are dead weight.
for f in "$DEBS"/*.deb; do
  keep=0
  for p in "${PKGS[@]}"; do [[ $f == "${FILE[$p]}" ]] && keep=1; done
  ((keep)) || { say "dropping stale $f"; rm -f "$f"; }
done

# mke2fs and qemu-ga's libraries come from this host; install what is missing.
if [[ ! -x /sbin/mke2fs ]]; then
  say "apt-get install e2fsprogs"
  apt-get install -y -q --no-install-recommends e2fsprogs >&2
fi
E2VER=$(dpkg-query -W -f '${Version}' e2fsprogs)

# qemu-ga's binary, from its .deb, in a folder keyed by its version
QGA_DIR=$CACHE/qga-${VER[qemu-guest-agent]//:/_}
if [[ ! -x $QGA_DIR/usr/sbin/qemu-ga ]]; then
  rm -rf "$QGA_DIR" "$QGA_DIR.tmp"
  dpkg-deb -x "${FILE[qemu-guest-agent]}" "$QGA_DIR.tmp"
  mv "$QGA_DIR.tmp" "$QGA_DIR"
fi
for c in "$CACHE"/qga-*; do [[ $c == "$QGA_DIR" ]] || rm -rf "$c"; done
QGA=$QGA_DIR/usr/sbin/qemu-ga

# The path of each library ldd lists, plus the ELF interpreter.
libs_of() {
  local out
  out=$(ldd "$1" 2>&1) || die "ldd $1 failed: $out"
  if grep -q 'not found' <<<"$out"; then return 2; fi
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}
if ! QGA_LIBS=$(libs_of "$QGA"); then
  deps=$(dpkg-deb -f "${FILE[qemu-guest-agent]}" Depends | tr ',' '\n' | sed 's/(.*)//; s/|.*//; s/ //g' | grep '^lib' || true)
  say "qemu-ga is missing libraries; apt-get install" $deps
  # shellcheck disable=SC2086 # word splitting wanted: one package per word
  apt-get install -y -q --no-install-recommends $deps >&2
  QGA_LIBS=$(libs_of "$QGA") || die "ldd $QGA still reports missing libraries: $(ldd "$QGA" | grep 'not found')"
fi
MKE2FS_LIBS=$(libs_of /sbin/mke2fs) || die "ldd /sbin/mke2fs reports missing libraries"
# shellcheck disable=SC2086 # one path per word
HOST_FILES=$(printf '%s\n' /sbin/mke2fs /etc/mke2fs.conf $QGA_LIBS $MKE2FS_LIBS | sort -u)
STAMP=$(stamp_of "$HOST_FILES")
rm -f "$OUT/.stamp"

# --------------------------------------------------------------- kernel ---
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "unpacking $KPKG ${VER[$KPKG]}"
# Only the folders the module closure can reach: unpacking all 400 MB takes twice as long.
# A module outside them makes the closure below fail loudly.
M=./lib/modules/$KREL
dpkg-deb --fsys-tarfile "${FILE[$KPKG]}" | tar -x -C "$WORK" --wildcards \
  "./boot/vmlinuz-$KREL" "$M/modules.order" "$M/modules.builtin" "$M/modules.builtin.modinfo" \
  "$M/kernel/drivers/virtio/*" "$M/kernel/drivers/block/*" "$M/kernel/drivers/char/*" \
  "$M/kernel/drivers/acpi/*" "$M/kernel/drivers/input/*" \
  "$M/kernel/crypto/*" "$M/kernel/fs/*" "$M/kernel/lib/*"
VMLINUZ=$WORK/boot/vmlinuz-$KREL
[[ -f $VMLINUZ ]] || die "$KPKG has no boot/vmlinuz-$KREL"

# The bzImage carries the kernel as an xz stream; the first offset that decodes to an ELF wins.
found=0
while IFS=: read -r off _; do
  # xz stops after one stream, so tail may die of SIGPIPE: only xz's status counts.
  if { tail -c +$((off + 1)) "$VMLINUZ" 2>/dev/null || true; } | xz -dc --single-stream >"$WORK/vmlinux" 2>/dev/null &&
    [[ $(head -c 4 "$WORK/vmlinux" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
    found=1; break
  fi
done < <(grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" || true)
((found)) || die "no xz-compressed ELF payload found in $VMLINUZ"

# ------------------------------------------------------------ initramfs ---
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,run,tmp,data,etc,usr/sbin,lib/modules}
mkdir -p "$R/var"; ln -s ../run "$R/var/run" # qemu-ga's default pid and state folder
# The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
mknod -m 600 "$R/dev/console" c 5 1

dpkg-deb --fsys-tarfile "${FILE[busybox-static]}" | tar -x -C "$WORK" ./bin/busybox
install -m 755 "$WORK/bin/busybox" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
  [[ $a == busybox ]] || ln -s busybox "$R/bin/$a"
done

copy_host_file() { # keep the path ldd printed: ld.so's built-in multiarch paths find them there
  mkdir -p "$R$(dirname "$1")"
  cp -L "$1" "$R$1"
}
install -m 755 "$QGA" "$R/usr/sbin/qemu-ga"
install -m 755 /sbin/mke2fs "$R/sbin/mke2fs"
cp /etc/mke2fs.conf "$R/etc/mke2fs.conf"
while read -r f; do copy_host_file "$f"; done < <(printf '%s\n' $QGA_LIBS $MKE2FS_LIBS | sort -u)
install -m 755 "$INIT_SRC" "$R/init"

# /sbin/shutdown (reboot, poweroff, halt link to it): what qemu-ga's guest-shutdown execs
# ("shutdown -h|-P|-r +0 ...") and what acpid runs on the ACPI power button. PID 1 is a
# shell, not an init system, so this script does the whole clean shutdown itself.
cat >"$R/sbin/shutdown" <<'EOF'
#!/bin/sh
act=poweroff
case "$(basename "$0") $*" in reboot*|*-r*) act=reboot ;; esac
echo "labguest: $act" >/dev/console
fsfreeze -u /data 2>/dev/null # a frozen ext4 would block the sync and the unmount
kill "$(cat /run/writer.pid 2>/dev/null)" 2>/dev/null
sleep 0.2
sync
umount /data 2>/dev/null || mount -o remount,ro /data 2>/dev/null || echo "labguest: /data busy" >/dev/console
sync
exec /bin/busybox "$act" -f
EOF
chmod 755 "$R/sbin/shutdown"
for s in reboot poweroff halt; do ln -s shutdown "$R/sbin/$s"; done
# busybox acpid maps the power button's input event to PWRF and runs /etc/acpi/PWRF/00000080.
mkdir -p "$R/etc/acpi/PWRF"
printf '#!/bin/sh\nexec /sbin/poweroff\n' >"$R/etc/acpi/PWRF/00000080"
chmod 755 "$R/etc/acpi/PWRF/00000080"

# Modules: the wanted ones plus the closure of each .ko's depends= list.
KMOD=$WORK/lib/modules/$KREL
declare -A MODPATH
while IFS= read -r f; do
  n=$(basename "$f" .ko); MODPATH[${n//-/_}]=${f#"$KMOD"/}
done < <(find "$KMOD/kernel" -name '*.ko')
WANT=(virtio_pci virtio_blk virtio_console crc32c_generic ext4 button evdev) # button, evdev: ACPI power button for acpid
declare -A SEEN
queue=("${WANT[@]}")
while ((${#queue[@]})); do
  m=${queue[0]}; queue=("${queue[@]:1}")
  [[ -n ${SEEN[$m]:-} ]] && continue
  SEEN[$m]=1
  if [[ -z ${MODPATH[$m]:-} ]]; then
    grep -q "/${m}.ko$" "$KMOD/modules.builtin" && continue # built into the kernel
    die "module $m is not in the unpacked folders of $KPKG"
  fi
  deps=$(tr '\0' '\n' <"$KMOD/${MODPATH[$m]}" | sed -n 's/^depends=//p' | head -n1)
  for d in ${deps//,/ }; do queue+=("${d//-/_}"); done
done
MODS=$(printf '%s\n' "${!SEEN[@]}" | sort)
for m in $MODS; do
  [[ -n ${MODPATH[$m]:-} ]] || continue
  mkdir -p "$R/lib/modules/$KREL/$(dirname "${MODPATH[$m]}")"
  cp "$KMOD/${MODPATH[$m]}" "$R/lib/modules/$KREL/${MODPATH[$m]}"
done
cp "$KMOD"/modules.{order,builtin,builtin.modinfo} "$R/lib/modules/$KREL/"
"$R/bin/busybox" depmod -b "$R" "$KREL"
# init loads the wanted modules in this order (crc32c before ext4 mounts metadata_csum).
printf '%s\n' crc32c_generic virtio_pci virtio_blk virtio_console ext4 evdev button >"$R/etc/modules"

(cd "$R" && find . | sort | "$R/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -9n >"$WORK/initramfs.gz"
# A truncated archive would boot into a kernel panic: check it lists /init and qemu-ga.
listing=$(gzip -dc "$WORK/initramfs.gz" | "$R/bin/busybox" cpio -t 2>/dev/null)
grep -qx 'init' <<<"$listing" && grep -qx 'usr/sbin/qemu-ga' <<<"$listing" && grep -qx 'dev/console' <<<"$listing" ||
  die "initramfs listing lacks init, usr/sbin/qemu-ga or dev/console"

# ------------------------------------------------------------- manifest ---
lib_pkgs=$(
  while read -r f; do
    owner=""
    for cand in "$f" "$(readlink -f "$f")" "/usr$f" "${f#/usr}"; do
      owner=$(dpkg-query -S "$cand" 2>/dev/null | head -n1 | cut -d: -f1) && [[ -n $owner ]] && break
    done
    [[ -n $owner ]] && echo "$owner"
  done <<<"$HOST_FILES" | sort -u
)
pkg_json=""
add_pkg() { pkg_json+="${pkg_json:+,}"$'\n    '"$(json_str "$1"): $(json_str "$2")"; }
for p in "${PKGS[@]}"; do add_pkg "$p" "${VER[$p]}"; done
for p in $lib_pkgs; do
  [[ -n ${VER[$p]:-} ]] && continue
  add_pkg "$p" "$(dpkg-query -W -f '${Version}' "$p" 2>/dev/null || echo unknown)"
done
mods_json=$(for m in $MODS; do printf '%s, ' "$(json_str "$m")"; done); mods_json=${mods_json%, }
qga_ver=$("$QGA" --version 2>/dev/null | sed -n 's/^QEMU Guest Agent \([^ ]*\).*/\1/p' | head -n1)

mv "$WORK/vmlinux" "$OUT/vmlinux.tmp"
mv "$WORK/initramfs.gz" "$OUT/initramfs.gz.tmp"
cat >"$OUT/manifest.json.tmp" <<EOF
{
  "kernelRelease": $(json_str "$KREL"),
  "kernelPackage": $(json_str "$KPKG"),
  "kernelPackageVersion": $(json_str "${VER[$KPKG]}"),
  "qemuGaVersion": $(json_str "$qga_ver"),
  "e2fsprogsVersion": $(json_str "$E2VER"),
  "packages": {$pkg_json
  },
  "modules": [$mods_json],
  "cmdline": "console=ttyS0 quiet",
  "minMemoryMiB": 96,
  "agentChannel": "org.qemu.guest_agent.0",
  "shutdown": "virsh shutdown (agent or --mode acpi) runs /sbin/shutdown: thaw, stop the writer, unmount /data, poweroff -f; needs <acpi/> in the domain",
  "counter": {
    "file": "/counter",
    "fileFormat": "one decimal counter per line, appended and fsynced every 0.5 s",
    "raw": { "offset": 0, "length": 35, "magic": "LABGUEST", "counterOffset": 9, "counterDigits": 16, "bootOffset": 26, "bootDigits": 8,
             "format": "LABGUEST <counter, 16 digits> <boot, 8 digits>\\n, written to /dev/vda after the file line is fsynced" }
  },
  "files": {
    "vmlinux": { "bytes": $(stat -c %s "$OUT/vmlinux.tmp"), "sha256": "$(sha "$OUT/vmlinux.tmp")" },
    "initramfs.gz": { "bytes": $(stat -c %s "$OUT/initramfs.gz.tmp"), "sha256": "$(sha "$OUT/initramfs.gz.tmp")" }
  },
  "inputsSha256": "$STAMP",
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
mv "$OUT/initramfs.gz.tmp" "$OUT/initramfs.gz"
mv "$OUT/manifest.json.tmp" "$OUT/manifest.json"
printf '%s\n' "$HOST_FILES" >"$OUT/.hostfiles"
echo "$STAMP" >"$OUT/.stamp"
say "built $KREL: vmlinux $(stat -c %s "$OUT/vmlinux") B, initramfs.gz $(stat -c %s "$OUT/initramfs.gz") B, $(wc -w <<<"$MODS") modules, in $(elapsed) ms"
