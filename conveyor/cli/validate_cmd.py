"""`conveyor validate`: the pipeline file check that ship, plan and every flow run first,
on its own, touching no outside system (no registry, cluster, vCenter or Prefect)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from conveyor.cli.pipeline_cmds import DEFAULT_PIPELINE, PipelineOpt
from conveyor.config import MarathonDriverConfig, load_pipeline
from conveyor.config.paths import secret_files
from conveyor.errors import ConfigError

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def validate(pipeline: PipelineOpt = DEFAULT_PIPELINE) -> None:
    """Check a pipeline file and the files it names; one line per problem (exit 1)."""
    try:
        config = load_pipeline(pipeline)
    except ConfigError as exc:
        for problem in exc.problems:
            # Text, not markup: messages quote the user's input ("[/bold]", "{0,62}").
            err.print(Text(f"{exc.source}: {problem}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    templates = sum(isinstance(e.driver, MarathonDriverConfig) for e in config.environments)
    secrets = len(list(secret_files(config)))
    if config.single_app is not None:
        what = f"app {config.single_app.name}"
    else:
        names = ", ".join(m.name for m in config.members)
        what = f"release {config.release_name} of {len(config.services)} services ({names})"
    summary = (
        f"{Path(pipeline)}: valid: {what}, registry "
        f"{config.registry.host}/{config.registry.repository}, environments "
        f"{' -> '.join(e.name for e in config.environments)}; "
        f"{templates} app template(s), {secrets} secret file reference(s) checked"
    )
    console.print(Text(summary), soft_wrap=True)
