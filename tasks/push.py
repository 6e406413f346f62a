"""Push the built image and name the release by its digest from then on."""

from __future__ import annotations

import json

from conveyor.clients.docker_engine import BuiltImage, DockerEngine, connect
from conveyor.clients.registry import RegistryClient
from conveyor.config import EnvironmentConfig, Pipeline
from conveyor.errors import ImmutableTagViolation, NotFound
from conveyor.release import Release
from tasks.common import logger, stage
from tasks.wiring import registry_auth, registry_client

OCI = "org.opencontainers.image"


def _release(pipeline: Pipeline, digest: str, version: str, revision: str | None) -> Release:
    return Release(
        app=pipeline.app.name,
        registry=pipeline.registry.host,
        repository=pipeline.registry.repository,
        digest=digest,
        version=version,
        revision=revision,
    )


def _local_digests(client: object, image_id: str, repository: str) -> set[str]:
    info = client.api.inspect_image(image_id)  # type: ignore[attr-defined]
    return {
        d.split("@", 1)[1] for d in info.get("RepoDigests") or [] if d.startswith(repository + "@")
    }


@stage("push", retries=3)
def push_image(pipeline: Pipeline, built: BuiltImage) -> Release:
    """Push under the version tag, which is immutable: an existing tag must already
    hold this very image (a rerun), or the push is refused before any byte moves."""
    log = logger()
    cfg = pipeline.registry
    ref = f"{cfg.host}/{cfg.repository}"
    with registry_client(pipeline) as registry:
        existing = registry.resolve(cfg.repository, built.version)
    client = connect()
    try:
        if existing is not None:
            if existing in _local_digests(client, built.id, ref):
                log.info("%s:%s is already pushed at %s", ref, built.version, existing)
                return _release(pipeline, existing, built.version, built.revision)
            raise ImmutableTagViolation(
                f"{ref}:{built.version} already names {existing}, another image; "
                "version tags are immutable: commit your change or pass another version"
            )
        digest = DockerEngine(client).push(
            built.id,
            ref,
            built.version,
            registry_auth(pipeline),
            log=lambda line: log.info("push | %s", line),
        )
    finally:
        client.close()
    log.info("pushed %s@%s (%s)", ref, digest, built.version)
    return _release(pipeline, digest, built.version, built.revision)


def _labels(registry: RegistryClient, repository: str, digest: str) -> dict[str, str]:
    manifest = registry.get_manifest(repository, digest)
    body = manifest.json
    if manifest.is_index:
        body = registry.get_manifest(repository, body["manifests"][0]["digest"]).json
    config = json.loads(registry.get_blob(repository, body["config"]["digest"]))
    return dict((config.get("config") or {}).get("Labels") or {})


@stage("find release", retries=3)
def find_release(pipeline: Pipeline, digest: str) -> Release:
    """The release a pushed digest is, read back from the image's own labels."""
    with registry_client(pipeline) as registry:
        labels = _labels(registry, pipeline.registry.repository, digest)
    return _release(
        pipeline, digest, labels.get(f"{OCI}.version", digest[7:19]), labels.get(f"{OCI}.revision")
    )


@stage("newest release", retries=3)
def newest_release(pipeline: Pipeline, env: EnvironmentConfig) -> Release:
    with registry_client(pipeline) as registry:
        digest = registry.resolve(pipeline.registry.repository, env.tag)
    if digest is None:
        raise NotFound(
            f"no digest carries the tag {env.tag} in {pipeline.registry.repository} yet: ship one first"
        )
    return find_release.fn(pipeline, digest)
