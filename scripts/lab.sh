#!/usr/bin/env bash
# The test lab, all state in <repo>/.lab: the Debian 12 host (libvirtd + an sshd on loopback +
# four small domains) and, through scripts/lab/host13.sh, a Debian 13 host in its own network
# namespace with the same domains; each host also runs a real Linux guest (scripts/lab/guest).
#
#   bash scripts/lab.sh [up]    install what is missing, start what is not running (idempotent)
#   bash scripts/lab.sh down    stop what `up` started (lab domains, our libvirtd, our sshd)
#   bash scripts/lab.sh status  print what runs
#   bash scripts/lab.sh reset   like up, but destroy and recreate the lab domains and disks
#
# Env: LAB_SSH_PORT (default 2222), LAB_VIRT_TYPE=kvm|qemu (default: probe KVM for real).
# Runs as root. Never touches ~/.ssh or root's password.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$REPO/.lab"
PORT="${LAB_SSH_PORT:-2222}"
URI="qemu:///system"
MARK="pulumi-libvirt-lab"            # domain <title> prefix; also marks our qemu.conf block
TMP_MARK="pulumi-libvirt-lab-tmp"    # title prefix of throwaway domains (test/support/lab.ts)
SUDO_USER_NAME="labuser"
SUDOERS_FILE="/etc/sudoers.d/pulumi-libvirt-lab"
# ovmf (UEFI firmware) and swtpm (TPM emulator) for the special domains test/support/specialDomains.ts makes.
PACKAGES=(libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients qemu-system-x86
  qemu-utils openssh-server tini sudo ovmf swtpm swtpm-tools)
# name:wanted-state:format:writer
DOMAINS=("lab-writer:running:qcow2:1" "lab-idle:running:qcow2:0" "lab-off:shut off:qcow2:0"
  "lab-raw:shut off:raw:0")

export LC_ALL=C
T0=$(date +%s%N)
CHANGED=()   # what this run did, for the summary

say() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: ERROR: %s\n' "$*" >&2; exit 1; }
did() { CHANGED+=("$*"); }
# Every virsh call is bounded: a libvirtd stuck in some job must not hang the lab script.
VIRSH_TIMEOUT=${LAB_VIRSH_TIMEOUT:-60}
virsh_t() {
  local rc=0
  timeout -k 5 "$VIRSH_TIMEOUT" virsh -c "$URI" "$@" || rc=$?
  ((rc != 124)) || printf 'lab: virsh %s: no answer within %ss (libvirtd stuck? see %s)\n' "$*" "$VIRSH_TIMEOUT" "$LAB/libvirtd.log" >&2
  return $rc
}
virsh_() { virsh_t -q "$@"; }

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

# First live process named $1 whose command line contains $2 (scans /proc; no pgrep -f).
find_pid() {
  local comm=$1 needle=$2 d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $(cat "$d/comm" 2>/dev/null) == "$comm" ]] || continue
    [[ $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) == *"$needle"* ]] || continue
    alive "$pid" && { echo "$pid"; return 0; }
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

rand_secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

json_str() { # minimal JSON string escaping (paths, keys and secrets here are plain ASCII)
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

# ---------------------------------------------------------------- packages ---
ensure_packages() {
  local missing=() p have
  # One dpkg-query for all (it exits 1 when some package is unknown).
  have=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do
    grep -qx "$p installed" <<<"$have" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}"
  # Package scripts must not start services (no init system here): policy-rc.d exits 101.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT # also when interrupted
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$LAB/apt.log" 2>&1 || rc=$?
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if ((rc)); then tail -n 30 "$LAB/apt.log" >&2; die "apt-get failed (exit $rc), full log: $LAB/apt.log"; fi
  did "installed ${missing[*]}"
}

# -------------------------------------------------------------- qemu.conf ---
# Settings that make qemu domains work as root without systemd, cgroups or virtlogd. swtpm runs as root
# too: libvirt picks tss only if that user existed when libvirtd started, so the TPM emulator's user (and the
# owner of the files its local CA writes) would depend on whether swtpm was installed before libvirtd started.
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

ensure_qemu_conf() { # returns 0 if the file changed
  local conf=/etc/libvirt/qemu.conf tmp keys
  [[ -f $conf ]] || die "$conf missing (is libvirt-daemon-system installed?)"
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
  if replace_if_changed "$tmp" "$conf"; then did "updated $conf"; return 0; fi
  return 1
}

# --------------------------------------------------------------- libvirtd ---
# Ours = started by this script: tini (subreaper, so qemu children get reaped fast)
# running libvirtd. Both PIDs are recorded so `down` stops exactly those.
ours_libvirtd_pid() {
  local pid; pid=$(pid_from "$LAB/libvirtd.pid")
  if ! alive "$pid" libvirtd; then
    # The pid files are gone (e.g. 'git clean' removed .lab) but our daemon may still run.
    pid=$(find_pid libvirtd "-p $LAB/libvirtd.pid") || return 1
    echo "$pid" >"$LAB/libvirtd.pid"
    local ppid; ppid=$(ppid_of "$pid")
    alive "$ppid" tini && echo "$ppid" >"$LAB/tini.pid"
  fi
  echo "$pid"
}
virsh_answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

start_libvirtd() {
  rm -f "$LAB/libvirtd.pid" "$LAB/tini.pid"
  printf '\n==== %s lab.sh starting libvirtd\n' "$(date -Is)" >>"$LAB/libvirtd.log"
  # Non-interactive bash: the background child is not a group leader, so setsid
  # calls setsid() and execs tini in the same process: $! is tini's PID.
  # 9>&-: the daemon must not inherit our lock fd, or the lock would live as long as it.
  setsid tini -s -- /usr/sbin/libvirtd -p "$LAB/libvirtd.pid" </dev/null >>"$LAB/libvirtd.log" 2>&1 9>&- &
  local tpid=$!
  echo "$tpid" >"$LAB/tini.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    if [[ -n $(ours_libvirtd_pid) ]] && timeout 5 virsh -c "$URI" list --name >/dev/null 2>&1; then
      did "started libvirtd (pid $(ours_libvirtd_pid), tini $tpid)"
      return 0
    fi
    alive "$tpid" || break
    sleep 0.1
  done
  tail -n 25 "$LAB/libvirtd.log" >&2 || true
  die "libvirtd did not answer 'virsh -c $URI list' within 30 s (log: $LAB/libvirtd.log)"
}

stop_libvirtd() { # only ours
  local pid tpid
  pid=$(ours_libvirtd_pid || true)
  tpid=$(pid_from "$LAB/tini.pid")
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 20 || die "libvirtd (pid $pid) did not exit"
  fi
  if alive "$tpid" tini; then
    kill -TERM "$tpid" 2>/dev/null || true
    wait_gone "$tpid" 5 || die "tini (pid $tpid) did not exit"
  fi
  rm -f "$LAB/libvirtd.pid" "$LAB/tini.pid"
  [[ -n $pid ]] && did "stopped libvirtd (pid $pid)"
  return 0
}

LIBVIRTD_MODE=""  # ours | foreign
ensure_libvirtd() {
  local conf_changed=$1
  if [[ -n $(ours_libvirtd_pid) ]]; then
    if ((conf_changed)); then say "qemu.conf changed: restarting our libvirtd"; stop_libvirtd; start_libvirtd; fi
    LIBVIRTD_MODE=ours
  elif virsh_answers; then
    # Someone else's daemon: use it, never stop it.
    LIBVIRTD_MODE=foreign
    ((conf_changed)) && say "WARNING: qemu.conf changed but libvirtd is not ours; restart it yourself"
  else
    start_libvirtd
    LIBVIRTD_MODE=ours
  fi
  local i
  for ((i = 0; i < 100; i++)); do timeout 5 virsh -c "$URI" list --name >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "libvirtd does not answer 'virsh -c $URI list' (stuck in a job? see $LAB/libvirtd.log)"
}

# ------------------------------------------------------------- ssh + keys ---
ensure_keys() {
  mkdir -p "$LAB/authorized_keys"
  if [[ ! -s $LAB/ssh_host_ed25519_key ]]; then
    rm -f "$LAB/ssh_host_ed25519_key"{,.pub}
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-host" -f "$LAB/ssh_host_ed25519_key"
    did "generated host key"
  fi
  if [[ ! -s $LAB/client_ed25519 ]]; then
    rm -f "$LAB/client_ed25519"{,.pub}
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-root" -f "$LAB/client_ed25519"
    did "generated client_ed25519"
  fi
  if [[ ! -s $LAB/client_enc_ed25519 || ! -s $LAB/client_enc_ed25519.passphrase ]]; then
    rm -f "$LAB/client_enc_ed25519"{,.pub,.passphrase}
    local pass; pass=$(rand_secret)
    (umask 077; printf '%s' "$pass" >"$LAB/client_enc_ed25519.passphrase")
    ssh-keygen -q -t ed25519 -N "$pass" -C "$MARK-root-encrypted" -f "$LAB/client_enc_ed25519"
    did "generated client_enc_ed25519"
  fi
  chmod 600 "$LAB/ssh_host_ed25519_key" "$LAB/client_ed25519" "$LAB/client_enc_ed25519" "$LAB/client_enc_ed25519.passphrase"
  local tmp; tmp=$(mktemp "$LAB/authorized_keys/.root.XXXXXX")
  cat "$LAB/client_ed25519.pub" "$LAB/client_enc_ed25519.pub" >"$tmp"
  replace_if_changed "$tmp" "$LAB/authorized_keys/root" || true
  # labuser logs in by password only: no authorized keys file for it.
  rm -f "$LAB/authorized_keys/$SUDO_USER_NAME"
  tmp=$(mktemp "$LAB/.known_hosts.XXXXXX")
  printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$LAB/ssh_host_ed25519_key.pub")" >"$tmp"
  replace_if_changed "$tmp" "$LAB/known_hosts" || true
}

write_sshd_config() { # returns 0 if changed
  local tmp; tmp=$(mktemp "$LAB/.sshd_config.XXXXXX")
  cat >"$tmp" <<EOF
# Generated by scripts/lab.sh; overwritten on every 'up'.
Port $PORT
ListenAddress 127.0.0.1
HostKey "$LAB/ssh_host_ed25519_key"
PidFile "$LAB/sshd.pid"
AuthorizedKeysFile "$LAB/authorized_keys/%u"
AllowUsers root $SUDO_USER_NAME
PermitRootLogin prohibit-password
PubkeyAuthentication yes
# For $SUDO_USER_NAME, which logs in by password. UsePAM no: sshd checks /etc/shadow itself.
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowAgentForwarding yes
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
UseDNS no
# Stock limits on purpose, so the provider meets what real hosts enforce.
MaxSessions 10
MaxStartups 10:30:100
# bash sources ~/.bashrc when started by sshd with SHLVL < 2; root's .bashrc here
# runs 'pyenv init' (~110 ms per command). SHLVL=1 makes the shell level 2.
SetEnv SHLVL=1
LogLevel VERBOSE
EOF
  if replace_if_changed "$tmp" "$LAB/sshd_config"; then return 0; fi
  return 1
}

ours_sshd_pid() {
  local pid; pid=$(pid_from "$LAB/sshd.pid")
  if ! alive "$pid" sshd; then
    pid=$(find_pid sshd "-f $LAB/sshd_config") || return 1 # adopt after a lost pid file
    [[ $(cat "/proc/$(ppid_of "$pid")/comm" 2>/dev/null) != sshd ]] || return 1 # a session, not the listener
    echo "$pid" >"$LAB/sshd.pid"
  fi
  echo "$pid"
}
port_busy() { timeout 2 bash -c ": </dev/tcp/127.0.0.1/$PORT" 2>/dev/null; }

SSH_BASE=()
ssh_base() {
  SSH_BASE=(ssh -F /dev/null -p "$PORT" -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$LAB/known_hosts"
    -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR)
}

stop_sshd() {
  local pid; pid=$(ours_sshd_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "sshd (pid $pid) did not exit"
    did "stopped sshd (pid $pid)"
  fi
  rm -f "$LAB/sshd.pid"
}

ensure_sshd() {
  local changed=0 running old_port=""
  running=$(ours_sshd_pid || true)
  [[ -f $LAB/sshd_config ]] && old_port=$(sed -n 's/^Port //p' "$LAB/sshd_config")
  # Check the port before touching a running sshd, so a busy new port leaves the old one up.
  if [[ -z $running || $old_port != "$PORT" ]] && port_busy; then
    die "127.0.0.1:$PORT is in use by a process this lab did not start; set LAB_SSH_PORT to a free port"
  fi
  write_sshd_config && changed=1
  mkdir -p /run/sshd && chmod 755 /run/sshd
  if [[ -n $running ]]; then
    ((changed)) || return 0
    say "sshd_config changed: restarting sshd"
    stop_sshd
  fi
  local i
  for ((i = 0; i < 40; i++)); do port_busy || break; sleep 0.05; done # the old listener may linger briefly
  port_busy && die "127.0.0.1:$PORT is still in use after stopping our sshd"
  local err
  err=$(/usr/sbin/sshd -t -f "$LAB/sshd_config" 2>&1) || die "sshd -t rejected $LAB/sshd_config: $err"
  setsid /usr/sbin/sshd -D -f "$LAB/sshd_config" -E "$LAB/sshd.log" </dev/null >>"$LAB/sshd.log" 2>&1 9>&- &
  local spid=$!
  for ((i = 0; i < 100; i++)); do
    [[ -n $(ours_sshd_pid) ]] && port_busy && { did "started sshd on 127.0.0.1:$PORT (pid $spid)"; return 0; }
    alive "$spid" || break
    sleep 0.05
  done
  tail -n 20 "$LAB/sshd.log" >&2 || true
  die "sshd did not start on 127.0.0.1:$PORT (log: $LAB/sshd.log)"
}

# ssh with a secret delivered through SSH_ASKPASS (no tty, no sshpass needed).
ssh_askpass() {
  local secret=$1; shift
  LAB_ASKPASS_SECRET="$secret" SSH_ASKPASS="$LAB/askpass.sh" SSH_ASKPASS_REQUIRE=force \
    "${SSH_BASE[@]}" -o BatchMode=no -o NumberOfPasswordPrompts=1 "$@" </dev/null
}

verify_ssh() { # $1=1: also the encrypted key and the password user (slower)
  ssh_base
  local out
  out=$("${SSH_BASE[@]}" -o BatchMode=yes -o IdentitiesOnly=yes -i "$LAB/client_ed25519" root@127.0.0.1 \
    "timeout 30 virsh -c $URI list --name >/dev/null && echo ok" 2>&1) ||
    die "ssh root@127.0.0.1:$PORT with client_ed25519 failed: $out (log: $LAB/sshd.log)"
  [[ $out == ok ]] || die "ssh by key printed unexpected output: $out"
  [[ ${1:-0} == 1 ]] || return 0
  printf '#!/bin/sh\nprintf "%%s\\n" "$LAB_ASKPASS_SECRET"\n' >"$LAB/askpass.sh"
  chmod 700 "$LAB/askpass.sh"
  out=$(ssh_askpass "$(cat "$LAB/client_enc_ed25519.passphrase")" -o IdentitiesOnly=yes \
    -o PreferredAuthentications=publickey -i "$LAB/client_enc_ed25519" root@127.0.0.1 'echo ok' 2>&1) ||
    die "ssh with the encrypted key failed: $out"
  out=$(ssh_askpass "$(cat "$LAB/$SUDO_USER_NAME.password")" -o PubkeyAuthentication=no \
    -o PreferredAuthentications=password "$SUDO_USER_NAME@127.0.0.1" \
    "timeout 30 sudo -n /usr/bin/virsh -c $URI list --name >/dev/null && echo ok" 2>&1) ||
    die "ssh $SUDO_USER_NAME by password + 'sudo -n virsh' failed: $out"
  [[ $out == ok ]] || die "labuser check printed unexpected output: $out"
}

# ------------------------------------------------------------ sudo user ---
ensure_sudo_user() {
  local pwfile="$LAB/$SUDO_USER_NAME.password"
  if ! id -u "$SUDO_USER_NAME" >/dev/null 2>&1; then
    useradd -m -s /bin/bash -c "$MARK test user" "$SUDO_USER_NAME"
    rm -f "$pwfile"
    did "created user $SUDO_USER_NAME"
  fi
  if [[ ! -s $pwfile ]]; then
    (umask 077; rand_secret >"$pwfile")
    did "chose $SUDO_USER_NAME's password"
  fi
  # Every time: another checkout's lab on this machine may have set its own.
  printf '%s:%s\n' "$SUDO_USER_NAME" "$(cat "$pwfile")" | chpasswd
  chmod 600 "$pwfile"
  # Only virsh, only as root, no password: the provider runs 'sudo -n virsh ...'.
  local tmp; tmp=$(mktemp /tmp/lab-sudoers.XXXXXX)
  printf '# Generated by %s/scripts/lab.sh\n%s ALL=(root) NOPASSWD: /usr/bin/virsh\n' "$REPO" "$SUDO_USER_NAME" >"$tmp"
  local err; err=$(visudo -cf "$tmp" 2>&1) || { rm -f "$tmp"; die "visudo rejected the sudoers file: $err"; }
  chmod 440 "$tmp"
  mkdir -p /etc/sudoers.d
  replace_if_changed "$tmp" "$SUDOERS_FILE" && did "wrote $SUDOERS_FILE"
  return 0
}

# ------------------------------------------------------------------ KVM ---
# Really run a guest with KVM for a moment (SeaBIOS executes) and ask qemu whether
# KVM is on and the VM is still running; a /dev/kvm file test is not enough.
probe_kvm() {
  [[ -c /dev/kvm ]] || return 1
  local out
  out=$({ sleep 0.3; printf 'info kvm\ninfo status\nquit\n'; } |
    timeout 10 qemu-system-x86_64 -accel kvm -machine pc -m 16 -nodefaults -display none \
      -serial none -parallel none -monitor stdio 2>&1) || return 1
  grep -q 'kvm support: enabled' <<<"$out" && grep -q 'VM status: running' <<<"$out"
}

VIRT_TYPE=""
# up: keep the type the existing lab domains have (never switch silently); LAB_VIRT_TYPE
# must then agree. reset, or no lab domains yet: LAB_VIRT_TYPE, else a real KVM probe.
choose_virt_type() { # $1=1: reset; $2: list_domains output
  local recreate=$1 listing=$2 existing=""
  case "${LAB_VIRT_TYPE:-}" in "" | kvm | qemu) ;; *) die "LAB_VIRT_TYPE must be kvm or qemu, not '$LAB_VIRT_TYPE'" ;; esac
  if [[ $recreate != 1 ]]; then
    existing=$(awk -F'\t' -v m="$MARK virt=" -v d=" dir=$LAB" '
      index($3, m) == 1 && substr($3, length($3) - length(d) + 1) == d {
        t = substr($3, length(m) + 1); print substr(t, 1, length(t) - length(d)); exit }' <<<"$listing")
  fi
  if [[ -n $existing ]]; then
    [[ -z ${LAB_VIRT_TYPE:-} || $LAB_VIRT_TYPE == "$existing" ]] ||
      die "the lab domains are '$existing' but LAB_VIRT_TYPE=$LAB_VIRT_TYPE: run 'LAB_VIRT_TYPE=$LAB_VIRT_TYPE npm run lab -- reset'"
    VIRT_TYPE=$existing
  elif [[ -n ${LAB_VIRT_TYPE:-} ]]; then
    VIRT_TYPE=$LAB_VIRT_TYPE
  elif probe_kvm; then
    VIRT_TYPE=kvm; did "KVM probe: works, using kvm"
  else
    VIRT_TYPE=qemu; did "KVM probe: not usable, using qemu (TCG emulation)"
  fi
}

# -------------------------------------------------------------- domains ---
ensure_bootsector() {
  local gen="$REPO/scripts/lab/bootsector.cjs"
  if [[ ! -s $LAB/bootsector.bin || ! -s $LAB/bootsector.layout.json || $gen -nt $LAB/bootsector.bin ]]; then
    node "$gen" "$LAB/bootsector.bin" "$LAB/bootsector.layout.json"
    did "generated boot sector"
  fi
}

disk_path() { echo "$LAB/disks/$1.$2"; }

make_disk() { # name format writer
  local disk; disk=$(disk_path "$1" "$2")
  mkdir -p "$LAB/disks"
  rm -f "$disk"
  qemu-img create -q -f "$2" "$disk" 64M
  if [[ $3 == 1 ]]; then
    qemu-io -f "$2" -c "write -q -s $LAB/bootsector.bin 0 512" "$disk" >/dev/null
  fi
}

domain_xml() { # name format: the one shape every lab host's domains have (scripts/lab/domain-xml.cjs)
  local name=$1 format=$2
  node "$REPO/scripts/lab/domain-xml.cjs" --name "$name" --title "$MARK virt=$VIRT_TYPE dir=$LAB" --virt-type "$VIRT_TYPE" \
    --disk "$(disk_path "$name" "$format")" --format "$format"
}

remove_domain() {
  local name=$1
  virsh_ destroy "$name" >/dev/null 2>&1 || true
  virsh_ undefine "$name" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 || true
}

# "name<TAB>state<TAB>title" for every domain, from one virsh call.
list_domains() {
  local out
  out=$(virsh_t list --all --title) || die "virsh list --all --title failed"
  awk 'NR > 2 && NF {
      name = $2; rest = $0; sub(/^ *[^ ]+ +[^ ]+ +/, "", rest)
      state = rest; title = ""
      if (match(rest, /  +[^ ]/)) { state = substr(rest, 1, RSTART - 1); title = substr(rest, RSTART + RLENGTH - 1) }
      sub(/ +$/, "", state)
      print name "\t" state "\t" title }' <<<"$out"
}

ensure_domains() { # $1=1: recreate all lab domains; $2: list_domains output
  local recreate=${1:-0} listing=$2 entry name want format writer cur title disk
  local want_title="$MARK virt=$VIRT_TYPE dir=$LAB"
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    disk=$(disk_path "$name" "$format")
    cur=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' <<<"$listing")
    title=$(awk -F'\t' -v n="$name" '$1 == n { print $3 }' <<<"$listing")
    local redefine=$recreate
    if [[ -n $cur && $title != "$want_title" && $recreate != 1 ]]; then
      # Defined by another checkout (its disk is not ours), or by hand.
      say "$name is not this lab's ('$title'): redefining it"
      redefine=1
    fi
    [[ -n $cur && ! -e $disk ]] && { say "$name: disk $disk is missing: recreating"; redefine=1; }
    if [[ -z $cur || $redefine == 1 ]]; then
      [[ -n $cur ]] && remove_domain "$name"
      make_disk "$name" "$format" "$writer"
      mkdir -p "$LAB/xml"
      domain_xml "$name" "$format" >"$LAB/xml/$name.xml"
      virsh_ define "$LAB/xml/$name.xml" >/dev/null
      cur="shut off"
      did "defined $name"
    fi
    if [[ $want == running ]]; then
      case "$cur" in
        running) ;;
        paused) virsh_ resume "$name" >/dev/null; did "resumed $name" ;;
        *) virsh_ start "$name" >/dev/null; did "started $name" ;;
      esac
    elif [[ $cur != "shut off" ]]; then
      virsh_ destroy "$name" >/dev/null; did "stopped $name"
    fi
  done
}

destroy_running_domains() { # before stopping our libvirtd: qemu would outlive it
  local name state _t
  while IFS=$'\t' read -r name state _t; do
    [[ -n $name && $state != "shut off" ]] || continue
    virsh_ destroy "$name" >/dev/null 2>&1 && did "destroyed $name" || true
  done < <(list_domains)
}

destroy_lab_domains() { # foreign libvirtd: only ours
  local entry name
  for entry in "${DOMAINS[@]}"; do
    name=${entry%%:*}
    [[ $(virsh_ domstate "$name" 2>/dev/null || true) == running ]] || continue
    virsh_ destroy "$name" >/dev/null 2>&1 && did "destroyed $name" || true
  done
}

# ------------------------------------------------------------- lab.json ---
write_lab_json() {
  local ver qemu_ver entry name want format writer first=1 doms=""
  ver=$(virsh_t version --daemon 2>/dev/null) || die "virsh version --daemon failed"
  qemu_ver=$(sed -n 's/^Running hypervisor: QEMU //p' <<<"$ver")
  ver=$(sed -n 's/^Running against daemon: //p' <<<"$ver")
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    ((first)) || doms+=","
    first=0
    doms+=$'\n    '"{ \"name\": $(json_str "$name"), \"state\": $(json_str "$want"), \"disk\": $(json_str "$(disk_path "$name" "$format")"), \"format\": \"$format\", \"writer\": $([[ $writer == 1 ]] && echo true || echo false) }"
  done
  local tmp; tmp=$(mktemp "$LAB/.lab.json.XXXXXX")
  chmod 600 "$tmp"
  cat >"$tmp" <<EOF
{
  "host": "127.0.0.1",
  "port": $PORT,
  "user": "root",
  "privateKeyPath": $(json_str "$LAB/client_ed25519"),
  "encryptedKeyPath": $(json_str "$LAB/client_enc_ed25519"),
  "keyPassphrase": $(json_str "$(cat "$LAB/client_enc_ed25519.passphrase")"),
  "hostKey": $(json_str "$(cut -d' ' -f1,2 "$LAB/ssh_host_ed25519_key.pub")"),
  "hostKeyPath": $(json_str "$LAB/ssh_host_ed25519_key.pub"),
  "knownHostsPath": $(json_str "$LAB/known_hosts"),
  "libvirtUri": "$URI",
  "virtType": "$VIRT_TYPE",
  "libvirtVersion": $(json_str "$ver"),
  "qemuVersion": $(json_str "$qemu_ver"),
  "sudoUser": { "user": "$SUDO_USER_NAME", "password": $(json_str "$(cat "$LAB/$SUDO_USER_NAME.password")") },
  "bootSectorPath": $(json_str "$LAB/bootsector.bin"),
  "writerLayout": $(cat "$LAB/bootsector.layout.json"),
  "labDir": $(json_str "$LAB"),
  "tmpDiskDir": $(json_str "$LAB/disks/tmp"),
  "domains": [$doms
  ]
}
EOF
  # The Debian 12 host's fields; ensure_second_host_and_guests adds every host's entry to make lab.json.
  replace_if_changed "$tmp" "$LAB/lab-base.json" && did "wrote .lab/lab-base.json"
  return 0
}

# ------------------------------------------------------------ the Pulumi CLI ---
# Found on PATH or built from Go modules (scripts/lab/pulumi-cli/ensure.sh) in the background while
# the hosts come up: a cold build takes 8 to 18 minutes on 2 cores, a warm check a few seconds.
# ensure.sh writes .lab/pulumi.json, which hosts.cjs copies into lab.json as `pulumi`. No CLI is not
# fatal to the lab (the other suites don't need it), but it is said loudly, and the CLI suite fails.
PULUMI_CLI_PID=""
start_pulumi_cli() {
  bash "$REPO/scripts/lab/pulumi-cli/ensure.sh" "$LAB/pulumi.json" </dev/null >"$LAB/pulumi-cli.log" 2>&1 9>&- &
  PULUMI_CLI_PID=$!
}
wait_pulumi_cli() {
  [[ -n $PULUMI_CLI_PID ]] || return 0
  local t0=$SECONDS rc=0
  alive "$PULUMI_CLI_PID" && say "waiting for the Pulumi CLI (scripts/lab/pulumi-cli/ensure.sh, log: $LAB/pulumi-cli.log)"
  wait "$PULUMI_CLI_PID" || rc=$?
  PULUMI_CLI_PID=""
  if ((rc)); then
    sed 's/^/lab: /' "$LAB/pulumi-cli.log" >&2
    say "WARNING: no Pulumi CLI (see above); the CLI suite (test/cli.test.ts) will fail, npm run quickstart falls back" >&2
  elif grep -q 'built in' "$LAB/pulumi-cli.log"; then
    did "built the Pulumi CLI: $(grep -m1 'built in' "$LAB/pulumi-cli.log" | sed 's/^pulumi-cli: //;s/  */ /g') (waited $((SECONDS - t0)) s)"
  fi
}

# ------------------------------------------- the second host, the real guests ---
ensure_second_host_and_guests() {
  local out g12 g13
  out=$(bash "$REPO/scripts/lab/host13.sh" up "$LAB" 2>&1) || { printf '%s\n' "$out" >&2; die "the Debian 13 host did not come up"; }
  grep -q "already up" <<<"$out" || did "debian13: $(tail -n 1 <<<"$out" | sed 's/^[a-z0-9.]*: //')"
  out=$(bash "$REPO/scripts/lab/guest/build.sh" "$LAB/guest" 2>&1) || { printf '%s\n' "$out" >&2; die "building the real guest failed"; }
  g12=$(bash "$REPO/scripts/lab/guest/ensure.sh" base "$LAB") || die "lab-guest did not start on debian12"
  g13=$(bash "$REPO/scripts/lab/guest/ensure.sh" host13 "$LAB") || die "lab-guest did not start on debian13"
  wait_pulumi_cli
  [[ $(node "$REPO/scripts/lab/hosts.cjs" "$LAB" "$g12" "$g13") == same ]] || did "wrote .lab/lab.json (hosts debian12, debian13)"
}

# ------------------------------------------------------------ commands ---
elapsed() { echo "$((($(date +%s%N) - T0) / 1000000)) ms"; }

cmd_up() {
  local recreate=${1:-0}
  [[ $(id -u) == 0 ]] || die "run as root"
  [[ $PORT =~ ^[0-9]+$ && $PORT != 22 && $PORT -lt 65536 ]] || die "LAB_SSH_PORT must be a port number other than 22"
  mkdir -p "$LAB" "$LAB/disks/tmp"
  chmod 700 "$LAB"
  start_pulumi_cli
  ensure_packages
  local conf_changed=0
  ensure_qemu_conf && conf_changed=1
  ensure_libvirtd "$conf_changed"
  ensure_keys
  ensure_sudo_user
  local sshd_was_running=0
  [[ -n $(ours_sshd_pid) ]] && sshd_was_running=1
  ensure_sshd
  ensure_bootsector
  local listing; listing=$(list_domains)
  choose_virt_type "$recreate" "$listing"
  ensure_domains "$recreate" "$listing"
  echo "$VIRT_TYPE" >"$LAB/virt_type"
  write_lab_json
  ensure_second_host_and_guests
  # Full check (encrypted key, password user + sudo) when anything changed; the key check always.
  if ((${#CHANGED[@]})) || ((!sshd_was_running)); then verify_ssh 1; else verify_ssh 0; fi
  if ((${#CHANGED[@]})); then
    printf 'lab: %s\n' "${CHANGED[@]/#/- }"
    say "up in $(elapsed): libvirtd ($LIBVIRTD_MODE), sshd 127.0.0.1:$PORT, virt=$VIRT_TYPE," \
      "domains lab-writer+lab-idle running, lab-off+lab-raw shut off; see .lab/lab.json"
  else
    say "already up ($(elapsed)): sshd 127.0.0.1:$PORT, virt=$VIRT_TYPE, libvirtd ($LIBVIRTD_MODE)"
  fi
}

cmd_down() {
  [[ -d $LAB ]] || { say "nothing to stop (no $LAB)"; return 0; }
  # The second host first: its root has LABDIR bound into it.
  bash "$REPO/scripts/lab/host13.sh" down "$LAB" >&2 || die "the Debian 13 host did not come down cleanly"
  if [[ -n $(ours_libvirtd_pid) ]]; then
    destroy_running_domains
    stop_libvirtd
  elif virsh_answers; then
    destroy_lab_domains
  fi
  local tpid; tpid=$(pid_from "$LAB/tini.pid")
  if alive "$tpid" tini; then kill -TERM "$tpid"; wait_gone "$tpid" 5 || true; fi
  rm -f "$LAB/tini.pid"
  stop_sshd
  if ((${#CHANGED[@]})); then printf 'lab: %s\n' "${CHANGED[@]/#/- }"; fi
  say "down ($(elapsed)); disks, keys and config kept in $LAB"
}

cmd_status() {
  local pid rc=0
  pid=$(ours_libvirtd_pid || true)
  if [[ -n $pid ]]; then say "libvirtd: running (ours, pid $pid, tini $(pid_from "$LAB/tini.pid"))"
  elif virsh_answers; then say "libvirtd: running (not started by this lab)"
  else say "libvirtd: not running"; rc=1
  fi
  pid=$(ours_sshd_pid || true)
  if [[ -n $pid ]]; then say "sshd: running (pid $pid) on $(sed -n 's/^ListenAddress //p' "$LAB/sshd_config"):$(sed -n 's/^Port //p' "$LAB/sshd_config")"
  else say "sshd: not running"; rc=1
  fi
  say "virt type: $(cat "$LAB/virt_type" 2>/dev/null || echo unknown)"
  if virsh_answers; then
    local name state title
    while IFS=$'\t' read -r name state title; do
      case "$title" in
        "$MARK "*) printf '  %-28s %-10s lab (%s)\n' "$name" "$state" "${title#"$MARK "}" ;;
        "$TMP_MARK "*) printf '  %-28s %-10s throwaway (%s)\n' "$name" "$state" "${title#"$TMP_MARK "}" ;;
      esac
    done < <(list_domains)
  fi
  [[ -f $LAB/lab.json ]] && say "lab.json: $LAB/lab.json" || say "lab.json: missing"
  bash "$REPO/scripts/lab/host13.sh" status "$LAB" || rc=1
  return $rc
}

# One up/down/reset at a time (two test runs may start together).
lock() { mkdir -p "$LAB"; exec 9>"$LAB/lab.lock"; flock -w 300 9 || die "another lab.sh holds $LAB/lab.lock for 5 min"; }

case "${1:-up}" in
  up) lock; cmd_up 0 ;;
  reset) lock; cmd_up 1 ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 [up|down|status|reset]" >&2; exit 2 ;;
esac
