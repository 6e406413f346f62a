"""Deploy drivers, one per target platform, behind the protocol in ``base``."""
