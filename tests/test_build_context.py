"""The build context tar and the source version, on real files and a real git."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from conveyor.clients.build_context import (
    OUTSIDE_DOCKERFILE,
    DockerIgnore,
    context_tar,
    version_of,
)
from conveyor.errors import BuildFailed
from tests.parts import require_binary


def _names(context: Path, dockerfile: str = "Dockerfile") -> dict[str, tarfile.TarInfo]:
    fileobj, _ = context_tar(context, Path(dockerfile))
    with fileobj, tarfile.open(fileobj=fileobj) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_links_are_dereferenced_and_dockerignore_honoured(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "www").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "www" / "index.html").write_text("hi")
    (ctx / "www" / "debug.log").write_text("noise")
    (ctx / "secrets").mkdir()
    (ctx / "secrets" / "keep.txt").write_text("k")
    (ctx / "secrets" / "drop.txt").write_text("d")
    outside = tmp_path / "payload.bin"
    outside.write_bytes(b"\x7fELF-not-really" * 10)
    os.symlink(outside, ctx / "tool")
    os.symlink(ctx / "www", ctx / "site")
    (ctx / ".dockerignore").write_text("# comment\n**/*.log\nsecrets\n!secrets/keep.txt\n")

    members = _names(ctx)

    assert members["tool"].isfile() and members["tool"].size == outside.stat().st_size
    assert members["site"].isdir() and members["site/index.html"].isfile()
    assert "www/debug.log" not in members and "site/debug.log" not in members
    assert "secrets/drop.txt" not in members
    assert "secrets/keep.txt" in members
    assert all(m.uid == 0 and m.uname == "" for m in members.values())


def test_ignored_or_outside_dockerfile_is_still_sent(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / ".dockerignore").write_text("Dockerfile\n")
    assert "Dockerfile" in _names(ctx)

    elsewhere = tmp_path / "other.Dockerfile"
    elsewhere.write_text("FROM scratch\n")
    fileobj, name = context_tar(ctx, elsewhere)
    with fileobj, tarfile.open(fileobj=fileobj) as tar:
        assert name == OUTSIDE_DOCKERFILE
        member = tar.extractfile(name)
        assert member is not None and member.read() == b"FROM scratch\n"


def test_dangling_link_and_loop_are_build_failures(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "d").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    os.symlink(ctx, ctx / "d" / "up")
    with pytest.raises(BuildFailed, match="links back"):
        context_tar(ctx, Path("Dockerfile"))
    (ctx / "d" / "up").unlink()
    os.symlink(tmp_path / "gone", ctx / "d" / "gone")
    with pytest.raises(BuildFailed, match="link to nothing"):
        context_tar(ctx, Path("Dockerfile"))


def test_a_file_gone_while_the_context_is_read_is_a_build_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "index.lock").write_text("")
    real = tarfile.TarFile.gettarinfo

    def vanishing(tar: tarfile.TarFile, name: str, arcname: str) -> tarfile.TarInfo:
        # As a concurrent git removes its lock file between the listing and the read.
        if name.endswith("index.lock"):
            raise FileNotFoundError(2, "No such file or directory", name)
        return real(tar, name, arcname=arcname)

    monkeypatch.setattr(tarfile.TarFile, "gettarinfo", vanishing)
    with pytest.raises(BuildFailed, match=r"cannot read index\.lock"):
        context_tar(ctx, Path("Dockerfile"))


def test_missing_dockerfile_is_a_build_failure(tmp_path: Path) -> None:
    with pytest.raises(BuildFailed, match="Dockerfile not found"):
        context_tar(tmp_path, Path("Dockerfile"))


def test_dockerignore_last_rule_wins() -> None:
    ignore = DockerIgnore(["*.md", "!README.md", "docs/", "/build"])
    assert ignore.excluded("CHANGES.md")
    assert not ignore.excluded("README.md")
    assert ignore.excluded("docs/a/b.txt")
    assert ignore.excluded("build/x")
    assert not ignore.excluded("src/build.py")


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_version_from_git_tag_commit_and_dirty_context(tmp_path: Path) -> None:
    require_binary("git", "apt-get install git")
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "Dockerfile").write_text("FROM scratch\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")

    # No tags, as in a fresh shallow clone: the short commit.
    version, revision = version_of(repo / "app")
    assert revision == head and head.startswith(version)

    _git(repo, "tag", "v1.4.0")
    assert version_of(repo / "app") == ("v1.4.0", head)

    # Edits outside the context leave the app's version alone; inside they mark it.
    (repo / "NOTES").write_text("x")
    assert version_of(repo / "app")[0] == "v1.4.0"
    (repo / "app" / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert version_of(repo / "app")[0] == "v1.4.0-dirty"


def test_reading_the_version_never_writes_the_work_tree(tmp_path: Path) -> None:
    """A build of the repository's root puts ``.git`` into its context tar while other
    builds of the same repository read their versions: a ``git status`` that refreshed
    the index would write ``.git/index.lock`` under the tar, and a lock file that
    vanished between listing and reading failed the build."""
    require_binary("git", "apt-get install git")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "Dockerfile").write_text("FROM scratch\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "one")
    index = repo / ".git" / "index"
    # A checkout's own file times differ from the index's: status would refresh them.
    os.utime(repo / "Dockerfile", (1_000_000_000, 1_000_000_000))
    before = index.read_bytes()
    assert not version_of(repo)[0].endswith("-dirty")
    assert index.read_bytes() == before


def test_version_outside_git_is_a_timestamp(tmp_path: Path) -> None:
    when = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    assert version_of(tmp_path, now=when) == ("0.0.0-20300506070809", None)
