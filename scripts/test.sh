#!/usr/bin/env bash
# Install, start the Docker Engine the tests build and run on, then run the whole suite.
# Each test starts the other parts it needs (registries, simulators, a Prefect server)
# on free ports of 127.0.0.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
conveyor up --only docker
# A cold build of the vCenter simulator takes minutes; do it once, before the clock of any test.
python -m conveyor.sim.vcenter --build-only >/dev/null
ruff check .
ruff format --check .
# strict = true in pyproject.toml: mypy --strict, with one override for pyVmomi's calls.
mypy conveyor flows tasks
# Three test processes (each with its own Prefect server, registry and worker), whole
# files to each, the longest files first (tests/conftest.py): most of a test's time is
# spent waiting on Prefect, the engine and health checks, so three share 2 cores well
# (measured one after the other on an idle 2-core machine: 600 s at -n 2 in xdist order,
# 468 s at -n 3 longest first); -n 0 (or -p no:xdist) runs everything in one.
exec python -m pytest -q -ra -n 3 --dist loadfile --no-loadscope-reorder "$@"
