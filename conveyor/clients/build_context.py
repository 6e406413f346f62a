"""The build context as the Docker Engine receives it, and the version of its source.

The context tar is made here rather than by docker-py so that symbolic links are
dereferenced: the sample app links Debian's busybox-static into its context, and an
image built ``FROM scratch`` needs the file, not a link to a path the image lacks.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from conveyor.config.paths import git
from conveyor.errors import BuildFailed

# Where a Dockerfile that lives outside the context is put inside the tar.
OUTSIDE_DOCKERFILE = ".conveyor.Dockerfile"
# The longest name a ustar header holds without a PAX record.
_USTAR_NAME = 100


class DockerIgnore:
    """The patterns of a ``.dockerignore``: globs, ``**``, and ``!`` exceptions; last match wins."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[str, bool]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
            self.rules.append((pattern, include))

    @classmethod
    def of(cls, context: Path) -> DockerIgnore:
        file = context / ".dockerignore"
        return cls(file.read_text().splitlines() if file.is_file() else [])

    @staticmethod
    def _matches(pattern: str, path: str) -> bool:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        # "**/x" also matches "x" at the top, as Docker's own matcher does.
        return pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:])

    def excluded(self, rel: str) -> bool:
        """True when ``rel`` (or a directory above it) is excluded and not re-included."""
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for pattern, include in self.rules:
            if any(self._matches(pattern, p) for p in prefixes):
                verdict = not include
        return verdict

    def may_reinclude(self, rel_dir: str) -> bool:
        """True when an exception could bring back a file under the excluded ``rel_dir``."""
        return any(
            include and (p.startswith(rel_dir + "/") or p.startswith("*"))
            for p, include in self.rules
        )


def _files(context: Path, ignore: DockerIgnore) -> list[tuple[str, Path]]:
    """(name in tar, real path) of every entry, links followed, loops refused."""
    out: list[tuple[str, Path]] = []

    def walk(real_dir: Path, rel_dir: str, seen: frozenset[Path]) -> None:
        for entry in sorted(os.scandir(real_dir), key=lambda e: e.name):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            excluded = ignore.excluded(rel)
            if excluded and not (entry.is_dir() and ignore.may_reinclude(rel)):
                continue
            target = Path(entry.path)
            if not target.exists():
                raise BuildFailed(
                    f"build context: {rel} is a link to nothing ({os.readlink(entry.path)})"
                )
            real = target.resolve()
            if not excluded:
                out.append((rel, real))
            if real.is_dir():
                if real in seen:
                    raise BuildFailed(f"build context: {rel} links back to a directory above it")
                walk(real, rel, seen | {real})

    root = context.resolve()
    walk(root, "", frozenset({root}))
    return out


def _add(tar: tarfile.TarFile, name: str, real: Path, mtime: int | None) -> None:
    info = tar.gettarinfo(str(real), arcname=name)
    # Owner names of the build host mean nothing inside the image.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # COPY keeps these times in the layer; a checkout's own times differ per clone.
    # Whole seconds: a fraction takes a PAX header (see context_tar).
    info.mtime = int(info.mtime) if mtime is None else mtime
    if info.isfile():
        with real.open("rb") as fh:
            tar.addfile(info, fh)
    else:
        tar.addfile(info)


def _read(tar: tarfile.TarFile, name: str, real: Path, mtime: int | None) -> None:
    try:
        _add(tar, name, real, mtime)
    except OSError as exc:
        # A file another process removes or locks while the context is read.
        raise BuildFailed(f"build context: cannot read {name} ({exc.strerror or exc})") from None


def dockerfile_in_context(context: Path, dockerfile: Path) -> tuple[Path, str]:
    """The Dockerfile's real path and the name the daemon should read it under."""
    file = dockerfile if dockerfile.is_absolute() else context / dockerfile
    if not file.is_file():
        raise BuildFailed(f"Dockerfile not found: {file}")
    try:
        return file, file.resolve().relative_to(context.resolve()).as_posix()
    except ValueError:
        return file, OUTSIDE_DOCKERFILE


def context_tar(context: Path, dockerfile: Path, mtime: int | None = None) -> tuple[IO[bytes], str]:
    """An uncompressed tar of ``context`` (rewound) and the Dockerfile's name inside it.

    ``mtime`` (the commit's time) replaces every file's time when given.

    The Dockerfile is always sent, even when ``.dockerignore`` names it, because the
    daemon cannot build without it (Docker's CLI does the same). It goes first, under
    a name a plain ustar header holds: BuildKit tells a tar from a bare Dockerfile by
    its first header alone, and takes a tar that opens with a PAX header (a long or
    non-ASCII name, a fractional time) for a Dockerfile.
    """
    if not context.is_dir():
        raise BuildFailed(f"build context is not a directory: {context}")
    real_dockerfile, name = dockerfile_in_context(context, dockerfile)
    if not (name.isascii() and len(name) <= _USTAR_NAME):
        name = OUTSIDE_DOCKERFILE
    files = _files(context, DockerIgnore.of(context))
    # Spooled: small contexts stay in memory, big ones go to disk instead of RAM.
    fileobj: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _read(tar, name, real_dockerfile, mtime)
        for rel, real in files:
            if rel != name:
                _read(tar, rel, real, mtime)
    fileobj.seek(0)
    return fileobj, name


def version_of(context: Path, now: dt.datetime | None = None) -> tuple[str, str | None]:
    """(version, revision) of the source in ``context``.

    In a git work tree: ``git describe --tags --always`` (the nearest tag, or the short
    commit when a fresh or shallow clone has no tags) plus ``-dirty`` when files under
    the context differ from the commit, and the full commit as revision. Dirtiness is
    judged for the context only, so unrelated edits elsewhere in the repository do not
    change the app's version. Outside git: ``0.0.0-<UTC timestamp>`` and no revision,
    which is unique per build but says nothing about the source.
    """
    revision = git(context, "rev-parse", "--verify", "HEAD")
    if revision:
        described = git(context, "describe", "--tags", "--always") or revision[:12]
        changes = git(context, "status", "--porcelain", "--", ".")
        version = described
        if changes:
            version += "-dirty"
        return version.replace("/", "-")[:128], revision
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    return f"0.0.0-{stamp}", None


def source_of(context: Path) -> str:
    """Where the source lives: the git remote's URL (credentials cut) or the local path."""
    url = git(context, "remote", "get-url", "origin")
    if url:
        scheme, sep, rest = url.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            url = f"{scheme}://{rest.split('@', 1)[1]}"
        return url
    return str(context.resolve())


def commit_epoch(context: Path, revision: str | None) -> int | None:
    """The commit's time in seconds (``SOURCE_DATE_EPOCH``), when there is a commit."""
    if not revision:
        return None
    when = git(context, "show", "-s", "--format=%ct", revision)
    return int(when) if when and when.isdigit() else None


def created_of(context: Path, revision: str | None) -> str:
    """RFC 3339 creation time: the commit's time when known, so rebuilds of one commit agree."""
    epoch = commit_epoch(context, revision)
    if epoch is not None:
        return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
