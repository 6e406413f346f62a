"""Reading a pipeline file's YAML with bounds, so that no file can hang or crash the reader.

PyYAML composes aliases as shared nodes, which is cheap, but everything after it (path
resolution, pydantic, any walk of the data) sees the expanded tree: ten levels of
ten-fold aliases in 3 KB expand to 10**10 nodes. Its composer also recurses once per
nesting level, so 5,000 ``[`` end in ``RecursionError``. The limits below are far above
what a pipeline file needs (one has a few hundred nodes) and far below what hurts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 256 * 1024
MAX_DEPTH = 40
MAX_ALIASES = 100
MAX_NODES = 20_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class DocumentRefused(Exception):
    """The file is too big, too deep or too repetitive; ``problem`` is one line."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nesting and aliases while composing, and refuses duplicate keys."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        # The scanner looks ahead up to 1,024 characters for a possible key, once per
        # open bracket, before the composer sees any depth: refuse deep flow here.
        if self.flow_level >= MAX_DEPTH:
            raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels (line {self.line + 1})")
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise DocumentRefused(f"more than {MAX_ALIASES} YAML aliases (line {line})")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
            raise DocumentRefused(f"nested deeper than {MAX_DEPTH} levels (line {line})")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: the constructor itself refuses it below
            if first is not None:
                raise DocumentRefused(f"duplicate key {key!r} (line {line}; first at line {first})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: Node) -> None:
    """Count the nodes of the tree as aliases expand it, without expanding it.

    Iterative post-order over distinct nodes with a memo: linear in the composed
    document, whatever the expanded size. A node met again while still open is an
    alias to one of its own parents.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise DocumentRefused(
                    f"YAML aliases expand to more than {MAX_NODES} values "
                    f"(line {node.start_mark.line + 1})"
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise DocumentRefused(
                f"a YAML alias refers to a value that contains it (line {node.start_mark.line + 1})"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _one_line(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
    return "not valid YAML: " + " ".join(str(exc).split())


def read_document(file: Path) -> Any:
    """The file's one YAML document as Python data; ``DocumentRefused`` says why not."""
    try:
        with file.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DocumentRefused(f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise DocumentRefused(f"larger than {MAX_BYTES // 1024} KiB; a pipeline file is a few KiB")
    try:
        return _compose_and_construct(raw)
    except yaml.YAMLError as exc:
        raise DocumentRefused(_one_line(exc)) from None
    except ValueError as exc:
        # A scalar that YAML resolves but Python cannot build: a 5,000-digit integer,
        # a timestamp like 2024-13-45.
        raise DocumentRefused(f"not valid YAML: {' '.join(str(exc).split())}") from None


def _compose_and_construct(raw: bytes) -> Any:
    loader = _BoundedLoader(raw)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
