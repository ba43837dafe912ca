# shellcheck shell=bash
# What every lab host's script does alike, written once: scripts/lab.sh (Debian 12, this machine) and
# scripts/lab/host13.sh (Debian 13 in a chroot with its own network namespace) source it. Never run.
#
# Before sourcing, the host's script sets:
#   REPO, LAB    the checkout; the base lab's folder (.lab: client keys, labuser's password, boot sector)
#   STATE        this host's folder: pid files, logs, sshd_config, host key, disks, xml ($LAB on Debian 12)
#   NAME         debian12 | debian13;  LOG_TAG: the prefix of its messages (lab | host13)
#   SCRIPT       its script, relative to REPO, for the headers of the files it generates
#   ROOT         the host's root: "" for this machine's own, else a chroot's folder. A chroot is the lab's
#                alone, so every process and domain in it is ours. In this machine's root others may run
#                daemons and domains too: ours are known by their command line, lab domains by their title.
#   IN_HOST      the prefix that starts a daemon on the host (network namespace, hostname, chroot); () here
#   SSH_ADDR, SSH_PORT  where its sshd listens
#   HOST_JSON    where its description goes
#   SUDO_VIRSH   the commands labuser may run as root by 'sudo -n'
#   RESET_HINT   what to run when LAB_VIRT_TYPE disagrees with the existing domains
#   optionally SSHD_EXTRA (its own sshd_config lines) and PORT_HINT (advice when its address is taken)
# and defines host_json_fields, which prints its own fields for HOST_JSON. IN_ROOT is made from ROOT
# when this is sourced; everything else is read when a function runs.

MARK="pulumi-libvirt-lab"            # domain <title> prefix; also marks our qemu.conf block
TMP_MARK="pulumi-libvirt-lab-tmp"    # title prefix of throwaway domains (test/support/lab.ts)
SUDO_USER_NAME="labuser"
SUDOERS_FILE="/etc/sudoers.d/pulumi-libvirt-lab"   # under ROOT
# name:wanted-state:format:writer
DOMAINS=("lab-writer:running:qcow2:1" "lab-idle:running:qcow2:0" "lab-off:shut off:qcow2:0"
  "lab-raw:shut off:raw:0")
URI="qemu:///system"
# A command in a chroot gets a clean environment: the caller's (LANG, a pyenv PATH) is not the root's.
CHROOT_ENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  LC_ALL=C HOME=/root)
# The prefix that runs a command inside the host's root: nothing for this machine's own.
IN_ROOT=()
[[ -z $ROOT ]] || IN_ROOT=(chroot "$ROOT" "${CHROOT_ENV[@]}")

export LC_ALL=C
T0=$(date +%s%N)
CHANGED=()   # what this run did, for the summary

say() { printf '%s: %s\n' "$LOG_TAG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }
did() { CHANGED+=("$*"); }
print_changes() { local c; for c in "${CHANGED[@]}"; do say "- $c"; done; }
elapsed() { echo "$((($(date +%s%N) - T0) / 1000000)) ms"; }
in_root() { "${IN_ROOT[@]}" "$@"; }

# Things to undo if the script dies half-way (a policy-rc.d we created, a build's mounts).
ON_EXIT=()
on_exit() { local c; for c in "${ON_EXIT[@]}"; do eval "$c" || true; done; }
trap on_exit EXIT

# Every virsh call is bounded: a libvirtd stuck in some job must not hang the lab script. From this
# machine, a chrooted host's virsh reaches its libvirtd through the socket in the root's /run.
VIRSH_TIMEOUT=${LAB_VIRSH_TIMEOUT:-60}
virsh_t() {
  local rc=0
  timeout -k 5 "$VIRSH_TIMEOUT" "${IN_ROOT[@]}" virsh -c "$URI" "$@" || rc=$?
  ((rc != 124)) || printf '%s: virsh %s: no answer within %ss (libvirtd stuck? see %s)\n' "$LOG_TAG" "$*" \
    "$VIRSH_TIMEOUT" "$STATE/libvirtd.log" >&2
  return $rc
}
virsh_() { virsh_t -q "$@"; }
virsh_answers() { timeout 10 "${IN_ROOT[@]}" virsh -c "$URI" version >/dev/null 2>&1; }
virsh_lists() { timeout 5 "${IN_ROOT[@]}" virsh -c "$URI" list --name >/dev/null 2>&1; }

# ------------------------------------------------------------ processes ---
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
# Is PID chrooted into the host's root? Always, for this machine's own.
in_host() { [[ -z $ROOT || $(readlink "/proc/$1/root" 2>/dev/null) == "$ROOT" ]]; }

# First live process of this host named $1 whose parent is not named $3 (a session, not the listener).
# In this machine's root its command line must contain $2; a chroot's are all ours, whichever
# checkout started them (there is one such host per machine).
find_pid() {
  local comm=$1 needle=$2 not_parent=${3:-} d pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ $(cat "$d/comm" 2>/dev/null) == "$comm" ]] || continue
    if [[ -n $ROOT ]]; then
      in_host "$pid" || continue
    else
      [[ $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) == *"$needle"* ]] || continue
    fi
    [[ -z $not_parent || $(cat "/proc/$(ppid_of "$pid")/comm" 2>/dev/null) != "$not_parent" ]] || continue
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

# --------------------------------------------------------------- files ---
rand_secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }

json_str() { # minimal JSON string escaping (paths, keys and secrets here are plain ASCII)
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

# Replace $2 with $1 only if the content differs (keeps no-op runs no-op). Returns 0 if replaced.
# Used in conditions, where set -e does not act: a failed mv must still stop the script.
replace_if_changed() {
  local new=$1 dst=$2
  if [[ -f $dst ]] && cmp -s "$new" "$dst"; then rm -f "$new"; return 1; fi
  mv -f "$new" "$dst" || die "cannot write $dst"
}

# ------------------------------------------------------------ packages ---
# Installs those of packages $3... that are missing in root $1 ("" = this machine), apt-get's output
# appended to $2. Sets APT_INSTALLED to what it installed ("" if nothing was missing).
APT_INSTALLED=""
install_missing() {
  local r=$1 log=$2; shift 2
  local run=() have p missing=() where="" made_policy=0 rc=0
  [[ -z $r ]] || { run=(chroot "$r" "${CHROOT_ENV[@]}"); where=" in the root"; }
  APT_INSTALLED=""
  # One dpkg-query for all (it exits 1 when some package is unknown).
  have=$("${run[@]}" dpkg-query -W -f='${Package} ${db:Status-Status}\n' "$@" 2>/dev/null || true)
  for p in "$@"; do grep -qx "$p installed" <<<"$have" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]}$where (log: $log)"
  # Package scripts must not start services (no init system here): policy-rc.d exits 101.
  if [[ ! -e $r/usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
    chmod 755 "$r/usr/sbin/policy-rc.d"
    made_policy=1
    ON_EXIT+=("rm -f '$r/usr/sbin/policy-rc.d'") # also when interrupted
  fi
  printf '\n==== %s apt-get install %s%s\n' "$(date -Is)" "${missing[*]}" "$where" >>"$log"
  {
    "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >>"$log" 2>&1 || rc=$?
  if ((made_policy)); then rm -f "$r/usr/sbin/policy-rc.d"; unset 'ON_EXIT[-1]'; fi
  if ((rc)); then tail -n 30 "$log" >&2; die "apt-get failed (exit $rc), full log: $log"; fi
  APT_INSTALLED="${missing[*]}"
  did "installed ${missing[*]}$where"
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

# Puts the block into qemu.conf $1. Sets QEMU_CONF_CHANGED=1 if the file changed (libvirtd must restart).
QEMU_CONF_CHANGED=0
write_qemu_conf() {
  local conf=$1 tmp keys
  QEMU_CONF_CHANGED=0
  [[ -f $conf ]] || die "$conf missing (is libvirt's qemu driver installed?)"
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
  if replace_if_changed "$tmp" "$conf"; then QEMU_CONF_CHANGED=1; did "updated $conf"; fi
}

# --------------------------------------------------------------- libvirtd ---
# Ours = started by the host's script: tini -s (a subreaper: qemu, double-forked by libvirtd, is reaped
# by it at once, not by a late-reaping PID 1, which would make every destroy or revert wait) running
# libvirtd. Both PIDs are recorded so `down` stops exactly those.
ours_libvirtd_pid() {
  local pid ppid; pid=$(pid_from "$STATE/libvirtd.pid")
  if ! { alive "$pid" libvirtd && in_host "$pid"; }; then
    # The pid files are gone (e.g. 'git clean' removed .lab) but our daemon may still run.
    pid=$(find_pid libvirtd "-p $STATE/libvirtd.pid") || return 1
    if [[ -d $STATE ]]; then
      echo "$pid" >"$STATE/libvirtd.pid"
      ppid=$(ppid_of "$pid") || true
      ! alive "$ppid" tini || echo "$ppid" >"$STATE/tini.pid"
    fi
  fi
  echo "$pid"
}
ours_tini_pid() {
  local pid; pid=$(pid_from "$STATE/tini.pid")
  alive "$pid" tini && in_host "$pid" && echo "$pid" && return 0
  find_pid tini "-p $STATE/libvirtd.pid" # its command line names libvirtd's
}

start_libvirtd() {
  rm -f "$STATE/libvirtd.pid" "$STATE/tini.pid"
  printf '\n==== %s %s starting libvirtd\n' "$(date -Is)" "${SCRIPT##*/}" >>"$STATE/libvirtd.log"
  # Non-interactive bash: the background child is not a group leader, so setsid calls setsid()
  # and execs the rest in the same process; every step of IN_HOST execs too: $! is tini's PID.
  # 9>&-: the daemon must not inherit our lock fd, or the lock would live as long as it.
  setsid "${IN_HOST[@]}" tini -s -- /usr/sbin/libvirtd -p "$STATE/libvirtd.pid" \
    </dev/null >>"$STATE/libvirtd.log" 2>&1 9>&- &
  local tpid=$! i
  echo "$tpid" >"$STATE/tini.pid"
  for ((i = 0; i < 300; i++)); do
    if [[ -n $(ours_libvirtd_pid) ]] && virsh_lists; then
      did "started libvirtd (pid $(ours_libvirtd_pid), tini $tpid)"
      return 0
    fi
    alive "$tpid" || break
    sleep 0.1
  done
  tail -n 25 "$STATE/libvirtd.log" >&2 || true
  die "libvirtd did not answer 'virsh -c $URI list' within 30 s (log: $STATE/libvirtd.log)"
}

stop_libvirtd() { # only ours
  local pid tpid
  pid=$(ours_libvirtd_pid || true)
  tpid=$(ours_tini_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 20 || die "libvirtd (pid $pid) did not exit"
    did "stopped libvirtd (pid $pid)"
  fi
  if [[ -n $tpid ]]; then
    kill -TERM "$tpid" 2>/dev/null || true
    wait_gone "$tpid" 5 || die "tini (pid $tpid) did not exit"
  fi
  rm -f "$STATE/libvirtd.pid" "$STATE/tini.pid"
}

LIBVIRTD_MODE=""  # ours | foreign
ensure_libvirtd() { # $1=1: qemu.conf changed
  LIBVIRTD_MODE=ours
  if [[ -n $(ours_libvirtd_pid) ]]; then
    if (($1)); then
      # Its domains first: a qemu outliving its libvirtd goes to PID 1, and destroying it is slow after.
      say "qemu.conf changed: restarting our libvirtd (its domains first)"
      ! virsh_answers || destroy_running_domains
      stop_libvirtd
      start_libvirtd
    fi
  elif virsh_answers; then
    # Someone else's daemon: use it, never stop it.
    LIBVIRTD_MODE=foreign
    (($1 == 0)) || say "WARNING: qemu.conf changed but libvirtd is not ours; restart it yourself"
  else
    start_libvirtd
  fi
  local i
  for ((i = 0; i < 100; i++)); do virsh_lists && return 0; sleep 0.1; done
  die "libvirtd does not answer 'virsh -c $URI list' (stuck in a job? see $STATE/libvirtd.log)"
}

# ------------------------------------------------------------- ssh + keys ---
# The host's key, root's authorized keys (the lab's two client keys) and a known_hosts for clients.
# The host key stays across restarts and rebuilt roots: a changed key would make clients retry, and
# OpenSSH 10 penalises bursts of failed connections.
ensure_host_keys() {
  local tmp known=$SSH_ADDR
  mkdir -p "$STATE/authorized_keys"
  if [[ ! -s $STATE/ssh_host_ed25519_key ]]; then
    rm -f "$STATE/ssh_host_ed25519_key"{,.pub}
    ssh-keygen -q -t ed25519 -N '' -C "$MARK-$NAME-host" -f "$STATE/ssh_host_ed25519_key"
    did "generated the $NAME host key"
  fi
  chmod 600 "$STATE/ssh_host_ed25519_key"
  tmp=$(mktemp "$STATE/authorized_keys/.root.XXXXXX")
  cat "$LAB/client_ed25519.pub" "$LAB/client_enc_ed25519.pub" >"$tmp"
  replace_if_changed "$tmp" "$STATE/authorized_keys/root" || true
  # labuser logs in by password only: no authorized keys file for it.
  rm -f "$STATE/authorized_keys/$SUDO_USER_NAME"
  [[ $SSH_PORT == 22 ]] || known="[$SSH_ADDR]:$SSH_PORT" # how ssh names a host on another port
  tmp=$(mktemp "$STATE/.known_hosts.XXXXXX")
  printf '%s %s\n' "$known" "$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")" >"$tmp"
  replace_if_changed "$tmp" "$STATE/known_hosts" || true
}

SSHD_EXTRA=${SSHD_EXTRA:-}   # a host's own sshd_config lines, appended
SSHD_CONFIG_CHANGED=0
write_sshd_config() { # sets SSHD_CONFIG_CHANGED=1 if the file changed
  local tmp; tmp=$(mktemp "$STATE/.sshd_config.XXXXXX")
  SSHD_CONFIG_CHANGED=0
  # On a chrooted host these paths are under LABDIR, which is at the same path inside the root.
  cat >"$tmp" <<EOF
# Generated by $SCRIPT; overwritten on every 'up'.
Port $SSH_PORT
ListenAddress $SSH_ADDR
HostKey "$STATE/ssh_host_ed25519_key"
PidFile "$STATE/sshd.pid"
AuthorizedKeysFile "$STATE/authorized_keys/%u"
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
# bash sources ~/.bashrc when started by sshd with SHLVL < 2; root's .bashrc on the base host
# runs 'pyenv init' (~110 ms per command). SHLVL=1 makes the shell level 2, on every host alike.
SetEnv SHLVL=1
LogLevel VERBOSE
EOF
  [[ -z $SSHD_EXTRA ]] || printf '%s\n' "$SSHD_EXTRA" >>"$tmp"
  if replace_if_changed "$tmp" "$STATE/sshd_config"; then SSHD_CONFIG_CHANGED=1; fi
}

ours_sshd_pid() {
  local pid; pid=$(pid_from "$STATE/sshd.pid")
  if ! { alive "$pid" sshd && in_host "$pid"; }; then
    # Adopt after a lost pid file. OpenSSH 10's per-connection processes are sshd-session; still skip
    # any sshd child (a session, not the listener).
    pid=$(find_pid sshd "-f $STATE/sshd_config" sshd) || return 1
    [[ ! -d $STATE ]] || echo "$pid" >"$STATE/sshd.pid"
  fi
  echo "$pid"
}
port_busy() { timeout 2 bash -c ": </dev/tcp/$SSH_ADDR/$SSH_PORT" 2>/dev/null; }

stop_sshd() {
  local pid; pid=$(ours_sshd_pid || true)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "sshd (pid $pid) did not exit"
    did "stopped sshd (pid $pid)"
  fi
  rm -f "$STATE/sshd.pid"
}

# Is our running sshd PID still reachable where it should listen? A host redefines this after sourcing.
sshd_in_place() { return 0; }
PORT_HINT=${PORT_HINT:-}   # appended to the message when another process holds the address

ensure_sshd() {
  local running old_port="" i err spid
  running=$(ours_sshd_pid || true)
  [[ ! -f $STATE/sshd_config ]] || old_port=$(sed -n 's/^Port //p' "$STATE/sshd_config")
  # Check the port before touching a running sshd, so a busy new port leaves the old one up.
  if [[ -z $running || $old_port != "$SSH_PORT" ]] && port_busy; then
    die "$SSH_ADDR:$SSH_PORT is in use by a process this lab did not start$PORT_HINT"
  fi
  write_sshd_config
  mkdir -p "$ROOT/run/sshd" && chmod 755 "$ROOT/run/sshd"
  if [[ -n $running ]]; then
    if ! sshd_in_place "$running"; then
      say "sshd (pid $running) is not where it should listen (its network namespace was re-created): restarting it"
    else
      ((SSHD_CONFIG_CHANGED)) || return 0
      say "sshd_config changed: restarting sshd"
    fi
    stop_sshd
  fi
  for ((i = 0; i < 40; i++)); do port_busy || break; sleep 0.05; done # the old listener may linger briefly
  ! port_busy || die "$SSH_ADDR:$SSH_PORT is still in use after stopping our sshd"
  err=$(in_root /usr/sbin/sshd -t -f "$STATE/sshd_config" 2>&1) || die "sshd -t rejected $STATE/sshd_config: $err"
  setsid "${IN_HOST[@]}" /usr/sbin/sshd -D -f "$STATE/sshd_config" -E "$STATE/sshd.log" \
    </dev/null >>"$STATE/sshd.log" 2>&1 9>&- &
  spid=$!
  for ((i = 0; i < 100; i++)); do
    [[ -n $(ours_sshd_pid) ]] && port_busy && { did "started sshd on $SSH_ADDR:$SSH_PORT (pid $spid)"; return 0; }
    alive "$spid" || break
    sleep 0.05
  done
  tail -n 20 "$STATE/sshd.log" >&2 || true
  die "sshd did not start on $SSH_ADDR:$SSH_PORT (log: $STATE/sshd.log)"
}

# ------------------------------------------------------------ sudo user ---
# labuser: logs in by password, reaches libvirt only through 'sudo -n virsh' (the provider's way).
# Its password is the base lab's (LAB/labuser.password), on every host.
ensure_sudo_user() {
  local pwfile="$LAB/$SUDO_USER_NAME.password" tmp err where=""
  [[ -s $pwfile ]] || die "no $pwfile: bring the base lab up first (bash scripts/lab.sh up)"
  if ! in_root id -u "$SUDO_USER_NAME" >/dev/null 2>&1; then
    in_root useradd -m -s /bin/bash -c "$MARK test user" "$SUDO_USER_NAME"
    did "created user $SUDO_USER_NAME"
  fi
  # Every time: another checkout's lab on this machine may have set its own.
  printf '%s:%s\n' "$SUDO_USER_NAME" "$(cat "$pwfile")" | in_root chpasswd
  chmod 600 "$pwfile"
  tmp=$(mktemp "$ROOT/tmp/lab-sudoers.XXXXXX")
  printf '# Generated by %s/%s\n%s ALL=(root) NOPASSWD: %s\n' "$REPO" "$SCRIPT" "$SUDO_USER_NAME" "$SUDO_VIRSH" >"$tmp"
  err=$(in_root visudo -cf "${tmp#"$ROOT"}" 2>&1) || { rm -f "$tmp"; die "visudo rejected the sudoers file: $err"; }
  chmod 440 "$tmp"
  mkdir -p "$ROOT/etc/sudoers.d"
  [[ -z $ROOT ]] || where="the root's "
  if replace_if_changed "$tmp" "$ROOT$SUDOERS_FILE"; then did "wrote $where$SUDOERS_FILE"; fi
}

# ------------------------------------------------------------ ssh checks ---
SSH_BASE=()
ssh_base() {
  SSH_BASE=(ssh -F /dev/null -p "$SSH_PORT" -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$STATE/known_hosts"
    -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5 -o LogLevel=ERROR -o IdentitiesOnly=yes)
}

# ssh with a secret delivered through SSH_ASKPASS (no tty, no sshpass needed).
ssh_askpass() {
  local secret=$1; shift
  LAB_ASKPASS_SECRET="$secret" SSH_ASKPASS="$STATE/askpass.sh" SSH_ASKPASS_REQUIRE=force \
    "${SSH_BASE[@]}" -o BatchMode=no -o NumberOfPasswordPrompts=1 "$@" </dev/null
}

verify_ssh() { # $1=1: also the password user with sudo, and the encrypted key (slower)
  ssh_base
  local out
  out=$("${SSH_BASE[@]}" -o BatchMode=yes -i "$LAB/client_ed25519" "root@$SSH_ADDR" \
    "timeout 30 virsh -c $URI list --name >/dev/null && echo ok" 2>&1) ||
    die "ssh root@$SSH_ADDR:$SSH_PORT with client_ed25519 failed: $out (log: $STATE/sshd.log)"
  [[ $out == ok ]] || die "ssh by key printed unexpected output: $out"
  [[ ${1:-0} == 1 ]] || return 0
  printf '#!/bin/sh\nprintf "%%s\\n" "$LAB_ASKPASS_SECRET"\n' >"$STATE/askpass.sh"
  chmod 700 "$STATE/askpass.sh"
  out=$(ssh_askpass "$(cat "$LAB/$SUDO_USER_NAME.password")" -o PubkeyAuthentication=no \
    -o PreferredAuthentications=password "$SUDO_USER_NAME@$SSH_ADDR" \
    "timeout 30 sudo -n /usr/bin/virsh -c $URI list --name >/dev/null && echo ok" 2>&1) ||
    die "ssh $SUDO_USER_NAME@$SSH_ADDR by password + 'sudo -n virsh' failed: $out"
  [[ $out == ok ]] || die "the $SUDO_USER_NAME check printed unexpected output: $out"
  [[ -s $LAB/client_enc_ed25519.passphrase ]] || return 0
  out=$(ssh_askpass "$(cat "$LAB/client_enc_ed25519.passphrase")" -o PreferredAuthentications=publickey \
    -i "$LAB/client_enc_ed25519" "root@$SSH_ADDR" 'echo ok' 2>&1) ||
    die "ssh root@$SSH_ADDR with the encrypted key failed: $out"
  [[ $out == ok ]] || die "ssh with the encrypted key printed unexpected output: $out"
}

# ------------------------------------------------------------------ KVM ---
# Really run a guest with KVM for a moment (SeaBIOS executes), with this host's qemu, and ask
# qemu whether KVM is on and the VM is still running; a /dev/kvm file test is not enough.
probe_kvm() {
  [[ -c $ROOT/dev/kvm ]] || return 1
  local out
  out=$({ sleep 0.3; printf 'info kvm\ninfo status\nquit\n'; } |
    timeout 10 "${IN_ROOT[@]}" qemu-system-x86_64 -accel kvm -machine pc -m 16 -nodefaults -display none \
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
      die "the $NAME lab domains are '$existing' but LAB_VIRT_TYPE=$LAB_VIRT_TYPE: run $RESET_HINT"
    VIRT_TYPE=$existing
  elif [[ -n ${LAB_VIRT_TYPE:-} ]]; then
    VIRT_TYPE=$LAB_VIRT_TYPE
  elif probe_kvm; then
    VIRT_TYPE=kvm; did "KVM probe (qemu of $NAME): works, using kvm"
  else
    VIRT_TYPE=qemu; did "KVM probe (qemu of $NAME): not usable, using qemu (TCG emulation)"
  fi
}

# -------------------------------------------------------------- domains ---
ensure_bootsector() { # the writer's; made by whichever host comes first, again when its generator changed
  local gen="$REPO/scripts/lab/bootsector.cjs"
  if [[ ! -s $LAB/bootsector.bin || ! -s $LAB/bootsector.layout.json || $gen -nt $LAB/bootsector.bin ]]; then
    node "$gen" "$LAB/bootsector.bin" "$LAB/bootsector.layout.json"
    did "generated boot sector"
  fi
}

disk_path() { echo "$STATE/disks/$1.$2"; }

make_disk() { # name format writer; with the host's own qemu-img
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
  virsh_ destroy "$1" >/dev/null 2>&1 || true
  virsh_ undefine "$1" --snapshots-metadata --checkpoints-metadata >/dev/null 2>&1 || true
}

# "name<TAB>state<TAB>title" for every domain, from one virsh call.
list_domains() {
  local out
  out=$(virsh_t list --all --title) || die "virsh list --all --title failed on $NAME"
  awk 'NR > 2 && NF {
      name = $2; rest = $0; sub(/^ *[^ ]+ +[^ ]+ +/, "", rest)
      state = rest; title = ""
      if (match(rest, /  +[^ ]/)) { state = substr(rest, 1, RSTART - 1); title = substr(rest, RSTART + RLENGTH - 1) }
      sub(/ +$/, "", state)
      print name "\t" state "\t" title }' <<<"$out"
}

ensure_domains() { # $1=1: recreate all lab domains; $2: list_domains output
  local recreate=${1:-0} listing=$2 entry name want format writer cur title disk redefine
  local want_title="$MARK virt=$VIRT_TYPE dir=$LAB"
  mkdir -p "$STATE/disks/tmp" "$STATE/xml"
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    disk=$(disk_path "$name" "$format")
    cur=$(awk -F'\t' -v n="$name" '$1 == n { print $2 }' <<<"$listing")
    title=$(awk -F'\t' -v n="$name" '$1 == n { print $3 }' <<<"$listing")
    redefine=$recreate
    if [[ -n $cur && $title != "$want_title" && $recreate != 1 ]]; then
      # Defined by another checkout (its disk is not ours), or by hand.
      say "$name is not this lab's ('$title'): redefining it"
      redefine=1
    fi
    [[ -z $cur || -e $disk ]] || { say "$name: disk $disk is missing: recreating"; redefine=1; }
    if [[ -z $cur || $redefine == 1 ]]; then
      [[ -z $cur ]] || remove_domain "$name"
      make_disk "$name" "$format" "$writer"
      domain_xml "$name" "$format" >"$STATE/xml/$name.xml"
      virsh_ define "$STATE/xml/$name.xml" >/dev/null
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

destroy_running_domains() { # all of our libvirtd's, throwaway ones too: qemu would outlive it
  local name state _t
  while IFS=$'\t' read -r name state _t; do
    [[ -n $name && $state != "shut off" ]] || continue
    virsh_ destroy "$name" >/dev/null 2>&1 && did "destroyed $name" || true
  done < <(list_domains)
}

destroy_lab_domains() { # someone else's libvirtd: only ours
  local entry name
  for entry in "${DOMAINS[@]}"; do
    name=${entry%%:*}
    [[ $(virsh_ domstate "$name" 2>/dev/null || true) == running ]] || continue
    virsh_ destroy "$name" >/dev/null 2>&1 && did "destroyed $name" || true
  done
}

# ----------------------------------------------------------- host json ---
write_host_json() {
  local ver qemu_ver entry name want format writer first=1 doms="" tmp
  # From the running daemon, never assumed from the package name.
  ver=$(virsh_t version --daemon 2>/dev/null) || die "virsh version --daemon failed on $NAME"
  qemu_ver=$(sed -n 's/^Running hypervisor: QEMU //p' <<<"$ver")
  ver=$(sed -n 's/^Running against daemon: //p' <<<"$ver")
  [[ -n $ver && -n $qemu_ver ]] || die "could not read the versions from 'virsh version --daemon'"
  for entry in "${DOMAINS[@]}"; do
    IFS=: read -r name want format writer <<<"$entry"
    ((first)) || doms+=","
    first=0
    doms+=$'\n    '"{ \"name\": $(json_str "$name"), \"state\": $(json_str "$want"), \"disk\": $(json_str "$(disk_path "$name" "$format")"), \"format\": \"$format\", \"writer\": $([[ $writer == 1 ]] && echo true || echo false) }"
  done
  tmp=$(mktemp "$STATE/.host.json.XXXXXX")
  chmod 600 "$tmp"
  {
    echo "{"
    host_json_fields
    cat <<EOF
  "host": "$SSH_ADDR",
  "port": $SSH_PORT,
  "user": "root",
  "privateKeyPath": $(json_str "$LAB/client_ed25519"),
  "encryptedKeyPath": $(json_str "$LAB/client_enc_ed25519"),
  "hostKey": $(json_str "$(cut -d' ' -f1,2 "$STATE/ssh_host_ed25519_key.pub")"),
  "hostKeyPath": $(json_str "$STATE/ssh_host_ed25519_key.pub"),
  "knownHostsPath": $(json_str "$STATE/known_hosts"),
  "libvirtUri": "$URI",
  "virtType": "$VIRT_TYPE",
  "libvirtVersion": $(json_str "$ver"),
  "qemuVersion": $(json_str "$qemu_ver"),
  "bootSectorPath": $(json_str "$LAB/bootsector.bin"),
  "writerLayout": $(cat "$LAB/bootsector.layout.json"),
  "labDir": $(json_str "$LAB"),
  "tmpDiskDir": $(json_str "$STATE/disks/tmp"),
  "domains": [$doms
  ]
}
EOF
  } >"$tmp"
  if replace_if_changed "$tmp" "$HOST_JSON"; then did "wrote $HOST_JSON"; fi
}

# ------------------------------------------------------------ up, down, status ---
# The part of 'up' every host does alike, once its libvirtd answers and its keys are in place.
up_host() { # $1=1: recreate the lab domains
  local sshd_was_running=0 listing
  ensure_sudo_user
  [[ -z $(ours_sshd_pid) ]] || sshd_was_running=1
  ensure_sshd
  ensure_bootsector
  listing=$(list_domains)
  choose_virt_type "$1" "$listing"
  ensure_domains "$1" "$listing"
  echo "$VIRT_TYPE" >"$STATE/virt_type"
  write_host_json
  # Full check (password user + sudo, encrypted key) when anything changed; the key check always.
  if ((${#CHANGED[@]})) || ((!sshd_was_running)); then verify_ssh 1; else verify_ssh 0; fi
}

# Stop the daemons, qemu processes first so none outlives its libvirtd.
stop_daemons() {
  if [[ -n $(ours_libvirtd_pid) ]]; then
    ! virsh_answers || destroy_running_domains
  elif virsh_answers; then
    destroy_lab_domains
  fi
  stop_libvirtd
  stop_sshd
}

STATUS_RC=0
status_host() { # prints what runs; STATUS_RC=1 if a daemon of ours does not
  local pid rc=0 name state title
  pid=$(ours_libvirtd_pid || true)
  if [[ -n $pid ]]; then say "libvirtd: running (ours, pid $pid, tini $(ours_tini_pid || echo '?'))"
  elif virsh_answers; then say "libvirtd: running (not started by this lab)"
  else say "libvirtd: not running"; rc=1
  fi
  pid=$(ours_sshd_pid || true)
  if [[ -n $pid ]]; then say "sshd: running (pid $pid) on $(sed -n 's/^ListenAddress //p' "$STATE/sshd_config"):$(sed -n 's/^Port //p' "$STATE/sshd_config")"
  else say "sshd: not running"; rc=1
  fi
  say "virt type: $(cat "$STATE/virt_type" 2>/dev/null || echo unknown)"
  if virsh_answers; then
    say "libvirt: $(virsh_t version --daemon 2>/dev/null | sed -n 's/^Running against daemon: //p'), qemu $(virsh_t version 2>/dev/null | sed -n 's/^Running hypervisor: QEMU //p')"
    while IFS=$'\t' read -r name state title; do
      case "$title" in
        "$MARK "*) printf '  %-28s %-10s lab (%s)\n' "$name" "$state" "${title#"$MARK "}" ;;
        "$TMP_MARK "*) printf '  %-28s %-10s throwaway (%s)\n' "$name" "$state" "${title#"$TMP_MARK "}" ;;
        *) [[ -z $ROOT ]] || printf '  %-28s %-10s\n' "$name" "$state" ;; # a chroot's are all the lab's
      esac
    done < <(list_domains)
  fi
  if [[ -f $HOST_JSON ]]; then say "${HOST_JSON##*/}: $HOST_JSON"; else say "${HOST_JSON##*/}: missing"; fi
  STATUS_RC=$rc
}
