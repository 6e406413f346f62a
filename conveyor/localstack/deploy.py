"""prefect.yaml's side of the local stack: the pools it names, and ``prefect deploy --all``.

Deployments are registered with ``prefect deploy --all`` from the checkout, the command
the README gives a team: the stack then runs exactly what prefect.yaml declares (pull
step, parameters, schedules, pools) instead of a second description of it in Python.
What needs Prefect's client (pools, automations) is handed in by the CLI, so that the
local stack, like the rest of the library, never imports Prefect.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from conveyor.errors import LocalStackFailed

DEPLOY_TIMEOUT_S = 180


def work_pools(checkout: Path) -> list[str]:
    """Every work pool prefect.yaml's deployments name, in the order they appear."""
    path = checkout / "prefect.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LocalStackFailed(f"cannot read {path}: {exc}") from None
    pools: list[str] = []
    for deployment in data.get("deployments") or []:
        name = ((deployment or {}).get("work_pool") or {}).get("name")
        if isinstance(name, str) and name not in pools:
            pools.append(name)
    if not pools:
        raise LocalStackFailed(f"{path} names no work pool: nothing could run its deployments")
    return pools


def register_deployments(checkout: Path, env: Mapping[str, str]) -> int:
    """``prefect deploy --all`` in ``checkout`` with ``env``; the number of deployments."""
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    try:
        done = subprocess.run(
            argv,
            cwd=checkout,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise LocalStackFailed(f"prefect deploy --all ran over {DEPLOY_TIMEOUT_S}s") from None
    output = done.stdout + done.stderr
    count = output.count("Deployment '")
    if done.returncode != 0 or "does not exist" in output:
        tail = "\n  ".join(output.strip().splitlines()[-10:])
        raise LocalStackFailed(f"prefect deploy --all failed in {checkout}:\n  {tail}")
    return count
