"""Eight concurrent ships of one commit against one ship: the build (reproducible) and the
publication (by digest, then the version tag) of the sample app, on the real Docker Engine
and a real docker-registry on 127.0.0.1.

Each side builds a commit no cache knows. Prints: completed (of 8), distinct image ids,
distinct digests under the version tag, how many found it already published, and the
wall time of the eight against the one, measured in one run. Needs Docker, busybox-static
and docker-registry: ``PYTHONPATH=. python bench/concurrent_ships.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from conveyor.clients.docker_engine import BuiltImage, DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from conveyor.publish import Published, publish

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
POLICY = TagPolicy(frozenset({"integration-ready", "production-ready"}))
RUNS = 8


def _commit(root: Path, name: str) -> Path:
    source = root / name
    shutil.copytree(HELLO, source, symlinks=True)
    (source / "www" / "index.html").write_text(f"<p>{secrets.token_hex(8)}</p>\n")
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "-C", str(source)]
    subprocess.run(["git", "init", "-q", str(source)], check=True, timeout=30)
    subprocess.run([*git, "add", "-A"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", name], check=True, timeout=30)
    return source


def _ship(
    engine: DockerEngine, server: RegistryServer, source: Path, tag: str, locks: Path
) -> tuple[BuiltImage, Published]:
    built = engine.build(source, Path("Dockerfile"), tag, {"VERSION": "1.0"})
    with engine.save(built.id) as saved, RegistryClient(server.url) as client:
        return built, publish(
            client, "conveyor/bench", saved, source.name, policy=POLICY, lock_dir=locks
        )


def main() -> int:
    client = docker.from_env(timeout=120)
    engine = DockerEngine(client, build_timeout_s=600)
    tags: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, RegistryServer(Path(tmp) / "registry") as server:
        root, locks = Path(tmp), Path(tmp) / "locks"
        try:
            one, eight = _commit(root, "one"), _commit(root, "eight")
            tags.append(f"{server.address}/conveyor/bench:one")
            start = time.perf_counter()
            _ship(engine, server, one, tags[-1], locks)
            single = time.perf_counter() - start

            run_tags = [f"{server.address}/conveyor/bench:eight-{i}" for i in range(RUNS)]
            tags += run_tags
            start = time.perf_counter()
            with ThreadPoolExecutor(RUNS) as pool:
                futures = [pool.submit(_ship, engine, server, eight, t, locks) for t in run_tags]
                outcomes = []
                for future in futures:
                    try:
                        outcomes.append(future.result())
                    except Exception as exc:
                        print(f"  run failed: {type(exc).__name__}: {exc}")
            together = time.perf_counter() - start
            with RegistryClient(server.url) as reg:
                under_tag = reg.resolve("conveyor/bench", "eight")
        finally:
            for tag in tags:
                engine.remove_image(tag)
    print(f"completed: {len(outcomes)}/{RUNS}")
    print(f"distinct image ids: {len({b.id for b, _ in outcomes})}")
    print(
        f"distinct digests returned: {len({p.digest for _, p in outcomes})}; under the tag: {under_tag}"
    )
    print(f"found it already published: {sum(p.already for _, p in outcomes)}")
    print(
        f"one ship: {single:.1f} s; {RUNS} concurrent ships: {together:.1f} s "
        f"({together / single:.1f}x) on {os.cpu_count()} cores"
    )
    return 0 if len(outcomes) == RUNS else 1


if __name__ == "__main__":
    sys.exit(main())
