#!/usr/bin/env bash
# Build the Pulumi CLI (and, where the Go module proxy serves them, the Node.js
# language host and pulumi-resource-command) from Go modules, for the lab.
#
#   bash scripts/lab/pulumi-cli/build.sh [pulumi] [language-nodejs] [command]
#
# With no argument it builds all three. Each binary lands in
#   $PULUMI_LAB_DIR/pulumi/<pulumi version>/bin/   (PULUMI_LAB_DIR defaults to /var/lib/pulumi-libvirt-lab)
# and is built once per version: a binary already there with the right version
# is kept. Go's caches live in $PULUMI_LAB_DIR/go/. Go modules come only through
# the Go module proxy configured for the go command (no direct VCS fallback),
# with the machine's own Go (GOTOOLCHAIN=local). Nothing else is downloaded.
#
# It prints one line per binary with the time it took, and exits non-zero with
# a message when go is missing or too old, or when the proxy refuses a module.
# MEASURED.md beside this file has the figures measured on the lab machine:
# on 2026-12-07 the proxy served the CLI's modules but refused the other two.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_DIR=${PULUMI_LAB_DIR:-/var/lib/pulumi-libvirt-lab}

# The CLI's version is the one go.mod pins for pkg/v3 (and sdk/v3: they must be
# equal, and equal to the @pulumi/pulumi SDK in package-lock.json).
PULUMI_VERSION=$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { print $2; exit }' "$HERE/go.mod")
SDK_VERSION=$(awk '$1 == "github.com/pulumi/pulumi/sdk/v3" { print $2; exit }' "$HERE/go.mod")

# Modules without version tags, as pseudo-versions of the commits they were
# released from (commit time in UTC, then the first 12 hex digits).
#  - pulumi-language-nodejs: the pulumi commit tagged v3.248.0 (a88168d865b7);
#    the pkg/v3.248.0 tag sits on a later commit (dc7edd58bc13) that only bumps
#    go.mod files and changelogs.
#  - pulumi-resource-command 1.2.1: pulumi-command commit 7f3eb6f3b77c, tag v1.2.1.
LANGHOST_MODULE=github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3
LANGHOST_VERSION=v3.0.0-20260624120734-a88168d865b7
COMMAND_MODULE=github.com/pulumi/pulumi-command/provider
COMMAND_PSEUDO=v0.0.0-20260303235922-7f3eb6f3b77c
COMMAND_VERSION=1.2.1

VERSION_LDFLAG="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION"
# As Pulumi's release build (.goreleaser.yml, scripts/go-wrapper.sh) does.
GO_BUILD_FLAGS=(-trimpath -tags "osusergo,grpcnotrace")

die() {
  echo "build.sh: $*" >&2
  exit 1
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pulumi language-nodejs command)
for t in "${targets[@]}"; do
  case $t in
    pulumi | language-nodejs | command) ;;
    *) die "unknown binary '$t' (expected pulumi, language-nodejs or command)" ;;
  esac
done

[ -n "$PULUMI_VERSION" ] || die "no github.com/pulumi/pulumi/pkg/v3 requirement in $HERE/go.mod"
[ "$PULUMI_VERSION" = "$SDK_VERSION" ] ||
  die "go.mod pins pkg/v3 $PULUMI_VERSION but sdk/v3 $SDK_VERSION; they must be equal"
lock="$HERE/../../../package-lock.json"
if [ -f "$lock" ] && command -v node > /dev/null; then
  locked=$(node -e 'const l = require(process.argv[1]); const p = l.packages && l.packages["node_modules/@pulumi/pulumi"]; console.log(p ? p.version : "")' "$lock")
  if [ -n "$locked" ] && [ "v$locked" != "$PULUMI_VERSION" ]; then
    echo "build.sh: warning: package-lock.json locks @pulumi/pulumi $locked, go.mod pins the CLI at $PULUMI_VERSION" >&2
  fi
fi

command -v go > /dev/null || die "go is not installed (Go 1.25.11 or newer is needed: the Debian package is too old; this machine kind has it in /usr/local/go)"
export GOTOOLCHAIN=local
need=$(awk '$1 == "go" { print $2; exit }' "$HERE/go.mod")
have=$(go env GOVERSION)
have=${have#go}
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
  die "go $have is too old: go.mod needs go $need (GOTOOLCHAIN=local: no other toolchain is downloaded)"
fi

# Only the proxy: drop the 'direct' and 'off' entries, so a refusal is final
# instead of a fall-back to cloning repositories.
proxy=$(go env GOPROXY | tr ',|' '\n' | grep -vxE 'direct|off|' | paste -sd, - || true)
[ -n "$proxy" ] || die "GOPROXY ($(go env GOPROXY)) names no module proxy"
export GOPROXY=$proxy
export GOMODCACHE="$LAB_DIR/go/mod" GOCACHE="$LAB_DIR/go/cache"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
unset GOPATH GOBIN GOWORK GOEXPERIMENT

BIN="$LAB_DIR/pulumi/$PULUMI_VERSION/bin"
mkdir -p "$BIN" "$GOMODCACHE" "$GOCACHE"
exec 9> "$LAB_DIR/pulumi/.build.lock"
flock 9

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()

# Runs "$@" (a go command), keeping its output in $work/log; on failure prints
# why, naming a proxy refusal as such.
run_go() {
  local what=$1
  shift
  if "$@" > "$work/log" 2>&1; then
    return 0
  fi
  if grep -qE '(403|404|410) (Forbidden|Not Found|Gone)|not available|unknown revision|invalid version' "$work/log"; then
    echo "$what: REFUSED by the Go module proxy:" >&2
  else
    echo "$what: the go command failed:" >&2
  fi
  tail -n 15 "$work/log" | sed 's/^/    /' >&2
  return 1
}

built() { # name seconds
  printf '%-26s built in %4d s  %s\n' "$1" "$2" "$BIN/$1"
}
kept() {
  printf '%-26s up to date        %s\n' "$1" "$BIN/$1"
}

# The binaries without a version command of their own carry a stamp file beside
# them. up_to_date NAME STAMP: NAME is there, built as STAMP says (then: kept).
up_to_date() {
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2> /dev/null)" = "$2" ] && kept "$1"
}
# put_in_place NAME STAMP T0: the build in $BIN/.NAME.tmp becomes NAME, stamped.
put_in_place() {
  mv -f "$BIN/.$1.tmp" "$BIN/$1"
  echo "$2" > "$BIN/.$1.version"
  built "$1" $((SECONDS - $3))
}

build_pulumi() {
  if [ -x "$BIN/pulumi" ] && [ "$(PULUMI_SKIP_UPDATE_CHECK=true "$BIN/pulumi" version 2> /dev/null)" = "$PULUMI_VERSION" ]; then
    kept pulumi
    return 0
  fi
  local t0=$SECONDS
  # -mod=readonly: the checked-in go.sum decides what is downloaded.
  if ! (cd "$HERE" && run_go pulumi go build -mod=readonly "${GO_BUILD_FLAGS[@]}" \
    -ldflags "-s -w $VERSION_LDFLAG" -o "$BIN/.pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi); then
    return 1
  fi
  local v
  v=$(PULUMI_SKIP_UPDATE_CHECK=true "$BIN/.pulumi.tmp" version)
  [ "$v" = "$PULUMI_VERSION" ] || {
    echo "pulumi: built, but 'pulumi version' prints '$v', not $PULUMI_VERSION" >&2
    return 1
  }
  mv -f "$BIN/.pulumi.tmp" "$BIN/pulumi"
  built pulumi $((SECONDS - t0))
}

# A throwaway module beside the CLI's (a copy of its go.mod and go.sum, so the
# language host gets the same pkg/v3 and sdk/v3), plus the pseudo-version.
build_language_nodejs() {
  local name=pulumi-language-nodejs stamp="$LANGHOST_VERSION $PULUMI_VERSION"
  up_to_date $name "$stamp" && return 0
  local t0=$SECONDS m="$work/langhost"
  mkdir -p "$m"
  cp "$HERE/go.mod" "$HERE/go.sum" "$m/"
  (cd "$m" && run_go $name go get "$LANGHOST_MODULE@$LANGHOST_VERSION") || return 1
  (cd "$m" && run_go $name go build -mod=mod "${GO_BUILD_FLAGS[@]}" \
    -ldflags "-s -w $VERSION_LDFLAG" -o "$BIN/.$name.tmp" "$LANGHOST_MODULE") || return 1
  put_in_place $name "$stamp" $t0
}

# Its own module: pulumi-command's go.mod picks its own pkg/sdk versions, as
# its release build does. The version is set as its Makefile sets it.
build_command() {
  local name=pulumi-resource-command stamp="$COMMAND_VERSION $COMMAND_PSEUDO"
  up_to_date $name "$stamp" && return 0
  local t0=$SECONDS m="$work/command"
  mkdir -p "$m"
  (cd "$m" && go mod init lab/pulumi-resource-command > /dev/null 2>&1 &&
    run_go $name go get "$COMMAND_MODULE@$COMMAND_PSEUDO") || return 1
  (cd "$m" && run_go $name go build -mod=mod \
    -ldflags "-s -w -X github.com/pulumi/pulumi-command/provider/pkg/version.Version=$COMMAND_VERSION" \
    -o "$BIN/.$name.tmp" "$COMMAND_MODULE/cmd/pulumi-resource-command") || return 1
  put_in_place $name "$stamp" $t0
}

for t in "${targets[@]}"; do
  case $t in
    pulumi) build_pulumi || failed+=(pulumi) ;;
    language-nodejs) build_language_nodejs || failed+=(pulumi-language-nodejs) ;;
    command) build_command || failed+=(pulumi-resource-command) ;;
  esac
done
rm -f "$BIN"/.*.tmp

if [ ${#failed[@]} -gt 0 ]; then
  die "not built: ${failed[*]} (see above; 'build.sh pulumi' builds only the CLI)"
fi
