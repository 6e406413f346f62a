"""Build, scan and push the services of a release side by side, and carry the unchanged.

The bound is ``min(services, CPUs)``: a docker build of these images is CPU-bound
(compression of layers, the engine's own tar work) and the engine commits layers one
at a time, so more builds than cores only interleave the same work and stretch every
build log; fewer leaves cores idle while the registry round trips of another build wait.

A service is rebuilt only when its build inputs changed: the hash of its context's
files, its Dockerfile (path and bytes: it may live outside the context, shared by
several services) and its build args is recorded in the image's labels, and a digest
the first environment runs whose label matches is carried into the release.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conveyor.clients.build_context import dockerfile_in_context
from conveyor.clients.docker_engine import DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import ServiceConfig
from conveyor.errors import BuildFailed, ConveyorError
from conveyor.promotion import TagPolicy
from conveyor.publish import publish
from conveyor.source import image_labels

INPUTS_LABEL = "dev.conveyor.build-inputs"

log = logging.getLogger(__name__)


def parallelism(services: int, cpus: int | None = None) -> int:
    return max(1, min(services, cpus or os.cpu_count() or 1))


def build_inputs(service: ServiceConfig) -> str:
    """sha256 over the context's files (path and bytes, sorted), Dockerfile and build args."""
    h = hashlib.sha256()
    root = service.context
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    # A Dockerfile outside the context (examples/shop's ``../Dockerfile``) is not among
    # its files, yet a change to it changes the image.
    dockerfile, _ = dockerfile_in_context(root, service.dockerfile)
    h.update(f"dockerfile={service.dockerfile}\0".encode())
    h.update(hashlib.sha256(dockerfile.read_bytes()).digest())
    for key, value in sorted(service.build_args.items()):
        h.update(f"arg:{key}={value}\0".encode())
    return "sha256:" + h.hexdigest()


def carried(labels: Mapping[str, str], inputs: str) -> bool:
    """Whether an image with ``labels`` was built from exactly ``inputs``."""
    return labels.get(INPUTS_LABEL) == inputs


@dataclass(frozen=True)
class Outcome:
    service: str
    digest: str
    rebuilt: bool
    image: str | None = None  # the local image id of a rebuilt service, for its scan


def build_all(
    services: list[ServiceConfig],
    build_one: Callable[[ServiceConfig, logging.Logger], Outcome],
    *,
    workers: int | None = None,
) -> dict[str, Outcome]:
    """Run ``build_one`` for every service, at most ``parallelism`` at once, each with
    its own logger (``conveyor.build.<service>``) so its log is a stream of its own.

    Every build runs to its end; if any failed, BuildFailed names each failed service.
    """
    bound = workers or parallelism(len(services))
    log.info("building %d services, %d at a time", len(services), bound)
    with ThreadPoolExecutor(max_workers=bound, thread_name_prefix="build") as pool:
        futures = {
            s.name: pool.submit(build_one, s, logging.getLogger(f"conveyor.build.{s.name}"))
            for s in services
        }
    done: dict[str, Outcome] = {}
    failed: list[str] = []
    for name, future in futures.items():
        exc = future.exception()
        if exc is None:
            done[name] = future.result()
        elif isinstance(exc, ConveyorError):
            failed.append(f"{name}: {exc}")
        else:
            raise exc
    if failed:
        raise BuildFailed("; ".join(failed))
    return done


@dataclass(frozen=True)
class Target:
    """Where one service's image goes and what the first environment runs of it now."""

    registry: RegistryClient
    host: str  # registry host[:port] as image references name it
    repository: str
    version: str
    revision: str | None
    running: str | None  # the digest the first environment runs, if any
    policy: TagPolicy
    lock_dir: Path | None = None


def build_service(
    engine: DockerEngine,
    service: ServiceConfig,
    target: Target,
    logger: logging.Logger,
    scan: Callable[[str, Path], None] | None = None,
) -> Outcome:
    """Carry the running digest when its build inputs match, else build and publish;
    ``scan(image id, docker save archive)`` of what was built runs beside the push."""
    inputs = build_inputs(service)
    if target.running is not None:
        labels = image_labels(target.registry, target.repository, target.running)
        if carried(labels, inputs):
            logger.info("%s unchanged since %s: carried", service.name, target.running[:19])
            return Outcome(service.name, target.running, rebuilt=False)
    tag = f"{target.host}/{target.repository}:{target.version}"
    built = engine.build(
        service.context,
        service.dockerfile,
        tag,
        # VERSION as the single app's build gets it; not a build input, so an unchanged
        # service is still carried (it keeps telling the version it was built at).
        {"VERSION": target.version, **service.build_args},
        labels={INPUTS_LABEL: inputs},
        log=logger.info,
        source_version=(target.version, target.revision),
    )
    with engine.save(built.id) as saved, _scanning(saved, built.id, scan):
        published = publish(
            target.registry,
            target.repository,
            saved,
            target.version,
            policy=target.policy,
            lock_dir=target.lock_dir,
        )
    logger.info("%s pushed at %s", service.name, published.digest)
    return Outcome(service.name, published.digest, rebuilt=True, image=built.id)


@contextlib.contextmanager
def _scanning(
    saved: IO[bytes], image: str, scan: Callable[[str, Path], None] | None
) -> Iterator[None]:
    """``scan`` of the saved image in a thread while the body pushes it: the scanner
    reads a copy of the archive the push reads (no second ``docker save``), and its
    start (trivy compiles its checks) overlaps the upload. The scan is always waited
    for; a failed push raises its own error, else a failed scan raises its."""
    if scan is None:
        yield
        return
    with tempfile.NamedTemporaryFile(prefix="conveyor-image-", suffix=".tar") as archive:
        shutil.copyfileobj(saved, archive)
        archive.flush()
        saved.seek(0)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan") as pool:
            scanning = pool.submit(scan, image, Path(archive.name))
            yield
            scanning.result()
