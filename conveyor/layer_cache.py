"""Which compressed blob was published for a layer: Docker's distribution metadata.

Layers are identified by their diff ID (the sha256 of the uncompressed tar, listed in
the image config); a registry stores them compressed, under another digest. Compressing
is most of a push's CPU, and most layers were pushed before: a base image's under every
service of a release and in every build. Docker keeps the mapping diff ID → blob digest
and the repository it was pushed to (``/var/lib/docker/image/*/distribution``), and a
push then checks or mounts that blob instead of compressing the layer again. This is
the same record, one file per registry and diff ID.

An entry is only a hint: a blob named in it is used only once the registry says it has
it (in the target repository, or mounted from the one named), so a stale or wrong entry
costs a request, never a wrong layer. The blob is content-addressed, and it was written
from a layer with that diff ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Blob:
    digest: str  # of the compressed blob
    size: int
    repository: str  # where it was pushed: a repository to mount it from


def default_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "conveyor" / "layers"


class LayerCache:
    """diff ID → ``Blob``, per registry, in files under ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    def __repr__(self) -> str:
        return f"LayerCache(root={str(self.root)!r})"

    def _file(self, registry: str, diff_id: str) -> Path:
        host = hashlib.sha256(registry.encode()).hexdigest()[:16]
        return self.root / host / diff_id.replace(":", "-")

    def get(self, registry: str, diff_id: str) -> Blob | None:
        try:
            data = json.loads(self._file(registry, diff_id).read_text())
            return Blob(str(data["digest"]), int(data["size"]), str(data["repository"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent or unreadable: the layer is compressed as if never seen

    def put(self, registry: str, diff_id: str, blob: Blob) -> None:
        """Written whole or not at all (a rename), so a concurrent reader sees either."""
        file = self._file(registry, diff_id)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=file.parent, prefix=".entry-", delete=False
            ) as fh:
                json.dump(asdict(blob), fh)
        except OSError:
            return  # a cache that cannot be written only makes the next push slower
        try:
            os.replace(fh.name, file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(fh.name)
