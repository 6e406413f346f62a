"""The `conveyor` command.

The stack, simulator and approval commands live in modules of their own; this one
mounts them and adds the pipeline commands, which run the Prefect flows in this
process against the Prefect server in PREFECT_API_URL (``conveyor up`` starts one and
``eval "$(conveyor env)"`` points the shell at it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from conveyor.cli import (
    approvals,
    inspect_cmds,
    pipeline_cmds,
    releases_cmd,
    sim_marathon,
    sim_vcenter,
    stack,
    validate_cmd,
    verify_cmd,
)
from conveyor.cli.errors import boundary

app = typer.Typer(
    help="conveyor: one image digest from a developer's workstation to production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.registered_commands += stack.app.registered_commands
app.command("approvals", help="List paused runs that wait for an approval.")(
    approvals.list_approvals
)
app.command("approve")(approvals.approve)
app.command("reject")(approvals.reject)
sim = typer.Typer(help="Development simulators of the outside systems.", no_args_is_help=True)
sim.registered_commands += sim_marathon.app.registered_commands
sim.registered_commands += sim_vcenter.app.registered_commands
app.add_typer(sim, name="sim")
pipeline_cmds.register(app)
inspect_cmds.register(app)
app.command()(validate_cmd.validate)
app.command()(releases_cmd.releases)
app.command()(verify_cmd.verify)


def _point_at_local_prefect() -> None:
    """With no PREFECT_API_URL, use the local stack's server if this folder has one (even
    while it is down, so that an error names its URL): without one, Prefect would run
    flows against a throw-away in-process server that no UI, worker or `conveyor
    approve` in another terminal can see."""
    if os.environ.get("PREFECT_API_URL"):
        return
    from conveyor.localstack.stack import LocalStack

    home = Path(os.environ.get("CONVEYOR_HOME", ".conveyor"))
    if not (home / "stack.json").exists():
        return
    stack = LocalStack(home)
    if stack.prefect.home.exists():
        os.environ["PREFECT_API_URL"] = stack.prefect.api_url


def main() -> None:
    """Entry point: every known error ends in one clear line, not a traceback."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    try:
        with boundary():
            _point_at_local_prefect()
            app()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
