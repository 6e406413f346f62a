"""The pipeline's steps as Prefect tasks, one module per stage.

Tasks stay thin: they resolve settings and secrets, call a client or driver from the
``conveyor`` package, and publish what a person reads (logs, artifacts).
"""
