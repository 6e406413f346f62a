#!/usr/bin/env bash
# Install what conveyor needs on a fresh Debian machine (as root), idempotently:
# the Docker Engine, the distribution registry, busybox-static for the sample app,
# Go and govmomi's sources for the vCenter simulator, and the Python package in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io docker-registry busybox-static golang-go golang-github-vmware-govmomi-dev postgresql
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
# Mesosphere's DC/OS CLI (the last Python release, 0.6.1) in a venv of its own: the tests
# drive the simulator with it. Its pins (cryptography 2.0.2, PyJWT 1.4.2) do not build on
# Python 3.11, so it is installed without them, beside the newest versions its code still
# runs with, and a sitecustomize puts back the collections aliases it imports.
dcos_stamp=.venv-dcoscli/.conveyor-installed
if [ ! -f "$dcos_stamp" ] || [ scripts/setup.sh -nt "$dcos_stamp" ]; then
  echo "setup: installing dcoscli 0.6.1 into .venv-dcoscli"
  rm -rf .venv-dcoscli
  "$python" -m venv .venv-dcoscli
  .venv-dcoscli/bin/pip install -q --no-deps 'dcoscli==0.6.1' 'dcos==0.6.1'
  .venv-dcoscli/bin/pip install -q 'jsonschema==2.6.0' 'pager==3.3' 'prettytable==0.7.2' \
    'PyJWT==1.7.1' 'pygments>=2,<3' 'requests>=2.6,<3' 'six>=1.9,<2' 'toml==0.10.2' \
    'sseclient==0.0.19' 'retrying==1.3.3' 'docopt==0.6.2' 'pkginfo' 'cryptography'
  site=$(.venv-dcoscli/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cat > "$site/sitecustomize.py" <<'PY'
import collections
import collections.abc

for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable", "Set", "MutableSet"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
PY
  .venv-dcoscli/bin/dcos --version >/dev/null
  touch "$dcos_stamp"
fi
echo "setup: done (activate with: source .venv/bin/activate)"
