#!/usr/bin/env bash
# Prints the paths of Chromium and ChromeDriver for the browser test
# (api/tests/it/browser.rs), installing Debian's chromium, chromium-driver
# and a Japanese font (fonts-ipafont-gothic, so that pages render in Japanese
# rather than as empty boxes) when they are missing.
#
#   read -r chromium chromedriver < <(infra/dev/browser-env.sh)
set -euo pipefail

need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fc-list 2>/dev/null | grep -qi "ipagothic\|noto sans cjk\|ipaexgothic" || need+=(fonts-ipafont-gothic)

if [ ${#need[@]} -gt 0 ]; then
  echo "browser-env: installing ${need[*]} from Debian's packages" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      echo "browser-env: cannot install ${need[*]} without root; install them or set KIHON4_TEST_CHROMIUM and KIHON4_TEST_CHROMEDRIVER" >&2
      exit 1
    fi
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
printf '%s %s\n' /usr/bin/chromium /usr/bin/chromedriver
