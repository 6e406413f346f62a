"""Images the tests made, removed once the whole run is over, never while it runs.

All test processes share one Docker Engine and the same few busybox layers, so the
build cache hands one test's image to another test's build as a cached step. Removing
an image while the suite runs, even by tag and with its parents kept, can delete the
step a concurrent build has just taken from the cache: that build fails with "unable
to find image sha256:...", in a test that did nothing wrong. So the tests only note
what they made (``discard``), and the process that ran the session (xdist's controller,
or the only process) removes it all at the end, when no build is left running.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import docker

# The folder where every test process notes its images: made by the first process of the
# session (xdist's workers inherit the environment of the controller that starts them).
_DIR = "CONVEYOR_TEST_DISCARDED_IMAGES"


def start_session() -> None:
    """Give this session (and the test processes it starts) its folder of notes."""
    if _DIR not in os.environ:
        os.environ[_DIR] = tempfile.mkdtemp(prefix="conveyor-images-")


def discard(*refs: str) -> None:
    """Note image references (tags or ids) for removal when the session ends; outside a
    test session (the benches use the same support) remove them now."""
    if _DIR not in os.environ:
        if "PYTEST_XDIST_WORKER" in os.environ:
            # Removing now would bring the race back without a word: fail loudly instead.
            raise RuntimeError(f"{_DIR} did not reach this test process from its controller")
        _remove_now(set(refs))
        return
    notes = Path(os.environ[_DIR]) / f"{os.getpid()}.txt"
    with notes.open("a") as out:
        out.writelines(f"{ref}\n" for ref in refs)


def discard_labelled(client: docker.DockerClient, label: str) -> None:
    """``discard`` every image carrying the label ``label`` (``key=value``)."""
    discard(*(image.id for image in client.images.list(filters={"label": label})))


def discard_repository(client: docker.DockerClient, name: str) -> None:
    """``discard`` every image of the repository ``name``."""
    discard(*(image.id for image in client.images.list(name=name)))


def end_session() -> None:
    """Remove what the session noted, with the untagged parents nobody else uses."""
    folder = Path(os.environ.pop(_DIR))
    _remove_now({ref for notes in folder.glob("*.txt") for ref in notes.read_text().split()})
    for notes in folder.glob("*.txt"):
        notes.unlink()
    folder.rmdir()


def _remove_now(refs: set[str]) -> None:
    if not refs:
        return
    client = docker.from_env(timeout=60)
    try:
        _remove(client, refs)
    finally:
        client.close()


def _remove(client: docker.DockerClient, refs: set[str]) -> None:
    # A parent noted before its child is refused (409) until the child is gone: a few
    # passes, as long as each removes something. What stays is a parent of an image
    # nobody noted, or a tag of an id already removed (404): both are fine to leave.
    for _ in range(5):
        refused = set()
        for ref in sorted(refs):
            try:
                client.images.remove(ref, force=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                refused.add(ref)
        if not refused or refused == refs:
            return
        refs = refused
