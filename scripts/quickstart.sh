#!/usr/bin/env bash
# The first hour in one command: dependencies, the lab (libvirt + qemu + sshd on this machine, and the
# Pulumi CLI found or built: scripts/lab/pulumi-cli/ensure.sh), then the quickstart program, created and
# destroyed again, with a local state backend and a passphrase: no account needed.
#
# Which way it runs depends on what the lab has (.lab/lab.json's `pulumi`), and it says which:
#  1. the CLI and the Node.js language host: the real `pulumi up` of the top-level project (its
#     Pulumi.yaml runs examples/quickstart), then `pulumi destroy`;
#  2. the CLI without the language host (the Go module proxy refuses it on the project's machines):
#     `pulumi up` of the directory is blocked; the same program runs through the real CLI engine as an
#     inline Automation API program (preview, up, destroy), labelled as such;
#  3. no CLI at all (no pulumi on PATH, no Go to build it): the program runs through Pulumi's own
#     dynamic-provider server without the engine, labelled as such.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -d node_modules/@pulumi/pulumi ]] || npm ci
npm run build
bash scripts/lab.sh up

lab=.lab/lab.json
get() { node -e "const v = require('./$lab')$1; process.stdout.write(v === null || v === undefined ? '' : String(v))"; }
bin=$(get .pulumi.bin)
langhost=$(get .pulumi.languageHost)

if [[ -n $bin && -n $langhost ]]; then
  # 1. The real thing. Everything under .lab/: state, PULUMI_HOME, the passphrase.
  mkdir -p .lab/pulumi-state .lab/pulumi-home
  [[ -s .lab/quickstart.passphrase ]] || (umask 077 && head -c 18 /dev/urandom | base64 > .lab/quickstart.passphrase)
  export PULUMI_HOME="$PWD/.lab/pulumi-home" PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
  export PULUMI_BACKEND_URL="file://$PWD/.lab/pulumi-state"
  PULUMI_CONFIG_PASSPHRASE=$(cat .lab/quickstart.passphrase)
  export PULUMI_CONFIG_PASSPHRASE
  export PATH="$(dirname "$bin"):$(dirname "$langhost"):$PWD/node_modules/@pulumi/pulumi:$PATH"
  echo "pulumi up of the top-level project (Pulumi.yaml runs examples/quickstart), with $bin ($(get .pulumi.version))"
  pulumi stack select --create lab --non-interactive
  pulumi config set libvirt-snapshots:host "$(get .host)"
  pulumi config set libvirt-snapshots:port "$(get .port)"
  pulumi config set libvirt-snapshots:user "$(get .user)"
  pulumi config set libvirt-snapshots:hostKey "$(get .hostKey)"
  pulumi config set --secret libvirt-snapshots:privateKey -- "$(cat "$(get .privateKeyPath)")"
  pulumi preview --non-interactive
  pulumi up --yes --non-interactive
  echo
  virsh -c qemu:///system snapshot-list lab-idle
  pulumi destroy --yes --non-interactive
  exit 0
fi

npx tsc -p test/tsconfig.json
if [[ -n $bin ]]; then
  # 2. The engine, without the language host.
  echo
  echo "BLOCKED: 'pulumi up' of the quickstart project (examples/quickstart, or the top-level Pulumi.yaml) needs"
  echo "the Node.js language host, and this machine has none: $(get .pulumi.languageHostReason)"
  echo "Where the web is reachable, the official installer brings it with the CLI: curl -fsSL https://get.pulumi.com | sh"
  echo
  echo "Instead, the same program (examples/quickstart/index.ts) runs through the real Pulumi CLI ($bin, $(get .pulumi.version))"
  echo "as an INLINE Automation API program: the CLI's engine plans, runs the provider and keeps the state; this"
  echo "Node process serves the program in place of the language host. preview, up, then destroy:"
  node .build/test/support/quickstart-inline.js
  echo
  echo "That was an inline program through the real engine, not 'pulumi up' of the directory (blocked, see above)."
  exit 0
fi

# 3. No CLI at all.
echo
echo "No Pulumi CLI: $(get .pulumi.reason)"
echo "Install it with: curl -fsSL https://get.pulumi.com | sh   (then open a new shell and run npm run quickstart again);"
echo "or install Go (see scripts/lab/pulumi-cli/build.sh) and npm run lab builds it from its Go modules."
echo
echo "Meanwhile, here is the quickstart program run WITHOUT the Pulumi engine, through Pulumi's own dynamic-provider"
echo "server (what 'pulumi up' runs for each of our resources), created and deleted again:"
out=$(mktemp)
node .build/test/support/run-example.js examples/quickstart "$out"
# The result file has no .json suffix, so it is read as JSON explicitly (require would parse it as JavaScript).
node -e "const r=JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); for (const c of r.created) console.log('  ' + c.type.split(':').pop() + ' ' + c.name + ': ' + JSON.stringify({snapshotName: c.outs.snapshotName, domain: c.outs.domainName, state: c.outs.state, memory: c.outs.memory, creationTime: c.outs.creationTime}))" "$out"
rm -f "$out"
