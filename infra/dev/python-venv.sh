# Sourced by the scripts that keep Python tools in a virtual environment under
# target/test-tools (schemathesis-env.sh, smtp-sink-env.sh,
# deployment-tools-env.sh).
#
#   kihon4_venv VENV NAME
#
# makes the virtual environment VENV unless it is there, installing Debian's
# python3-venv when venv is missing and we may; NAME prefixes its messages,
# which go to standard error. Installing into it is the caller's.
kihon4_venv() {
  local venv=$1 name=$2 sudo=""
  [ -x "$venv/bin/python" ] && return 0
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    rm -rf "$venv"
    echo "$name: python3 -m venv failed; installing Debian's python3-venv" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
}
