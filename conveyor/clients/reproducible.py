"""Make an engine-built image reproducible: its timestamps from the source's commit.

Docker Engine's builder writes the build's own time into the image config
(``created``, every ``history`` entry) and into the layers (directories COPY creates,
every file a RUN writes). Two builds of one commit therefore differ, and an
"immutable" version tag would name whichever was pushed last. Newer BuildKit does
this itself (``SOURCE_DATE_EPOCH`` since 0.11, ``rewrite-timestamp`` since 0.13); the
one inside Debian 12's engine (20.10) is older. This module does it to the image as
``docker save`` writes it, for ``docker load`` to take back:

- every file time in a layer is clamped to the epoch (newer times become the epoch);
  layers with nothing newer than the epoch, such as a base image's, are kept byte for
  byte, so they stay shared with the base;
- the config's times become the epoch and a classic build container's traces are dropped.

The result depends on the layers' content and the epoch only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from typing import IO, Any

# Keys of a PAX header that carry a time; ``mtime`` is set from the member itself.
_PAX_TIMES = ("mtime", "atime", "ctime")
_SPOOL_BYTES = 64 * 1024 * 1024


def rfc3339(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)


def _needs_clamp(layer: tarfile.TarFile, epoch: int) -> bool:
    return any(m.mtime > epoch or any(k in m.pax_headers for k in _PAX_TIMES) for m in layer)


def _clamped_layer(src: IO[bytes], epoch: int) -> IO[bytes] | None:
    """The layer with every time clamped to ``epoch``, or None when it needs no change."""
    with tarfile.open(fileobj=src, mode="r:") as layer:
        if not _needs_clamp(layer, epoch):
            return None
        out = spool()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as clamped:
            for member in layer.getmembers():
                member.mtime = min(int(member.mtime), epoch)
                member.pax_headers = {
                    k: v for k, v in member.pax_headers.items() if k not in _PAX_TIMES
                }
                data = layer.extractfile(member) if member.isreg() else None
                clamped.addfile(member, data)
    out.seek(0)
    return out


def _digest(fileobj: IO[bytes]) -> str:
    fileobj.seek(0)
    h = hashlib.sha256()
    while chunk := fileobj.read(1024 * 1024):
        h.update(chunk)
    fileobj.seek(0)
    return "sha256:" + h.hexdigest()


def _normalised_config(config: dict[str, Any], diff_ids: list[str], epoch: int) -> bytes:
    when = rfc3339(epoch)
    config = dict(config)
    config["created"] = when
    config["history"] = [{**h, "created": when} for h in config.get("history") or []]
    config["rootfs"] = {**config.get("rootfs", {}), "diff_ids": diff_ids}
    # The build container's id and hostname, and the id of the step before the last.
    config.pop("container", None)
    config.pop("container_config", None)
    if isinstance(config.get("config"), dict):
        config["config"] = {k: v for k, v in config["config"].items() if k != "Image"}
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _member_bytes(image: tarfile.TarFile, name: str) -> IO[bytes]:
    found = image.extractfile(name)
    if found is None:
        raise ValueError(f"image archive: {name} is not a file")
    return found


def normalise(saved: IO[bytes], epoch: int, tag: str) -> tuple[IO[bytes], str]:
    """From a ``docker save`` archive of one image, an archive for ``docker load`` of the
    same image with its times from ``epoch``, tagged ``tag``; and the new image id."""
    out = spool()
    with (
        tarfile.open(fileobj=saved, mode="r:") as image,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as result,
    ):
        manifest = json.load(_member_bytes(image, "manifest.json"))
        if len(manifest) != 1:
            raise ValueError(f"image archive holds {len(manifest)} images, expected one")
        entry = manifest[0]
        config = json.load(_member_bytes(image, entry["Config"]))
        layers: list[str] = []
        diff_ids: list[str] = []
        for name in entry["Layers"]:
            original = spool()
            shutil.copyfileobj(_member_bytes(image, name), original)
            original.seek(0)
            layer = _clamped_layer(original, epoch) or original
            diff_id = _digest(layer)
            layer_name = f"{diff_id.split(':', 1)[1]}/layer.tar"
            if layer_name not in layers:
                _add_bytes(result, layer_name, layer)
            layers.append(layer_name)
            diff_ids.append(diff_id)
            layer.close()
        config_bytes = _normalised_config(config, diff_ids, epoch)
        image_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        config_name = f"{image_id.split(':', 1)[1]}.json"
        _add_bytes(result, config_name, config_bytes, epoch)
        new_manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layers}]
        _add_bytes(result, "manifest.json", json.dumps(new_manifest).encode(), epoch)
    out.seek(0)
    return out, image_id


def _add_bytes(
    archive: tarfile.TarFile, name: str, data: bytes | IO[bytes], epoch: int = 0
) -> None:
    if isinstance(data, bytes):
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), epoch
        archive.addfile(info, io.BytesIO(data))
        return
    data.seek(0, 2)
    info = tarfile.TarInfo(name)
    info.size, info.mtime = data.tell(), epoch
    data.seek(0)
    archive.addfile(info, data)
