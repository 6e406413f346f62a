"""The pipeline's steps as Prefect tasks, one module per stage.

Tasks stay thin: each finds the flow run's connections (``tasks.runtime``), calls one
function of the ``conveyor`` library, and publishes what a person reads (logs, artifacts).
"""
