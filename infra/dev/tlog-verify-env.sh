#!/usr/bin/env bash
# Builds tlog-verify (test-support/tlog-verify), the independent checker of
# kihon4's transparency log: its checkpoints, proofs and tiles checked with
# Go's reference packages golang.org/x/mod/sumdb/note and sumdb/tlog. Installs
# Debian's golang-go and golang-golang-x-mod-dev when they are missing and
# builds offline, in GOPATH mode against the x/mod sources that package puts
# under /usr/share/gocode (no Go module proxy is needed or asked), to
# target/test-tools/tlog-verify, again only when main.go is newer than the
# binary. Quiet unless it installs or a build fails.
#
#   . infra/dev/tlog-verify-env.sh   # exports KIHON4_TEST_TLOG_VERIFY, the binary's absolute path
#   tlog_verify_selftest [ARGS...]   # then: gofmt check and `go test` of the package, offline; ARGS go to go test
#
# Run rather than sourced, it does the same and prints the path, like the
# other infra/dev/*-env.sh (`KIHON4_TEST_TLOG_VERIFY=$(infra/dev/tlog-verify-env.sh)`),
# or with the argument `selftest` runs the Go tests. Sourcing it leaves the
# shell's options as they were and works under set -euo pipefail; a failure
# returns non-zero, it never exits the shell that sourced it.

_kihon4_tlog_verify_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1 2>/dev/null || exit 1
_kihon4_tlog_verify_gopath=/usr/share/gocode

# The folder of the test tools, absolute.
_kihon4_tlog_verify_tools() {
  local tools=${KIHON4_TEST_TOOLS_DIR:-$_kihon4_tlog_verify_root/target/test-tools}
  case $tools in /*) ;; *) tools=$PWD/$tools ;; esac
  printf '%s\n' "$tools"
}

# The go command, offline and in GOPATH mode, whatever the caller's Go
# environment says.
_kihon4_tlog_verify_go() {
  local tools
  tools=$(_kihon4_tlog_verify_tools) || return 1
  env GO111MODULE=off GOPATH="$_kihon4_tlog_verify_gopath" GOFLAGS= GOPROXY=off \
    GOTOOLCHAIN=local GOWORK=off GOENV=off CGO_ENABLED=0 GOCACHE="$tools/go-build" go "$@"
}

# Installs what is missing of Go and x/mod, from Debian's packages.
_kihon4_tlog_verify_install() {
  local need=() sudo=""
  command -v go >/dev/null 2>&1 || need+=(golang-go)
  [ -f "$_kihon4_tlog_verify_gopath/src/golang.org/x/mod/sumdb/tlog/tile.go" ] || need+=(golang-golang-x-mod-dev)
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "tlog-verify-env: cannot install ${need[*]} without root; install them or set KIHON4_TEST_TLOG_VERIFY" >&2
      return 1
    fi
  fi
  echo "tlog-verify-env: installing ${need[*]} from Debian's packages" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || return 1
}

# Builds the binary when it is missing or older than main.go, and exports
# KIHON4_TEST_TLOG_VERIFY.
_kihon4_tlog_verify_env() {
  local root=$_kihon4_tlog_verify_root tools
  tools=$(_kihon4_tlog_verify_tools) || return 1
  local src=$root/test-support/tlog-verify/main.go bin=$tools/tlog-verify
  _kihon4_tlog_verify_install || return 1
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    mkdir -p "$(dirname "$bin")" || return 1
    (cd "$root/test-support/tlog-verify" && _kihon4_tlog_verify_go build -o "$bin.tmp.$$" .) || {
      rm -f "$bin.tmp.$$"
      echo "tlog-verify-env: building test-support/tlog-verify failed" >&2
      return 1
    }
    mv -f "$bin.tmp.$$" "$bin" || return 1
  fi
  export KIHON4_TEST_TLOG_VERIFY=$bin
}

# The Go tests of tlog-verify, offline: gofmt must have nothing to say, then
# `go test` (which runs go vet's checks too). Arguments go to go test.
tlog_verify_selftest() {
  _kihon4_tlog_verify_install || return 1
  local dir=$_kihon4_tlog_verify_root/test-support/tlog-verify unformatted
  unformatted=$(gofmt -l "$dir") || return 1
  if [ -n "$unformatted" ]; then
    echo "tlog-verify-env: not gofmt-formatted: $unformatted" >&2
    return 1
  fi
  (cd "$dir" && _kihon4_tlog_verify_go test "$@" .)
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ "${1:-}" = selftest ]; then
    shift
    tlog_verify_selftest "$@"
  else
    _kihon4_tlog_verify_env
    printf '%s\n' "$KIHON4_TEST_TLOG_VERIFY"
  fi
else
  _kihon4_tlog_verify_env
fi
