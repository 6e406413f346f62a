"""What the driver sends must be a valid ``App`` by Marathon's own RAML types.

RAML 1.0 libraries are YAML: a small checker resolves ``uses:`` aliases, inheritance,
``Type[]`` arrays, optional ``name?`` properties and ``/regex/`` pattern properties,
and checks types, enums, ranges, lengths and patterns. Unknown fields are errors here
(stricter than RAML's default) so a typo in the template cannot pass silently.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.drivers.marathon_app import load_template, render
from conveyor.release import Release
from tests.parts import missing

# The reference specs sit in shared/ beside the checkout (as in CI and a developer's tree).
_TYPES = Path("reference/marathon-api/v2/types")
REFERENCE = next(
    (
        root / _TYPES
        for root in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared"))
        if (root / _TYPES).is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared" / _TYPES,
)
TEMPLATE = Path(__file__).resolve().parent.parent / "deployments" / "marathon" / "hello.json"
BUILTIN = {"string", "integer", "number", "boolean", "object", "array", "datetime", "any", "nil"}


@cache
def _library(file: Path) -> dict[str, Any]:
    return yaml.safe_load(file.read_text()) or {}


class Raml:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def resolve(self, ref: str, file: Path) -> tuple[dict[str, Any], Path]:
        ref = ref.strip()
        if ref.endswith("[]"):
            return {"type": "array", "items": ref[:-2]}, file
        if ref in BUILTIN:
            return {"type": ref}, file
        lib = _library(file)
        if "." in ref:
            alias, name = ref.split(".", 1)
            target = file.parent / lib["uses"][alias]
            return self.declaration(_library(target)["types"][name]), target
        return self.declaration(lib["types"][ref]), file

    @staticmethod
    def declaration(decl: Any) -> dict[str, Any]:
        if isinstance(decl, str):
            return {"type": decl}
        return dict(decl)

    def check(self, value: Any, decl: dict[str, Any], file: Path, path: str) -> None:
        kind = decl.get("type", "object" if "properties" in decl else "string")
        if isinstance(kind, str) and kind.strip().startswith("(") and kind.strip().endswith(")"):
            kind = kind.strip()[1:-1]
        if isinstance(kind, str) and "|" in kind:
            self._union(value, kind, file, path)
            return
        if isinstance(kind, str) and kind not in BUILTIN:
            parent, parent_file = self.resolve(kind, file)
            self.check(value, parent, parent_file, path)
            if "properties" in decl and isinstance(value, dict):
                self._properties(value, decl, file, path, strict=False)
            self._facets(value, decl, path)
            return
        if not self._builtin(value, kind, path):
            return
        self._facets(value, decl, path)
        if kind == "array" and "items" in decl:
            item = decl["items"]
            item_decl, item_file = (
                self.resolve(item, file) if isinstance(item, str) else (item, file)
            )
            for i, v in enumerate(value):
                self.check(v, item_decl, item_file, f"{path}[{i}]")
        if kind == "object" and "properties" in decl:
            self._properties(value, decl, file, path, strict=True)

    def _union(self, value: Any, kind: str, file: Path, path: str) -> None:
        before = list(self.errors)
        for option in kind.split("|"):
            self.errors = []
            self.check(value, *self.resolve(option, file), path)
            if not self.errors:
                self.errors = before
                return
        self.errors = [*before, f"{path}: matches none of {kind}"]

    def _builtin(self, value: Any, kind: str, path: str) -> bool:
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "datetime": isinstance(value, str) and _is_datetime(value),
        }.get(kind, True)
        if not ok:
            self.errors.append(f"{path}: expected {kind}, got {json.dumps(value)}")
        return ok

    def _facets(self, value: Any, decl: dict[str, Any], path: str) -> None:
        if "enum" in decl and value not in decl["enum"]:
            self.errors.append(f"{path}: {value!r} not in {decl['enum']}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in decl and value < decl["minimum"]:
                self.errors.append(f"{path}: {value} < minimum {decl['minimum']}")
            if "maximum" in decl and value > decl["maximum"]:
                self.errors.append(f"{path}: {value} > maximum {decl['maximum']}")
        if isinstance(value, str | list):
            if "minLength" in decl and len(value) < decl["minLength"]:
                self.errors.append(f"{path}: shorter than {decl['minLength']}")
            if "maxLength" in decl and len(value) > decl["maxLength"]:
                self.errors.append(f"{path}: longer than {decl['maxLength']}")
        if isinstance(value, str) and "pattern" in decl and not re.search(decl["pattern"], value):
            self.errors.append(f"{path}: {value!r} does not match {decl['pattern']}")
        if isinstance(value, list) and decl.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(set(seen)) != len(seen):
                self.errors.append(f"{path}: items are not unique")

    def _properties(
        self, value: dict[str, Any], decl: dict[str, Any], file: Path, path: str, strict: bool
    ) -> None:
        props: dict[str, Any] = decl["properties"] or {}
        named = {
            k.rstrip("?"): (k.endswith("?"), v) for k, v in props.items() if not k.startswith("/")
        }
        patterns = [(re.compile(k.strip("/")), v) for k, v in props.items() if k.startswith("/")]
        for name, (optional, sub) in named.items():
            sub_decl = self.declaration(sub) if sub is not None else {"type": "string"}
            if isinstance(sub_decl.get("required"), bool):
                optional = not sub_decl["required"]
            if name not in value:
                if not optional and "default" not in sub_decl:
                    self.errors.append(f"{path}.{name}: required")
                continue
            self.check(value[name], sub_decl, file, f"{path}.{name}")
        for key, v in value.items():
            if key in named:
                continue
            matching = [p for p in patterns if p[0].fullmatch(key)]
            if matching:
                self.check(v, self.declaration(matching[0][1]), file, f"{path}.{key}")
            elif strict:
                self.errors.append(f"{path}.{key}: unknown field")


def _is_datetime(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def validate_app(app: dict[str, Any]) -> list[str]:
    raml = Raml()
    decl, file = raml.resolve("App", REFERENCE / "app.raml")
    raml.check(app, decl, file, "app")
    return raml.errors


RELEASE = Release(
    app="hello",
    registry="127.0.0.1:5000",
    repository="conveyor/hello",
    digest="sha256:" + "ab" * 32,
    version="1.2.3",
    revision="0123abc",
)


@pytest.fixture(scope="module")
def reference() -> Path:
    if not (REFERENCE / "app.raml").is_file():
        missing(
            "the Marathon RAML reference", f"expected at {REFERENCE} (shared/ beside the checkout)"
        )
    return REFERENCE


def test_rendered_template_is_a_valid_marathon_app(reference: Path) -> None:
    app = render(load_template(TEMPLATE), "/hello", RELEASE)
    assert validate_app(app) == []
    assert app["container"]["docker"]["image"] == RELEASE.image
    assert app["labels"]["conveyor.digest"] == RELEASE.digest
    assert app["labels"]["conveyor.version"] == "1.2.3"
    assert app["labels"]["conveyor.revision"] == "0123abc"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.update(instances=-1), "app.instances: -1 < minimum 0"),
        (lambda a: a["upgradeStrategy"].update(maximumOverCapacity=1.5), "maximumOverCapacity"),
        (lambda a: a["networks"][0].update(mode="bridge"), "app.networks[0].mode"),
        (lambda a: a["healthChecks"][0].update(protocol="GRPC"), "protocol"),
        (lambda a: a.update(cpu=1), "app.cpu: unknown field"),
        (lambda a: a.update(id="/Hello"), "app.id"),
        (lambda a: a["labels"].update(n=1), "app.labels.n: expected string"),
        (lambda a: a["portDefinitions"][0].update(port=70000), "app.portDefinitions[0].port"),
    ],
)
def test_checker_rejects_what_marathon_would(reference: Path, change: Any, expected: str) -> None:
    app = render(load_template(TEMPLATE), "/hello", RELEASE)
    change(app)
    errors = validate_app(app)
    assert any(expected in e for e in errors), errors


def test_checker_accepts_marathons_own_example(reference: Path) -> None:
    example = json.loads((reference.parent / "examples" / "app.json").read_text())
    assert validate_app(example) == []
