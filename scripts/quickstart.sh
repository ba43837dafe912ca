#!/usr/bin/env bash
# The first hour in one command: dependencies, the lab (libvirt + qemu + sshd on
# this machine), and the quickstart program with a local state backend.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ -d node_modules/@pulumi/pulumi ]] || npm ci
npm run build
bash scripts/lab.sh up

lab=.lab/lab.json
get() { node -e "process.stdout.write(String(require('./$lab')$1))"; }

if ! command -v pulumi >/dev/null 2>&1; then
  echo
  echo "The Pulumi CLI is not installed. Install it with: curl -fsSL https://get.pulumi.com | sh   (then open a new shell and run npm run quickstart again)"
  echo
  echo "Meanwhile, here is the quickstart program run through Pulumi's own dynamic-provider server (what 'pulumi up' runs), created and deleted again:"
  npx tsc -p test/tsconfig.json
  out=$(mktemp)
  node .build/test/support/run-example.js examples/quickstart "$out"
  # The result file has no .json suffix, so it is read as JSON explicitly (require would parse it as JavaScript).
  node -e "const r=JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')); for (const c of r.created) console.log('  ' + c.type.split(':').pop() + ' ' + c.name + ': ' + JSON.stringify({snapshotName: c.outs.snapshotName, domain: c.outs.domainName, state: c.outs.state, memory: c.outs.memory, creationTime: c.outs.creationTime}))" "$out"
  rm -f "$out"
  exit 0
fi

# A local state backend and a passphrase secrets provider: no account needed.
mkdir -p .lab/pulumi-state
export PULUMI_BACKEND_URL="file://$PWD/.lab/pulumi-state"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-lab}"
pulumi stack select --create lab --non-interactive
pulumi config set libvirt-snapshots:host "$(get .host)"
pulumi config set libvirt-snapshots:port "$(get .port)"
pulumi config set libvirt-snapshots:user "$(get .user)"
pulumi config set libvirt-snapshots:hostKey "$(get .hostKey)"
pulumi config set --secret libvirt-snapshots:privateKey -- "$(cat "$(get .privateKeyPath)")"
pulumi up --yes
echo
echo "Done. See it with: virsh -c qemu:///system snapshot-list lab-idle"
echo "Remove it with:    PULUMI_BACKEND_URL=$PULUMI_BACKEND_URL PULUMI_CONFIG_PASSPHRASE=$PULUMI_CONFIG_PASSPHRASE pulumi destroy --yes"
