#!/usr/bin/env bash
# Install the Debian packages that ffcv needs to build, that the Slurm tests need and the browser that the report's
# test opens pages in (chromium, driven by Playwright), if any is missing.
set -euo pipefail
packages=(pkg-config libopencv-dev libturbojpeg0-dev slurm-wlm slurm-client munge chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing Debian packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "setup: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
