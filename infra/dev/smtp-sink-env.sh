#!/usr/bin/env bash
# Prints the path of a Python that has aiosmtpd, for the SMTP sink the tests
# and benchmarks start (test-support/smtp_sink.py). Makes a virtual
# environment under target/test-tools the first time, installing Debian's
# python3-venv when venv is missing and we may.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${KIHON4_TEST_TOOLS_DIR:-$PWD/target/test-tools}/smtp-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  printf '%s\n' "$venv/bin/python"
  exit 0
fi
mkdir -p "$(dirname "$venv")"
if ! python3 -m venv "$venv" >&2 2>/dev/null; then
  rm -rf "$venv"
  echo "smtp-sink-env: python3 -m venv failed; installing Debian's python3-venv" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2' >&2
printf '%s\n' "$venv/bin/python"
