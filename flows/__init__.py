"""The pipelines: ``ship``, ``nightly_integration``, ``promote`` and ``rollback``."""
