"""Builds of one commit give one image: its times come from the commit, not the clock,
whatever the checkout's file times and however many builds run at once."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from conveyor.clients.docker_engine import OCI, BuiltImage, DockerEngine
from tests.images import discard
from tests.parts import missing

pytestmark = pytest.mark.docker

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
COMMIT_TIME = "2024-05-01T12:00:00Z"
EPOCH = 1714564800


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": COMMIT_TIME, "GIT_AUTHOR_DATE": COMMIT_TIME}
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", "-C", str(repo), *args],
        check=True,
        timeout=30,
        env=env,
        capture_output=True,
    )


def _source(root: Path) -> Path:
    """A commit no build cache knows (a page of random text), dated COMMIT_TIME."""
    source = root / "source"
    shutil.copytree(HELLO, source, symlinks=True)
    (source / "www" / "index.html").write_text(f"<p>{secrets.token_hex(8)}</p>\n")
    subprocess.run(["git", "init", "-q", str(source)], check=True, timeout=30)
    _git(source, "add", "-A")
    _git(source, "commit", "-q", "-m", "one commit")
    return source


def _layer_times(docker_client: docker.DockerClient, image: str) -> list[int]:
    with tempfile.TemporaryFile() as saved:
        for chunk in docker_client.api.get_image(image):
            saved.write(chunk)
        saved.seek(0)
        with tarfile.open(fileobj=saved) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
            times = []
            for name in manifest[0]["Layers"]:
                with tarfile.open(fileobj=archive.extractfile(name)) as layer:
                    times += [int(m.mtime) for m in layer]
    return times


def test_concurrent_builds_of_one_commit_from_two_clones_give_one_image(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if not Path("/usr/bin/busybox").is_file():
        missing("busybox-static", "apt-get install busybox-static")
    source = _source(tmp_path)
    clones = []
    for i, when in enumerate((EPOCH - 86_400 * 365, EPOCH + 86_400 * 365)):
        clone = tmp_path / f"clone{i}"
        subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True, timeout=30)
        # One checkout older than the commit, one newer: COPY would keep either.
        for path in (clone / "www").iterdir():
            os.utime(path, (when, when))
        clones.append(clone)
    engine = DockerEngine(docker_client, build_timeout_s=300)
    tags = [f"conveyor-test/reproducible:{secrets.token_hex(4)}-{i}" for i in range(4)]

    def build(i: int) -> BuiltImage:
        return engine.build(clones[i % 2], Path("Dockerfile"), tags[i], {"VERSION": "1.0"})

    try:
        with ThreadPoolExecutor(4) as pool:
            built = list(pool.map(build, range(4)))
        assert len({b.id for b in built}) == 1, [b.id for b in built]
        image = docker_client.images.get(built[0].id)
        assert image.attrs["Created"] == COMMIT_TIME
        assert image.labels[f"{OCI}.created"] == "2024-05-01T12:00:00+00:00"
        assert sorted(image.tags) == sorted(tags)
        times = _layer_times(docker_client, built[0].id)
        assert times and max(times) <= EPOCH
        served = docker_client.containers.run(
            built[0].id, ["/bin/cat", "/www/version"], remove=True, network_mode="none"
        )
        assert served == b"1.0\n"
    finally:
        discard(*tags)
