#!/usr/bin/env bash
# The whole pipeline on the bundled sample app, on this machine: install, start the
# local stack (Docker Engine, registry, Prefect server, simulated clusters), ship.
# The approval is automatic here, for the demo only; a real run always pauses.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
conveyor up
eval "$(conveyor env)"
conveyor ship --pipeline deployments/local.yaml --auto-approve
echo "The Prefect UI is at http://127.0.0.1:4200; conveyor status shows the stack."
