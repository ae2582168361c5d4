#!/usr/bin/env bash
# Prints the path of a `schemathesis` command of the pinned version, for
# infra/dev/schemathesis (the API checked against its OpenAPI description).
# Makes a virtual environment under target/test-tools the first time
# (infra/dev/python-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
version=4.32.5
venv=${KIHON4_TEST_TOOLS_DIR:-$PWD/target/test-tools}/schemathesis-venv
st=$venv/bin/schemathesis
if [ -x "$st" ] && [ "$("$st" --version 2>/dev/null)" = "schemathesis, version $version" ]; then
  printf '%s\n' "$st"
  exit 0
fi
# shellcheck source=infra/dev/python-venv.sh
. infra/dev/python-venv.sh
kihon4_venv "$venv" schemathesis-env
"$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$version" >&2
printf '%s\n' "$st"
