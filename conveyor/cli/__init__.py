"""The `conveyor` command: the local stack, the flows, approvals and look-ups.

It imports Prefect lazily, so commands that do not need it start fast."""
