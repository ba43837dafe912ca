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
# What both hosts do alike is in scripts/lab/lib.sh; this file says what the Debian 12 host has of its
# own: this machine's packages, the lab's client keys and secrets, lab.json, the second host and guests.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB="$REPO/.lab"
PORT="${LAB_SSH_PORT:-2222}"
# What lib.sh needs to know of this host (see its header).
STATE=$LAB
NAME=debian12
LOG_TAG=lab
SCRIPT=scripts/lab.sh
ROOT=""
IN_HOST=()
SSH_ADDR=127.0.0.1
SSH_PORT=$PORT
HOST_JSON="$LAB/lab-base.json"   # the Debian 12 host's fields; hosts.cjs makes lab.json from it
SUDO_VIRSH=/usr/bin/virsh
RESET_HINT="'LAB_VIRT_TYPE=${LAB_VIRT_TYPE:-} npm run lab -- reset'"
PORT_HINT="; set LAB_SSH_PORT to a free port"
# ovmf (UEFI firmware) and swtpm (TPM emulator) for the special domains test/support/specialDomains.ts makes.
PACKAGES=(libvirt-daemon-system libvirt-daemon-system-sysv libvirt-clients qemu-system-x86
  qemu-utils openssh-server tini sudo ovmf swtpm swtpm-tools)
# shellcheck source=lab/lib.sh
source "$REPO/scripts/lab/lib.sh"

# ------------------------------------------------------------- client keys ---
# The lab's secrets, shared by every host: root's two client keys and labuser's password.
ensure_keys() {
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
  chmod 600 "$LAB/client_ed25519" "$LAB/client_enc_ed25519" "$LAB/client_enc_ed25519.passphrase"
  if [[ ! -s $LAB/$SUDO_USER_NAME.password ]]; then
    (umask 077; rand_secret >"$LAB/$SUDO_USER_NAME.password")
    did "chose $SUDO_USER_NAME's password"
  fi
  ensure_host_keys
}

host_json_fields() { # the secrets only lab.json carries
  cat <<EOF
  "keyPassphrase": $(json_str "$(cat "$LAB/client_enc_ed25519.passphrase")"),
  "sudoUser": { "user": "$SUDO_USER_NAME", "password": $(json_str "$(cat "$LAB/$SUDO_USER_NAME.password")") },
EOF
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
cmd_up() {
  local recreate=${1:-0}
  [[ $(id -u) == 0 ]] || die "run as root"
  [[ $PORT =~ ^[0-9]+$ && $PORT != 22 && $PORT -lt 65536 ]] || die "LAB_SSH_PORT must be a port number other than 22"
  mkdir -p "$LAB"
  chmod 700 "$LAB"
  start_pulumi_cli
  install_missing "" "$LAB/apt.log" "${PACKAGES[@]}"
  write_qemu_conf /etc/libvirt/qemu.conf
  ensure_libvirtd "$QEMU_CONF_CHANGED"
  ensure_keys
  up_host "$recreate"
  ensure_second_host_and_guests
  if ((${#CHANGED[@]})); then
    print_changes
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
  stop_daemons
  print_changes
  say "down ($(elapsed)); disks, keys and config kept in $LAB"
}

cmd_status() {
  local rc
  status_host
  rc=$STATUS_RC
  if [[ -f $LAB/lab.json ]]; then say "lab.json: $LAB/lab.json"; else say "lab.json: missing"; fi
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
