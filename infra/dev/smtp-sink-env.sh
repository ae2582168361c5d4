#!/usr/bin/env bash
# Prints the path of a Python that has what the tests' and benchmarks' Python
# helpers need: aiosmtpd for the SMTP sink (test-support/smtp_sink.py),
# standardwebhooks (the official Standard Webhooks library) for the webhook
# receiver (test-support/webhook_receiver.py), and httpx, an HTTP client for
# Python scripts that drive or check them. Makes a virtual
# environment under target/test-tools the first time, and installs into it
# again when one of those is missing (an older venv is upgraded in place),
# installing Debian's python3-venv when venv is missing and we may
# (infra/dev/python-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${KIHON4_TEST_TOOLS_DIR:-$PWD/target/test-tools}/smtp-venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import aiosmtpd, standardwebhooks, httpx' 2>/dev/null; then
  printf '%s\n' "$venv/bin/python"
  exit 0
fi
# shellcheck source=infra/dev/python-venv.sh
. infra/dev/python-venv.sh
kihon4_venv "$venv" smtp-sink-env
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  'aiosmtpd>=1.4,<2' 'standardwebhooks>=1.1,<2' 'httpx>=0.28,<1' >&2
printf '%s\n' "$venv/bin/python"
