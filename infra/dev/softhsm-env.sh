#!/usr/bin/env bash
# Sets up SoftHSM 2 (Debian's softhsm2), a PKCS#11 module in software, for
# the tests of the audit log key held in a token: installs the package when
# it is missing, and keeps a token directory and its configuration under
# target/test-tools/softhsm (or $KIHON4_TEST_TOOLS_DIR/softhsm) with one
# token labelled `kihon4-test` (and one, `kihon4-locked`, for a wrong PIN),
# whose user PIN is in pin.txt there (owner-only). The tests make their
# keys in it, each under its own label.
# Prints one line: the module's path, the configuration's (for
# SOFTHSM2_CONF) and the PIN file's. Quiet unless it installs.
#
#   read -r KIHON4_TEST_PKCS11_MODULE SOFTHSM2_CONF KIHON4_TEST_PKCS11_PIN_FILE < <(infra/dev/softhsm-env.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tools=${KIHON4_TEST_TOOLS_DIR:-$root/target/test-tools}
case $tools in /*) ;; *) tools=$PWD/$tools ;; esac
dir=$tools/softhsm
module=/usr/lib/softhsm/libsofthsm2.so

if [ ! -f "$module" ] || ! command -v softhsm2-util >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "softhsm-env: cannot install softhsm2 without root; install it or set KIHON4_TEST_PKCS11_MODULE" >&2
      exit 1
    fi
  fi
  echo "softhsm-env: installing softhsm2 from Debian's packages" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends softhsm2 >&2
fi

mkdir -p "$dir/tokens"
chmod 700 "$dir" "$dir/tokens"
conf=$dir/softhsm2.conf
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' \
  "$dir/tokens" > "$conf"
pin=$dir/pin.txt
(umask 077 && printf '12345678\n' > "$pin")
# kihon4-locked is logged into with a wrong PIN only (a login holds for
# every session of a process, so a refusal is seen only on a token that
# the process has not opened with the right one).
for label in kihon4-test kihon4-locked; do
  if ! SOFTHSM2_CONF=$conf softhsm2-util --show-slots 2>/dev/null | grep -q "Label: *$label *\$"; then
    SOFTHSM2_CONF=$conf softhsm2-util --init-token --free --label "$label" \
      --so-pin 87654321 --pin 12345678 >/dev/null
  fi
done
printf '%s %s %s\n' "$module" "$conf" "$pin"
