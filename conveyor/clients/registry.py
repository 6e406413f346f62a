"""An OCI distribution client on httpx: manifests, blobs, tags and referrers.

Blobs are streamed (never whole in memory); every byte crossing the transport is
counted, which is how a promotion proves it moved no layers. Failures become
``conveyor.errors`` at one boundary (``conveyor.clients.http``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx
from pydantic import SecretStr

from conveyor.clients.http import error_for_status, send, tls_context
from conveyor.clients.registry_auth import RegistryAuth, TokenSource
from conveyor.clients.registry_counting import Counters, CountingTransport
from conveyor.config.registry import RegistryConfig
from conveyor.errors import (
    AuthenticationFailed,
    NotFound,
    PermissionDenied,
    PushFailed,
    Rejected,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
CHUNK = 8 * 1024 * 1024
MAX_PAGES = 10_000


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes: re-serialising would change its digest."""

    media_type: str
    digest: str
    data: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.data))

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


def _error_message(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)


class RegistryClient:
    """One registry; repositories are named per call."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: SecretStr | None = None,
        *,
        ca_bundle: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        token_source: TokenSource | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        chunk_size: int = CHUNK,
    ) -> None:
        self.url = url.rstrip("/")
        self.system = f"registry {httpx.URL(self.url).netloc.decode()}"
        self.chunk_size = chunk_size
        self.counters = Counters()
        if transport is None:
            transport = httpx.HTTPTransport(verify=tls_context(ca_bundle))
        self.auth = RegistryAuth(username, password, token_source)
        self._http = httpx.Client(
            base_url=self.url,
            transport=CountingTransport(transport, self.counters),
            auth=self.auth,
            timeout=timeout,
            headers={"User-Agent": "conveyor"},
        )

    @classmethod
    def from_config(
        cls, config: RegistryConfig, password: SecretStr | None = None, **kwargs: Any
    ) -> RegistryClient:
        """A client for the pipeline file's registry; ``password`` is the resolved SecretRef."""
        return cls(config.url, config.username, password, ca_bundle=config.ca_bundle, **kwargs)

    def __repr__(self) -> str:
        return f"RegistryClient(url={self.url!r}, username={self.auth.username!r})"

    @property
    def address(self) -> str:
        """``host:port`` as image references name this registry."""
        return httpx.URL(self.url).netloc.decode()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the boundary ----------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        request = self._http.build_request(method, url, **kwargs)
        response = send(self._http, request, self.system, stream=stream, follow_redirects=True)
        if response.status_code not in ok:
            response.read()
            response.close()
            raise error_for_status(self.system, response, _error_message(response))
        return response

    def ping(self) -> None:
        """Checks the /v2/ endpoint answers and the credentials are accepted."""
        self._request("GET", "/v2/")

    # --- manifests -------------------------------------------------------

    def head_manifest(self, repo: str, reference: str) -> dict[str, Any]:
        """The manifest's descriptor (mediaType, digest, size); NotFound if absent."""
        r = self._request("HEAD", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
        digest = r.headers.get("Docker-Content-Digest", "")
        size = int(r.headers.get("Content-Length", 0))
        media = r.headers.get("Content-Type", "").split(";")[0]
        return {"mediaType": media, "digest": digest, "size": size}

    def resolve(self, repo: str, reference: str) -> str | None:
        """The digest a tag points at now, or None when the tag does not exist."""
        try:
            digest = self.head_manifest(repo, reference)["digest"]
        except NotFound:
            return None
        if not digest:
            return self.get_manifest(repo, reference).digest
        return str(digest)

    def get_manifest(self, repo: str, reference: str) -> Manifest:
        r = self._request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
        data = r.content
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise Rejected(f"{self.system}: manifest {repo}@{reference} has digest {digest}")
        media = r.headers.get("Content-Type", "").split(";")[0]
        if media not in MANIFEST_TYPES:
            media = json.loads(data).get("mediaType", media)
        return Manifest(media, digest, data)

    def _put_manifest(
        self, repo: str, reference: str, data: bytes, media_type: str
    ) -> tuple[str, httpx.Response]:
        digest = sha256_digest(data)
        r = self._request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            ok=(201, 200),
            content=data,
            headers={"Content-Type": media_type},
        )
        # Registries should name the stored digest; when one does not, ask it back.
        answered = r.headers.get("Docker-Content-Digest") or self.resolve(repo, reference)
        if answered != digest:
            raise PushFailed(
                f"{self.system}: stored {repo}:{reference} as {answered}, sent {digest}"
            )
        return digest, r

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT the exact bytes; returns their digest once the registry confirms it."""
        return self._put_manifest(repo, reference, data, media_type)[0]

    def put_referrer(self, repo: str, data: bytes) -> tuple[str, bool]:
        """PUT an OCI manifest with a ``subject`` by digest.

        The flag says whether the registry indexed it for the referrers API itself (it
        answers ``OCI-Subject``); if not, the caller maintains the fallback tag.
        """
        digest = sha256_digest(data)
        _, r = self._put_manifest(repo, digest, data, OCI_MANIFEST)
        return digest, "OCI-Subject" in r.headers

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{repo}/manifests/{digest}", ok=(202, 200))

    def list_tags(self, repo: str, page_size: int = 100) -> list[str]:
        """Every tag, following the Link header page by page (bounded)."""
        tags: list[str] = []
        url: str | None = f"/v2/{repo}/tags/list"
        params: dict[str, Any] | None = {"n": page_size}
        for _ in range(MAX_PAGES):
            if url is None:
                return tags
            r = self._request("GET", url, params=params)
            tags.extend(r.json().get("tags") or [])
            next_link = r.links.get("next", {}).get("url")
            url, params = (next_link, None) if next_link else (None, None)
        raise Rejected(f"{self.system}: {repo} has more than {MAX_PAGES} pages of tags")

    # --- blobs -----------------------------------------------------------

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The blob's size when ``repo`` holds it, else None."""
        try:
            r = self._request("HEAD", f"/v2/{repo}/blobs/{digest}")
        except NotFound:
            return None
        return int(r.headers.get("Content-Length", 0))

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.blob_size(repo, digest) is not None

    def get_blob(self, repo: str, digest: str) -> bytes:
        """A small blob (configs, evidence) read whole and checked against its digest."""
        data = self._request("GET", f"/v2/{repo}/blobs/{digest}").content
        if sha256_digest(data) != digest:
            raise Rejected(f"{self.system}: blob {repo}@{digest} does not match its digest")
        return data

    @contextmanager
    def open_blob(self, repo: str, digest: str) -> Iterator[httpx.Response]:
        """A streamed blob response; read it with ``iter_raw`` and close it by leaving."""
        r = self._request("GET", f"/v2/{repo}/blobs/{digest}", stream=True)
        try:
            yield r
        finally:
            r.close()

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount; False when the registry refused and opened an upload."""
        r = self._request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            ok=(201, 202),
            params={"mount": digest, "from": from_repo},
        )
        if r.status_code == 201:
            return True
        location = r.headers.get("Location")
        # Cancelling is courtesy: the registry purges abandoned uploads, and the token
        # may lack the delete action.
        if location:
            with suppress(NotFound, PermissionDenied, AuthenticationFailed):
                self._request("DELETE", self._absolute(location), ok=(204, 200))
        return False

    def _absolute(self, location: str) -> str:
        return str(self._http.base_url.join(location))

    def _start_upload(self, repo: str) -> str:
        r = self._request("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        location = r.headers.get("Location")
        if not location:
            raise PushFailed(f"{self.system}: upload to {repo} started without a Location")
        return self._absolute(location)

    def upload_blob(
        self,
        repo: str,
        source: bytes | BinaryIO | Iterable[bytes],
        digest: str,
        size: int,
        *,
        chunked: bool = False,
    ) -> str:
        """Upload a blob monolithically (one streamed PUT) or in chunks (PATCH each)."""
        location = self._start_upload(repo)
        chunks = _chunks(source, self.chunk_size)
        if chunked:
            offset = 0
            for chunk in chunks:
                end = offset + len(chunk) - 1
                r = self._request(
                    "PATCH",
                    location,
                    ok=(202,),
                    content=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{end}",
                    },
                )
                location = self._absolute(r.headers.get("Location", location))
                offset = end + 1
            body: Iterable[bytes] = iter(())
            length = 0
        else:
            body, length = chunks, size
        r = self._request(
            "PUT",
            # The Location carries the upload's state in its query: add to it, keep it.
            str(httpx.URL(location).copy_merge_params({"digest": digest})),
            ok=(201,),
            content=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
        )
        answered = r.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise PushFailed(f"{self.system}: blob stored as {answered}, sent {digest}")
        return digest

    def push_blob(self, repo: str, data: bytes) -> dict[str, Any]:
        """Upload a small blob unless present; returns its descriptor (without mediaType)."""
        digest = sha256_digest(data)
        if not self.blob_exists(repo, digest):
            self.upload_blob(repo, data, digest, len(data))
        return {"digest": digest, "size": len(data)}

    # --- referrers -------------------------------------------------------

    def referrers(
        self, repo: str, digest: str, artifact_type: str | None = None
    ) -> list[dict[str, Any]]:
        """Descriptors of manifests whose subject is ``digest``.

        Uses the referrers API, and the ``sha256-<hex>`` tag schema where the registry
        lacks it (distribution 2.8 answers 404 for the route).
        """
        params = {"artifactType": artifact_type} if artifact_type else None
        try:
            r = self._request("GET", f"/v2/{repo}/referrers/{digest}", params=params)
            found = list(r.json().get("manifests") or [])
        except NotFound:
            found = self.referrers_from_tag(repo, digest)
        if artifact_type:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return found

    def referrers_from_tag(self, repo: str, digest: str) -> list[dict[str, Any]]:
        try:
            index = self.get_manifest(repo, referrers_tag(digest))
        except NotFound:
            return []
        return list(index.json.get("manifests") or [])


def referrers_tag(digest: str) -> str:
    """The fallback tag of the OCI 1.1 referrers tag schema: ``sha256-<hex>``."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}"[:128]


def _chunks(source: bytes | BinaryIO | Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut any source into chunks of at most ``size`` bytes, holding one at a time."""
    if isinstance(source, bytes | bytearray):
        for start in range(0, len(source), size):
            yield bytes(source[start : start + size])
        return
    if hasattr(source, "read"):
        while chunk := source.read(size):
            yield chunk
        return
    buffer = bytearray()
    for piece in source:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
