#!/usr/bin/env bash
# Prints the path of a `schemathesis` command of the pinned version, for
# infra/dev/schemathesis (the API checked against its OpenAPI description).
# Makes a virtual environment under target/test-tools the first time,
# installing Debian's python3-venv when venv is missing and we may.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=4.32.5
venv=${KIHON4_TEST_TOOLS_DIR:-$PWD/target/test-tools}/schemathesis-venv
st=$venv/bin/schemathesis
if [ -x "$st" ] && [ "$("$st" --version 2>/dev/null)" = "schemathesis, version $version" ]; then
  printf '%s\n' "$st"
  exit 0
fi
mkdir -p "$(dirname "$venv")"
if ! python3 -m venv "$venv" >&2 2>/dev/null; then
  rm -rf "$venv"
  echo "schemathesis-env: python3 -m venv failed; installing Debian's python3-venv" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$version" >&2
printf '%s\n' "$st"
