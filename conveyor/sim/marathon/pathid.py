"""Marathon's ``PathId`` rules for app and group ids (state/PathId.scala).

Leading, trailing and repeated slashes do not matter; an id without a leading slash is
relative and resolves against its base group; ``.`` and ``..`` segments are resolved
(``..`` above the root stays at the root). Every segment must match Marathon's segment
pattern, and an id may not end with a reserved keyword (``restart``, ``tasks``,
``versions``, ``.``, ``..``) because those words are routes under ``/v2/apps/{id}``.
"""

from __future__ import annotations

import re

ROOT = "/"
SEGMENT_PATTERN = (
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])"
    r"|(\.|\.\.)$"
)
# Java's Matcher.matches() needs the whole segment to match one of the alternatives.
_SEGMENT = re.compile(
    r"(?:(?:[a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*(?:[a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])"
    r"|\.|\.\."
)
RESERVED = ("restart", "tasks", "versions", ".", "..")
INVALID_CHARS = f"must fully match regular expression '{SEGMENT_PATTERN}'"
RESERVED_END = "must not end with any of the following reserved keywords: " + ", ".join(RESERVED)
EMPTY = "Path must contain at least one path element"


def segments(raw: str) -> list[str]:
    """The path's segments: empty ones (from repeated or outer slashes) are dropped."""
    return [part for part in raw.split("/") if part]


def is_absolute(raw: str) -> bool:
    return raw.startswith("/")


def canonical(raw: str, base: str = ROOT) -> str:
    """The absolute id: relative ids resolve against ``base``, ``.``/``..`` are applied."""
    parts = segments(raw) if is_absolute(raw) else segments(base) + segments(raw)
    out: list[str] = []
    for part in parts:
        if part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return "/" + "/".join(out)


def parent(path_id: str) -> str:
    """The enclosing group of an absolute id (the root's parent is the root)."""
    parts = segments(path_id)
    return "/" + "/".join(parts[:-1])


def ancestors(path_id: str) -> list[str]:
    """Every group above ``path_id``, nearest first, ending with the root."""
    found: list[str] = []
    current = path_id
    while current != ROOT:
        current = parent(current)
        found.append(current)
    return found


def common_parent(ids: list[str]) -> str:
    """The innermost group enclosing every id (the root when there is none)."""
    parents = [segments(parent(i)) for i in ids]
    if not parents:
        return ROOT
    common: list[str] = []
    for column in zip(*parents, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return "/" + "/".join(common)


def is_within(path_id: str, group_id: str) -> bool:
    """True when ``path_id`` is ``group_id`` or lies below it."""
    if group_id == ROOT:
        return True
    return path_id == group_id or path_id.startswith(group_id + "/")


def errors(raw: str, base: str | None = None, need_segment: bool = True) -> list[str]:
    """Marathon's validation messages for an id (empty when it is valid).

    With ``base``, the id must resolve to a direct child of that group, as ids of apps
    and groups nested in a group update must.
    """
    parts = segments(raw)
    found: list[str] = []
    if need_segment and not [p for p in parts if p not in (".", "..")]:
        found.append(EMPTY)
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        found.append(INVALID_CHARS)
    if parts and parts[-1] in RESERVED:
        found.append(RESERVED_END)
    if base is not None and not found and parent(canonical(raw, base)) != base:
        found.append(f"Identifier is not child of '{base}'")
    return found
