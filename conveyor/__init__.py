"""conveyor: one image digest from a developer's workstation to production.

This package holds the Prefect-free parts: configuration, the release model, typed
clients for the outside systems, deploy drivers and the development simulators.
The Prefect flows and tasks live in the top-level ``flows`` and ``tasks`` packages.
"""

__version__ = "0.1.0"
