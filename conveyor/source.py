"""From source to a pushed release: the version a build gets, the build, the push by
digest and then the immutable version tag, and the release a digest already pushed is."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from conveyor.clients.build_context import version_of
from conveyor.clients.docker_engine import BuiltImage, DockerEngine
from conveyor.clients.registry import RegistryClient
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.connections import Connections
from conveyor.errors import NotFound
from conveyor.promotion import TagPolicy
from conveyor.publish import publish
from conveyor.release import Release

Log = Callable[[str], None]
OCI = "org.opencontainers.image"


def local_tag(pipeline: Pipeline, version: str) -> str:
    return f"{pipeline.registry.host}/{pipeline.registry.repository}:{version}"


def source_version(pipeline: Pipeline, version: str | None) -> tuple[str, str | None]:
    """The version to build; a dirty tree's builds are told apart by their time.

    Version tags are immutable in the registry, so two different builds of uncommitted
    work must not share one.
    """
    derived, revision = version_of(pipeline.app.context)
    if version:
        return version, revision
    if derived.endswith("-dirty"):
        derived += "." + dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return derived, revision


def build(connections: Connections, version: str | None, log: Log) -> BuiltImage:
    """Build the app's image on the Docker Engine, every build line going to ``log``."""
    app = connections.pipeline.app
    resolved = source_version(connections.pipeline, version)
    tag = local_tag(connections.pipeline, resolved[0])
    log(f"building {tag} from {app.context}")
    return DockerEngine(connections.docker()).build(
        context=app.context,
        dockerfile=app.dockerfile,
        tag=tag,
        build_args={"VERSION": resolved[0], **app.build_args},
        log=lambda line: log(f"build | {line}"),
        source_version=resolved,
    )


def release_of(pipeline: Pipeline, digest: str, version: str, revision: str | None) -> Release:
    return Release(
        app=pipeline.app.name,
        registry=pipeline.registry.host,
        repository=pipeline.registry.repository,
        digest=digest,
        version=version,
        revision=revision,
    )


def push(connections: Connections, built: BuiltImage, log: Log) -> Release:
    """Publish by digest, then set the immutable version tag (``conveyor.publish``): a
    rerun, or a concurrent run of the same commit, finds the image published and goes on;
    a tag naming another image is refused."""
    pipeline = connections.pipeline
    cfg = pipeline.registry
    ref = f"{cfg.host}/{cfg.repository}"
    with DockerEngine(connections.docker()).save(built.id) as saved:
        published = publish(
            connections.registry(),
            cfg.repository,
            saved,
            built.version,
            policy=TagPolicy.from_config(cfg),
        )
    if published.already:
        log(f"{ref}:{built.version} is already pushed at {published.digest}")
    else:
        log(f"pushed {ref}@{published.digest} ({built.version})")
    return release_of(pipeline, published.digest, built.version, built.revision)


def image_labels(registry: RegistryClient, repository: str, digest: str) -> dict[str, str]:
    """The labels of the image config behind ``digest`` (the first image of an index)."""
    manifest = registry.get_manifest(repository, digest)
    body = manifest.json
    if manifest.is_index:
        body = registry.get_manifest(repository, body["manifests"][0]["digest"]).json
    config = json.loads(registry.get_blob(repository, body["config"]["digest"]))
    return dict((config.get("config") or {}).get("Labels") or {})


def find_release(connections: Connections, digest: str) -> Release:
    """The release a pushed digest is, read back from the image's own labels (for a
    release of several services, from its release artifact)."""
    pipeline = connections.pipeline
    if pipeline.services:
        from conveyor import services_release  # it builds on this module

        return services_release.find_release(connections, digest)
    labels = image_labels(connections.registry(), pipeline.registry.repository, digest)
    return release_of(
        pipeline, digest, labels.get(f"{OCI}.version", digest[7:19]), labels.get(f"{OCI}.revision")
    )


def tagged_release(connections: Connections, tag: str) -> Release:
    """The release ``tag`` points at now."""
    repository = connections.pipeline.registry.repository
    digest = connections.registry().resolve(repository, tag)
    if digest is None:
        raise NotFound(f"no digest carries the tag {tag} in {repository} yet: ship one first")
    return find_release(connections, digest)


def newest_release(connections: Connections, env: EnvironmentConfig) -> Release:
    """The release the environment's tag names: the newest that passed into it."""
    return tagged_release(connections, env.tag)
