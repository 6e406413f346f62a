"""Build and push images through the Docker Engine API (an injected ``docker.DockerClient``).

docker-py's exceptions (and the requests and urllib3 ones it lets through) are
translated at one boundary, ``engine_errors``, which the docker deploy driver uses too:
an engine that cannot be reached or does not answer is transient, what it refuses is
terminal. Build and push report their outcome inside the response stream rather than
by HTTP status, so each stream is read to the end and its ``error`` becomes a typed
error too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, cast

import docker
import requests
import urllib3.exceptions
from pydantic import SecretStr, ValidationError

from conveyor.clients import reproducible
from conveyor.clients.build_context import (
    commit_epoch,
    context_tar,
    created_of,
    source_of,
    version_of,
)
from conveyor.clients.buildkit import Progress
from conveyor.clients.engine_stream import Lines, chunks
from conveyor.errors import (
    AuthenticationFailed,
    BuildFailed,
    ConnectFailed,
    ConveyorError,
    NotFound,
    PermissionDenied,
    PushFailed,
    Rejected,
    RequestTimeout,
    ServerError,
)

Log = Callable[[str], None]
Auth = tuple[str, SecretStr]

OCI = "org.opencontainers.image"
_TRACE = "moby.buildkit.trace"
_AUTH_REFUSED = re.compile(r"unauthorized|authentication required|no basic auth credentials", re.I)
_ACCESS_DENIED = re.compile(r"denied", re.I)
# The engine reports an unreachable or failing registry only as text in the stream.
_UNREACHABLE = re.compile(
    r"connection refused|no route to host|connection reset|i/o timeout|handshake timeout|: EOF",
    re.I,
)
_SERVER_STATUS = re.compile(r"unexpected (?:HTTP )?status:? (5\d\d)", re.I)


def _discard(_: str) -> None:
    return None


@dataclass(frozen=True)
class BuiltImage:
    id: str
    tags: list[str]
    version: str
    revision: str | None
    labels: dict[str, str] = field(default_factory=dict)


def connect(base_url: str | None = None, timeout: float = 120) -> docker.DockerClient:
    """A client of the engine at ``base_url`` (default: DOCKER_HOST or the local socket).

    docker-py asks the engine for its API version here, so an engine that does not
    answer fails now, as a transient error.
    """
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise ConnectFailed(
            f"docker engine: cannot reach it ({exc}); is dockerd running?"
        ) from None


def _api_error(what: str, exc: docker.errors.APIError) -> ConveyorError:
    text = str(exc.explanation or exc)
    message = f"docker engine: {what}: {text}"
    status = exc.status_code or 0
    # A registry's refusal reaches us as text inside whatever status the engine chose.
    if status == 401 or _AUTH_REFUSED.search(text):
        return AuthenticationFailed(f"{message} (the registry refused the credentials)")
    if status == 403 or _ACCESS_DENIED.search(text):
        return PermissionDenied(message)
    if status == 404:
        return NotFound(message)
    if status >= 500:
        return ServerError(message, status)
    return Rejected(message)


@contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """The one place docker-py's, requests' and urllib3's exceptions become conveyor errors.

    urllib3's errors escape requests when docker-py reads a stream straight from the
    socket: a registry that stalls a push or a pull leaves the engine silent, and the
    read times out as ``urllib3.exceptions.ReadTimeoutError``.
    """
    try:
        yield
    except docker.errors.APIError as exc:
        raise _api_error(what, exc) from None
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as exc:
        raise RequestTimeout(f"docker engine: {what}: no answer in time ({exc})") from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
        # Refused connections and streams cut mid-way (ChunkedEncodingError) alike.
        raise ConnectFailed(f"docker engine: {what}: cannot reach the engine ({exc})") from None
    except docker.errors.DockerException as exc:
        raise Rejected(f"docker engine: {what}: {exc}") from None
    except ValidationError as exc:
        # A stream message of a shape Docker's JSONMessage does not have.
        raise ServerError(
            f"docker engine: {what}: unexpected stream message ({exc})", 502
        ) from None


def oci_labels(context: Path, tag: str, version: str, revision: str | None) -> dict[str, str]:
    """The ``org.opencontainers.image.*`` annotations for an image built from ``context``."""
    repository = tag.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    labels = {
        f"{OCI}.version": version,
        # A dirty tree has no commit time that describes it; its build time does.
        f"{OCI}.created": created_of(context, None if "-dirty" in version else revision),
        f"{OCI}.source": source_of(context),
        f"{OCI}.title": repository.rsplit("/", 1)[-1],
    }
    if revision:
        labels[f"{OCI}.revision"] = revision
    return labels


class DockerEngine:
    """Typed build and push over ``client``; its timeout bounds every non-build call."""

    def __init__(self, client: docker.DockerClient, build_timeout_s: float = 1800.0) -> None:
        self._client = client
        self._build_timeout_s = build_timeout_s

    def build(
        self,
        context: Path,
        dockerfile: Path,
        tag: str,
        build_args: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        log: Log = _discard,
        source_version: tuple[str, str | None] | None = None,
    ) -> BuiltImage:
        """Build ``context`` and tag the image ``tag``; every log line goes to ``log`` as it comes.

        ``source_version`` is ``version_of(context)`` when the caller already has it.
        Caller ``labels`` override the OCI labels derived from the source.
        """
        version, revision = source_version or version_of(context)
        all_labels = {**oci_labels(context, tag, version, revision), **(labels or {})}
        # A dirty tree has no commit that describes it, so nothing to reproduce.
        epoch = commit_epoch(context, None if "-dirty" in version else revision)
        fileobj, dockerfile_name = context_tar(context, dockerfile, mtime=epoch)
        params = {
            "t": tag,
            "dockerfile": dockerfile_name,
            "buildargs": json.dumps(dict(build_args or {})),
            "labels": json.dumps(all_labels),
            "version": "2",  # BuildKit
        }
        with fileobj, engine_errors(f"build of {tag}"):
            if self._run_network is not None:
                params["networkmode"] = self._run_network
            image_id = self._follow_build(self._post_build(params, fileobj), tag, log)
        if epoch is not None:
            image_id = self._reproducible(image_id or tag, tag, epoch)
        with engine_errors(f"inspect of {tag}"):
            info = self._client.api.inspect_image(image_id or tag)
        return BuiltImage(
            id=info["Id"],
            tags=list(info.get("RepoTags") or []),
            version=version,
            revision=revision,
            labels=dict((info.get("Config") or {}).get("Labels") or {}),
        )

    def _post_build(self, params: dict[str, str], context: IO[bytes]) -> Iterable[object]:
        """The engine's build stream. docker-py's ``build`` speaks only the classic
        builder (no ``version``), so the request is made with its own transport: the
        endpoint is the same, BuildKit is asked for, and the uploaded tar is the context,
        which needs no BuildKit session (the docker CLI's gRPC channel)."""
        api = self._client.api
        headers = {"Content-Type": "application/x-tar"}
        api._set_auth_headers(headers)
        response = api._post(
            api._url("/build"),
            params=params,
            data=context,
            headers=headers,
            stream=True,
            timeout=self._build_timeout_s,
        )
        api._raise_for_status(response)
        return cast(Iterable[object], api._stream_helper(response, decode=True))

    @cached_property
    def _run_network(self) -> str | None:
        """Where RUN steps run; None: BuildKit's default, the engine's bridge. On an
        engine started without one (``dockerd --bridge=none``) every RUN fails there
        ("network bridge not found"); the classic builder gave them loopback only, as
        BuildKit's "none" does."""
        bridges = self._client.api.networks(names=["bridge"])
        return None if any(n["Name"] == "bridge" for n in bridges) else "none"

    def _reproducible(self, image: str, tag: str, epoch: int) -> str:
        """Rewrite the image's times to the commit's (see ``reproducible``); its new id."""
        with self.save(image) as saved:
            archive, image_id = reproducible.normalise(saved, epoch, tag)
        with archive, engine_errors(f"load of {tag}"):
            for chunk in self._client.api.load_image(archive):
                if isinstance(chunk, dict) and ("error" in chunk or "errorDetail" in chunk):
                    raise BuildFailed(f"load of the reproducible {tag} failed: {chunk}")
        return image_id

    @staticmethod
    def _follow_build(stream: Iterable[object], tag: str, log: Log) -> str | None:
        lines = Lines(log)
        progress = Progress(lambda line: lines.feed(f"{line}\n"))
        image_id: str | None = None
        for chunk in chunks(stream):
            if chunk.id == _TRACE and isinstance(chunk.aux, str):
                progress.feed(chunk.aux)
                continue
            if chunk.failure is not None:
                progress.close()
                lines.flush()
                message = chunk.failure or "unknown error"
                tail = "\n  ".join(lines.tail)
                raise BuildFailed(f"build of {tag} failed: {message}\n  last lines:\n  {tail}")
            if chunk.stream is not None:
                lines.feed(chunk.stream)
            elif chunk.status is not None:
                lines.feed(f"{chunk.status}\n")
            image_id = chunk.aux_field("ID") or image_id
        progress.close()
        lines.flush()
        return image_id

    def push(
        self,
        image: str,
        repository_ref: str,
        tag: str,
        auth: Auth | None = None,
        log: Log = _discard,
    ) -> str:
        """Tag ``image`` as ``repository_ref:tag``, push it, return the manifest digest.

        The password travels only in the X-Registry-Auth header; any echo of it in the
        stream is masked before a line reaches ``log`` or an error.
        """
        auth_config = None
        secret = ""
        if auth is not None:
            secret = auth[1].get_secret_value()
            auth_config = {"username": auth[0], "password": secret}
        target = f"{repository_ref}:{tag}"
        with engine_errors(f"push of {target}"):
            self._client.api.tag(image, repository_ref, tag)
            stream = self._client.api.push(
                repository_ref, tag=tag, stream=True, decode=True, auth_config=auth_config
            )
            digest = self._follow_push(stream, target, log, secret)
        if digest is None:
            raise PushFailed(f"push of {target}: the engine reported no manifest digest")
        return digest

    @staticmethod
    def _follow_push(stream: Iterable[object], target: str, log: Log, secret: str) -> str | None:
        def mask(text: str) -> str:
            return text.replace(secret, "***") if secret else text

        digest: str | None = None
        for chunk in chunks(stream):
            if chunk.failure is not None:
                message = mask(chunk.failure or "None")
                if _AUTH_REFUSED.search(message):
                    raise AuthenticationFailed(
                        f"push of {target}: registry refused the credentials: {message}"
                    )
                if _ACCESS_DENIED.search(message):
                    raise PermissionDenied(f"push of {target}: {message}")
                if _UNREACHABLE.search(message):
                    raise ConnectFailed(f"push of {target}: registry unreachable: {message}")
                server = _SERVER_STATUS.search(message)
                if server:
                    raise ServerError(f"push of {target}: {message}", int(server.group(1)))
                raise PushFailed(f"push of {target} failed: {message}")
            digest = chunk.aux_field("Digest") or digest
            # Byte-count progress updates would flood the log; phase changes are enough.
            progress = chunk.progress_detail
            if chunk.status is not None and not (progress and progress.total):
                layer = f"{chunk.id}: " if chunk.id else ""
                log(mask(f"{layer}{chunk.status}"))
        return digest

    def save(self, image: str) -> IO[bytes]:
        """``docker save`` of one image into a rewound spooled file (for ``publish``)."""
        saved = reproducible.spool()
        try:
            with engine_errors(f"save of {image}"):
                for chunk in self._client.api.get_image(image):
                    saved.write(chunk)
        except BaseException:
            saved.close()
            raise
        saved.seek(0)
        return saved
