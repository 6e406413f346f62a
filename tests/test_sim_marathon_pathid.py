"""Marathon's PathId rules (state/PathId.scala) as the simulator applies them, one row per rule."""

from __future__ import annotations

import pytest

from conveyor.sim.marathon import pathid

CANONICAL = [
    ("/a/b", "/", "/a/b"),  # absolute stays
    ("a/b", "/", "/a/b"),  # relative, against the root
    ("a/b", "/g", "/g/a/b"),  # relative, against its group
    ("//a///b//", "/", "/a/b"),  # leading, trailing and repeated slashes do not matter
    ("a/b/", "/g/h", "/g/h/a/b"),
    ("./a", "/g", "/g/a"),  # "." is the group itself
    ("../a", "/g/h", "/g/a"),  # ".." is the parent group
    ("../../../a", "/g", "/a"),  # ".." above the root stays at the root
    ("/g/../a", "/x", "/a"),  # an absolute id ignores the base, its ".." still resolves
    ("", "/g", "/g"),  # the empty id is the base
    ("/", "/g", "/"),
]


@pytest.mark.parametrize(("raw", "base_id", "expected"), CANONICAL)
def test_canonical_path(raw: str, base_id: str, expected: str) -> None:
    assert pathid.canonical(raw, base_id) == expected


VALIDITY = [
    ("/web", None, []),
    ("/team/web-1", None, []),
    ("/a.b.c", None, []),  # dots between labels are allowed
    ("/a/../b", None, []),  # ".." segments are allowed inside an id
    ("/Web", None, [pathid.INVALID_CHARS]),  # upper case
    ("/we_b", None, [pathid.INVALID_CHARS]),  # underscore
    ("/-web", None, [pathid.INVALID_CHARS]),  # leading hyphen
    ("/web-", None, [pathid.INVALID_CHARS]),  # trailing hyphen
    ("/a..b", None, [pathid.INVALID_CHARS]),  # empty label
    ("/web/tasks", None, [pathid.RESERVED_END]),  # reserved keywords end no id
    ("/web/versions", None, [pathid.RESERVED_END]),
    ("/web/restart", None, [pathid.RESERVED_END]),
    ("/web/..", None, [pathid.RESERVED_END]),
    ("/tasks/web", None, []),  # ... but may stand inside one
    ("/", None, [pathid.EMPTY]),  # an app or group needs a segment
    ("//", None, [pathid.EMPTY]),
    ("web", "/g", []),  # a nested id must be a direct child of its group
    ("/g/web", "/g", []),
    ("/other/web", "/g", ["Identifier is not child of '/g'"]),
    ("sub/web", "/g", ["Identifier is not child of '/g'"]),
]


@pytest.mark.parametrize(("raw", "base_id", "expected"), VALIDITY)
def test_path_validity(raw: str, base_id: str | None, expected: list[str]) -> None:
    assert pathid.errors(raw, base=base_id) == expected


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["/a/b/web", "/a/b/db"], "/a/b"),  # siblings: their group
        (["/a/b/web", "/a/c/db"], "/a"),
        (["/a/web"], "/a"),  # one app: its group
        (["/web", "/a/db"], "/"),
        ([], "/"),
    ],
)
def test_common_parent(ids: list[str], expected: str) -> None:
    assert pathid.common_parent(ids) == expected
