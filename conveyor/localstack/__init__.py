"""The local stack a workstation runs the pipeline on: Docker Engine, registry, Prefect."""
