#!/usr/bin/env bash
# Finds or builds the Pulumi CLI for the lab and writes what it found to OUT (JSON):
#
#   bash scripts/lab/pulumi-cli/ensure.sh OUT.json
#
#   { "bin": "/abs/pulumi" | null, "version": "v3.248.0" | null, "source": "path" | "built" | null,
#     "reason": null | "why there is no CLI",
#     "languageHost": "/abs/pulumi-language-nodejs" | null, "languageHostReason": null | "why not",
#     "commandProvider": "/abs/pulumi-resource-command" | null, "commandProviderReason": null | "why not" }
#
# 1. A `pulumi` on PATH is used as it is when its version is at least 3.181 (inline Automation API
#    refresh and destroy need it) and at least the @pulumi/pulumi SDK that package-lock.json locks.
# 2. Otherwise build.sh builds the version go.mod pins (cached by version under
#    $PULUMI_LAB_DIR/pulumi/, outside the checkout: a re-run costs a few seconds).
# 3. The Node.js language host and pulumi-resource-command are looked for beside that CLI and on
#    PATH, then build.sh is asked for them; where the Go module proxy refuses them the reason is
#    recorded (its refusal is immediate), never papered over.
#
# Exits 0 when a CLI was found or built, 1 otherwise (OUT then says why). Every pulumi command it
# runs has its own PULUMI_HOME and never checks for updates.
set -uo pipefail

OUT=${1:?usage: ensure.sh OUT.json}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
LAB_DIR=${PULUMI_LAB_DIR:-/var/lib/pulumi-libvirt-lab}
MIN_VERSION=3.181.0
PINNED=$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { print $2; exit }' "$HERE/go.mod")
BUILT_BIN="$LAB_DIR/pulumi/$PINNED/bin"

home=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$home" "$log"' EXIT
export PULUMI_HOME=$home PULUMI_SKIP_UPDATE_CHECK=true PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true

say() { printf 'pulumi-cli: %s\n' "$*"; }
# version_ge A B: A >= B (both without a leading v).
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
json() { node -e 'process.stdout.write(JSON.stringify(process.argv[1] === "" ? null : process.argv[1]))' "$1"; }

locked=$(node -e 'const p = require(process.argv[1]).packages["node_modules/@pulumi/pulumi"]; console.log(p ? p.version : "")' "$REPO/package-lock.json" 2> /dev/null || true)
need=$MIN_VERSION
[ -n "$locked" ] && version_ge "$locked" "$need" && need=$locked

bin="" version="" source="" reason=""
if onpath=$(command -v pulumi 2> /dev/null); then
  v=$(timeout 60 "$onpath" version 2> /dev/null | tr -d '[:space:]')
  if [ -n "$v" ] && version_ge "${v#v}" "$need"; then
    bin=$(readlink -f "$onpath") version=$v source=path
    say "using $onpath ($v, on PATH; at least $need is needed)"
  else
    say "ignoring $onpath: its version '${v:-unknown}' is older than $need (3.181 for inline refresh/destroy, and the locked @pulumi/pulumi $locked)"
  fi
fi
if [ -z "$bin" ] && [ -x "$BUILT_BIN/pulumi" ] && [ "$("$BUILT_BIN/pulumi" version 2> /dev/null | tr -d '[:space:]')" = "$PINNED" ]; then
  bin="$BUILT_BIN/pulumi" version=$PINNED source=built
  say "using $bin ($PINNED, built earlier from Go modules by build.sh)"
fi
if [ -z "$bin" ]; then
  t0=$SECONDS
  if bash "$HERE/build.sh" pulumi > "$log" 2>&1; then
    bin="$BUILT_BIN/pulumi" version=$("$BUILT_BIN/pulumi" version | tr -d '[:space:]') source=built
    say "$(tail -n 1 "$log" | sed 's/  */ /g') ($((SECONDS - t0)) s in all)"
  else
    reason="no pulumi $need or newer on PATH, and building $PINNED from Go modules failed: $(grep -v '^ ' "$log" | tail -n 3 | paste -sd' ' -)"
    sed 's/^/pulumi-cli: build.sh: /' "$log" >&2
    say "NO PULUMI CLI: $reason" >&2
    say "install it with: curl -fsSL https://get.pulumi.com | sh   (or install Go >= $(awk '$1 == "go" { print $2; exit }' "$HERE/go.mod") and re-run npm run lab)" >&2
  fi
fi

# The language host and the command provider: beside the CLI, on PATH, else built (where served).
find_tool() { # name -> path or ""
  local dir
  [ -n "$bin" ] && dir=$(dirname "$bin") && [ -x "$dir/$1" ] && { echo "$dir/$1"; return; }
  command -v "$1" 2> /dev/null || true
}
langhost=$(find_tool pulumi-language-nodejs) langhost_reason=""
cmdprov=$(find_tool pulumi-resource-command) cmdprov_reason=""
if [ -n "$bin" ] && { [ -z "$langhost" ] || [ -z "$cmdprov" ]; }; then
  want=()
  [ -z "$langhost" ] && want+=(language-nodejs)
  [ -z "$cmdprov" ] && want+=(command)
  bash "$HERE/build.sh" "${want[@]}" > "$log" 2>&1 || true
  refusal() { # binary name -> the proxy's answer, one line
    grep -A15 "^$1: " "$log" | grep -oE '[0-9]{3} Forbidden|[0-9]{3} Not Found|server response: .*|go is not installed.*' | sort -u | paste -sd' ' - | head -c 300
  }
  if [ -x "$BUILT_BIN/pulumi-language-nodejs" ]; then langhost="$BUILT_BIN/pulumi-language-nodejs"; fi
  if [ -x "$BUILT_BIN/pulumi-resource-command" ]; then cmdprov="$BUILT_BIN/pulumi-resource-command"; fi
  [ -n "$langhost" ] || langhost_reason="github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3 was not built, build.sh said: $(refusal pulumi-language-nodejs | sed "s/\.$//") (scripts/lab/pulumi-cli/MEASURED.md). Without it 'pulumi up' of a project directory (the quickstart, the examples, the top-level Pulumi.yaml) can't run; inline Automation API programs can."
  [ -n "$cmdprov" ] || cmdprov_reason="github.com/pulumi/pulumi-command/provider was not built, build.sh said: $(refusal pulumi-resource-command | sed "s/\.$//"). The examples' @pulumi/command resources can't run."
elif [ -z "$bin" ]; then
  langhost_reason="no Pulumi CLI" cmdprov_reason="no Pulumi CLI"
fi
[ -n "$langhost" ] || say "no Node.js language host: $langhost_reason"
[ -n "$cmdprov" ] || say "no pulumi-resource-command: $cmdprov_reason"

tmp="$OUT.$$"
cat > "$tmp" << EOF
{
  "bin": $(json "$bin"),
  "version": $(json "$version"),
  "source": $(json "$source"),
  "reason": $(json "$reason"),
  "languageHost": $(json "$langhost"),
  "languageHostReason": $(json "$langhost_reason"),
  "commandProvider": $(json "$cmdprov"),
  "commandProviderReason": $(json "$cmdprov_reason")
}
EOF
mv -f "$tmp" "$OUT"
[ -n "$bin" ]
