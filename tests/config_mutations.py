"""Malformed and hostile variants of deployments/local.yaml, made here, for the
pipeline-file tests and bench/validate_mutations.py.

Each mutation writes one file into a copy of the repository's layout (a git work tree
of its own, so "inside the repository" means inside that copy) and says what must
happen: ``expect`` is a piece of the one problem line it must end in, or None when the
file is valid and must be accepted.
"""

from __future__ import annotations

import copy
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "deployments" / "local.yaml"
# Every file must be decided within this; the slowest takes milliseconds.
BOUND_S = 5.0

Data = dict[str, Any]


@dataclass(frozen=True)
class Mutation:
    name: str
    # The file's bytes, given the repository copy (for paths and extra files).
    make: Callable[[Path], bytes]
    expect: str | None
    env: dict[str, str] = field(default_factory=dict)


def make_repository(root: Path) -> Path:
    """A copy of the parts of this repository that deployments/local.yaml names."""
    shutil.copytree(ROOT / "deployments", root / "deployments")
    shutil.copytree(ROOT / "examples" / "hello", root / "examples" / "hello", symlinks=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    return root


def _base() -> Data:
    data: Data = yaml.safe_load(LOCAL.read_text())
    return data


def _data(change: Callable[[Data], object]) -> Callable[[Path], bytes]:
    def make(_: Path) -> bytes:
        data = copy.deepcopy(_base())
        change(data)
        return yaml.safe_dump(data, sort_keys=False).encode()

    return make


def _text(change: Callable[[str], str]) -> Callable[[Path], bytes]:
    return lambda _: change(LOCAL.read_text()).encode()


def _raw(content: bytes) -> Callable[[Path], bytes]:
    return lambda _: content


def _with_files(
    files: Callable[[Path], object], change: Callable[[Data], object]
) -> Callable[[Path], bytes]:
    def make(root: Path) -> bytes:
        files(root)
        return _data(change)(root)

    return make


def _alias_bomb(levels: int, fan: int = 10) -> bytes:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * fan)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def _env(i: int) -> Callable[[Data], Data]:
    return lambda d: d["environments"][i]


def _set(path: str, value: object) -> Callable[[Data], None]:
    """Set a dotted path ('environments.1.approval.timeout'); None deletes the key."""

    def change(data: Data) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is None:
            del node[key]
        else:
            node[key] = value

    return change


def _setting(name: str, path: str, value: object, expect: str | None) -> Mutation:
    """The base file with one value at ``path`` changed (None deletes it)."""
    return Mutation(name, _data(_set(path, value)), expect)


def _share_driver(data: Data) -> None:
    """Valid YAML reuse: production's driver written once and aliased (a merge key)."""
    data["environments"][1]["driver"]["auth"] = data["environments"][0]["driver"]["auth"]


def _link_to_etc(root: Path) -> None:
    (root / "examples" / "etc-link").symlink_to("/etc")


def _bad_template(content: str) -> Callable[[Path], object]:
    return lambda root: (root / "deployments" / "marathon" / "bad.json").write_text(content)


def _secrets_dir(root: Path) -> None:
    (root.parent / "worker-secrets").mkdir(exist_ok=True)


def _duplicate_app(text: str) -> str:
    return text.replace("registry:\n", "app:\n  name: other\n  context: .\n\nregistry:\n", 1)


def _duplicate_url(text: str) -> str:
    return text.replace(
        "  url: http://127.0.0.1:5000\n",
        "  url: http://127.0.0.1:5000\n  url: http://127.0.0.1:5001\n",
        1,
    )


def _merge_keys(text: str) -> str:
    """A merge key that overrides one field of an anchored mapping: valid YAML reuse."""
    line = "    health: {path: /health, timeout_s: 60}\n"
    text = text.replace(line, "    health: &health {path: /health, timeout_s: 60}\n", 1)
    return text.replace(line, "    health: {<<: *health, timeout_s: 30}\n", 1)


P = "environments.1.preflight.vsphere"
A = "environments.1.approval"

MUTATIONS: list[Mutation] = [
    # --- the file as YAML ---------------------------------------------------------
    Mutation("alias-bomb-10-levels", _raw(_alias_bomb(10)), "YAML aliases"),
    Mutation("alias-bomb-8-levels", _raw(_alias_bomb(8)), "expand to more than"),
    Mutation("nested-brackets-5000", _raw(b"app: " + b"[" * 5000), "nested deeper than"),
    Mutation("nested-braces-500", _raw(b"app: " + b"{a: " * 500 + b"1" + b"}" * 500), "deeper"),
    Mutation("recursive-alias", _raw(b"app: &a [*a]\n"), "contains it"),
    Mutation("oversize", _text(lambda t: t + "#" * (300 * 1024) + "\n"), "larger than"),
    Mutation("duplicate-top-level-key", _text(_duplicate_app), "duplicate key 'app'"),
    Mutation("duplicate-nested-key", _text(_duplicate_url), "duplicate key 'url'"),
    Mutation("duplicate-flow-key", _raw(b"app: {name: a, name: b}\n"), "duplicate key 'name'"),
    Mutation(
        "unterminated-quote",
        _text(lambda t: t.replace("name: hello", 'name: "[/bold]')),
        "not valid YAML",
    ),
    Mutation(
        "tab-indent", _text(lambda t: t.replace("  name: hello", "\tname: hello")), "not valid YAML"
    ),
    Mutation(
        "bad-indent",
        _text(lambda t: t.replace("  repository:", "     repository:")),
        "not valid YAML",
    ),
    Mutation("not-utf8", _raw(b"app:\n  name: h\xe9llo\xff\n"), "not valid YAML"),
    Mutation("nul-byte", _raw(b"app:\n  name: he\x00llo\n"), "not valid YAML"),
    Mutation(
        "python-tag", _raw(b"app: !!python/object/apply:os.system ['true']\n"), "not valid YAML"
    ),
    Mutation("two-documents", _text(lambda t: t + "---\napp: {name: x}\n"), "not valid YAML"),
    Mutation("huge-integer", _raw(b"app: " + b"9" * 5000 + b"\n"), "not valid YAML"),
    Mutation("impossible-date", _raw(b"app: 2024-13-45\n"), "not valid YAML"),
    Mutation("unhashable-key", _raw(b"? [a, b]\n: c\n"), "not valid YAML"),
    Mutation("empty-file", _raw(b""), "(top level)"),
    Mutation("only-a-comment", _raw(b"# nothing\n"), "(top level)"),
    Mutation("top-level-list", _raw(b"- app\n- registry\n"), "(top level)"),
    Mutation("top-level-scalar", _raw(b"hello\n"), "(top level)"),
    Mutation("byte-order-mark", _text(lambda t: "\ufeff" + t), None),
    Mutation("merge-keys", _text(_merge_keys), None),
    Mutation("anchors-and-aliases", _data(_share_driver), None),
    # --- what the printer must show as text ----------------------------------------
    _setting("markup-in-name", "app.name", "[/bold]", "{0,62}$' (got '[/bold]')"),
    _setting("markup-in-tag", "environments.0.tag", "[red]x", "environments[0].tag"),
    # --- registry -------------------------------------------------------------------
    _setting(
        "http-documentation-address",
        "registry.url",
        "http://203.0.113.5:5000",
        "plain http is only for",
    ),
    _setting("http-any-address", "registry.url", "http://0.0.0.0:5000", "plain http is only for"),
    _setting(
        "http-private-address", "registry.url", "http://10.0.0.5:5000", "plain http is only for"
    ),
    _setting("http-localhost", "registry.url", "http://localhost:5000", None),
    _setting("http-ipv6-loopback", "registry.url", "http://[::1]:5000", None),
    _setting("https-remote", "registry.url", "https://registry.example:5000", None),
    _setting("url-with-path", "registry.url", "https://r.example/v2", "registry.url"),
    _setting("url-bad-port", "registry.url", "https://r.example:99999", "bad port"),
    _setting("no-moving-tags", "registry.moving_tags", [], "registry.moving_tags"),
    _setting(
        "tag-not-moving",
        "registry.moving_tags",
        ["integration-ready"],
        "environments[1].tag: 'production-ready' is not in registry.moving_tags",
    ),
    # --- environments ---------------------------------------------------------------
    _setting(
        "shared-tag",
        "environments.1.tag",
        "integration-ready",
        "environments[1].tag: 'integration-ready' is already the tag of integration",
    ),
    _setting(
        "duplicate-environment",
        "environments.1.name",
        "integration",
        "environments[1].name: 'integration' is already",
    ),
    _setting(
        "no-environments", "environments", [], "environments: List should have at least 1 item"
    ),
    _setting(
        "environments-a-string",
        "environments",
        "production",
        "environments: Input should be a valid list",
    ),
    _setting(
        "environment-upper-case", "environments.0.name", "Integration", "environments[0].name"
    ),
    _setting(
        "unknown-driver", "environments.0.driver.kind", "kubernetes", "unknown driver 'kubernetes'"
    ),
    _setting(
        "app-id-invalid", "environments.0.driver.app_id", "hello", "environments[0].driver.app_id"
    ),
    _setting(
        "marathon-ftp", "environments.0.driver.url", "ftp://127.0.0.1", "environments[0].driver.url"
    ),
    _setting("timeout-integer", f"{A}.timeout", 24, "a duration needs a unit"),
    _setting("timeout-bare-string", f"{A}.timeout", "24", "a duration needs a unit"),
    _setting("timeout-zero", f"{A}.timeout", "0s", "must be positive"),
    _setting("timeout-90s", f"{A}.timeout", "90s", None),
    _setting("timeout-15m", f"{A}.timeout", "15m", None),
    _setting(
        "approvers-blank",
        f"{A}.approvers",
        ["", " "],
        f"{A.replace('.1.', '[1].')}.approvers[0]: Value error, an approver's name must not be blank",
    ),
    _setting(
        "approver-padded", f"{A}.approvers", ["alice", " bob"], "must not start or end with spaces"
    ),
    _setting(
        "approver-control-character",
        f"{A}.approvers",
        ["ali\u200bce\n"],
        "environments[1].approval.approvers[0]",
    ),
    _setting(
        "approvers-empty", f"{A}.approvers", [], "approvers: List should have at least 1 item"
    ),
    _setting(
        "health-path-relative",
        "environments.0.health.path",
        "health",
        "environments[0].health.path",
    ),
    _setting("vsphere-http", f"{P}.url", "http://127.0.0.1:8989/sdk", "preflight.vsphere.url"),
    # --- files it names -------------------------------------------------------------
    _setting(
        "context-escapes",
        "app.context",
        # More levels up than any test folder is deep: past the root, ".." stays there.
        "../" * 24 + "etc",
        "app.context: /etc is outside the pipeline file's repository",
    ),
    _setting("context-absolute", "app.context", "/usr", "app.context: /usr is outside"),
    Mutation(
        "context-link-outside",
        _with_files(_link_to_etc, _set("app.context", "../examples/etc-link")),
        "app.context",
    ),
    _setting(
        "context-missing", "app.context", "../examples/missing", "app.context: directory not found"
    ),
    _setting(
        "dockerfile-escapes",
        "app.dockerfile",
        "../" * 12 + "etc/hostname",
        "app.dockerfile: /etc/hostname is outside",
    ),
    _setting(
        "dockerfile-missing", "app.dockerfile", "Containerfile", "app.dockerfile: file not found"
    ),
    _setting(
        "password-etc-shadow",
        "registry.password",
        {"file": "/etc/shadow"},
        "registry.password.file: secret file /etc/shadow is outside",
    ),
    _setting(
        "key-escapes",
        "environments.0.driver.auth.private_key",
        {"file": "../" * 12 + "etc/ssh/ssh_host_rsa_key"},
        "environments[0].driver.auth.private_key.file",
    ),
    _setting(
        "vcenter-password-escapes",
        f"{P}.password",
        {"file": "/root/.vcenter"},
        "environments[1].preflight.vsphere.password.file",
    ),
    _setting(
        "secret-two-sources", "registry.password", {"env": "A", "file": "b"}, "set exactly one of"
    ),
    _setting(
        "template-escapes",
        "environments.0.driver.app_template",
        "/etc/passwd",
        "environments[0].driver.app_template: /etc/passwd is outside",
    ),
    _setting(
        "template-missing",
        "environments.0.driver.app_template",
        "marathon/missing.json",
        "app_template: file not found",
    ),
    Mutation(
        "template-not-json",
        _with_files(
            _bad_template("{not json"),
            _set("environments.0.driver.app_template", "marathon/bad.json"),
        ),
        "app_template: not valid JSON",
    ),
    Mutation(
        "template-a-list",
        _with_files(
            _bad_template("[1, 2]"), _set("environments.0.driver.app_template", "marathon/bad.json")
        ),
        "must be a JSON object",
    ),
    Mutation(
        "template-deep",
        _with_files(
            _bad_template("[" * 100_000),
            _set("environments.0.driver.app_template", "marathon/bad.json"),
        ),
        "app_template: not valid JSON",
    ),
    Mutation(
        "secret-in-workers-folder",
        lambda root: _with_files(
            _secrets_dir,
            _set("registry.password", {"file": str(root.parent / "worker-secrets" / "registry")}),
        )(root),
        None,
        env={"CONVEYOR_SECRETS_DIR": "{root}/../worker-secrets"},
    ),
    Mutation(
        "secret-beside-workers-folder",
        lambda root: _data(
            _set("registry.password", {"file": str(root.parent / "other" / "registry")})
        )(root),
        "or the worker's secrets folder",
        env={"CONVEYOR_SECRETS_DIR": "{root}/../worker-secrets"},
    ),
    # --- types and spelling ------------------------------------------------------------
    _setting("missing-app", "app", None, "app: required field is missing"),
    _setting("app-null", "app", "", "app: Input should be a valid dictionary"),
    _setting("typo", "registry.repositry", "x", "registry.repositry: unknown field"),
    Mutation(
        "port-a-word",
        _data(lambda d: d["environments"][0].update(driver={"kind": "docker", "port": "eighty"})),
        "environments[0].driver.port",
    ),
    Mutation(
        "port-out-of-range",
        _data(lambda d: d["environments"][0].update(driver={"kind": "docker", "port": 70000})),
        "environments[0].driver.port",
    ),
    _setting(
        "scanner-twice", "scan.scanners", ["secret", "secret"], "listed more than once: secret"
    ),
    _setting(
        "ignore-bad-date",
        "scan.ignore",
        [{"id": "CVE-1", "reason": "r", "expires": "soon"}],
        "scan.ignore[0].expires",
    ),
    Mutation("unchanged", _data(lambda d: d), None),
]


class Hang(Exception):
    pass


@contextmanager
def bounded(seconds: float = BOUND_S) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (the main thread's interval timer)."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"no verdict within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def write(mutation: Mutation, root: Path) -> tuple[Path, dict[str, str]]:
    """The mutated file inside the repository copy ``root`` and the settings it runs with."""
    path = root / "deployments" / f"{mutation.name}.yaml"
    path.write_bytes(mutation.make(root))
    env = {k: v.format(root=root) for k, v in mutation.env.items()}
    return path, env
