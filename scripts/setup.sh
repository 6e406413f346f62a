#!/usr/bin/env bash
# Install what conveyor needs on a fresh Debian machine (as root), idempotently:
# the Docker Engine, the distribution registry, busybox-static for the sample app,
# Go and govmomi's sources for the vCenter simulator, and the Python package in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io docker-registry busybox-static golang-go golang-github-vmware-govmomi-dev
          apache2-utils openssl skopeo git ca-certificates python3-venv python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.conveyor-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the Python package and its dev tools into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: done (activate with: source .venv/bin/activate)"
