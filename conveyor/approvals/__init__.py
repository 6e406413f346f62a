"""Approvals as a security control: signed decisions, N of M, no self-approval, freezes.

Prefect-free: the gate in ``tasks/`` hands answers to ``policy.judge`` and keeps the
``Tally``; ``verify`` checks what was attached to the digest, for the CLI and the
production deploy alike.
"""
