"""DockerEngine against the real Docker Engine and a real Debian docker-registry."""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
from pydantic import SecretStr

from conveyor.clients.docker_engine import OCI, BuiltImage, DockerEngine, connect
from conveyor.errors import (
    AuthenticationFailed,
    BuildFailed,
    ConnectFailed,
    RequestTimeout,
    TransientError,
)
from conveyor.localstack.registry import RegistryServer
from tests.images import discard
from tests.parts import free_port, missing, require_binary

pytestmark = pytest.mark.docker

HELLO = Path(__file__).resolve().parent.parent / "examples" / "hello"
BUSYBOX = Path("/usr/bin/busybox")


@pytest.fixture(scope="module")
def engine(docker_client: docker.DockerClient) -> DockerEngine:
    return DockerEngine(docker_client, build_timeout_s=300)


def _tag(name: str) -> str:
    tag = f"conveyor-test/{name}:{uuid.uuid4().hex[:10]}"
    discard(tag)
    return tag


def _hello_repo(registry: str, tag: str) -> str:
    """team/hello in ``registry``; its ``tag`` is removed when the session ends."""
    repo = f"{registry}/team/hello"
    discard(f"{repo}:{tag}")
    return repo


@pytest.fixture(scope="module")
def hello(engine: DockerEngine) -> tuple[BuiltImage, list[str]]:
    if not BUSYBOX.is_file():
        missing("busybox-static", "apt-get install busybox-static")
    lines: list[str] = []
    built = engine.build(
        HELLO,
        Path("Dockerfile"),
        _tag("hello"),
        build_args={"VERSION": "9.8.7-test"},
        labels={"conveyor.test": "1"},
        log=lines.append,
    )
    return built, lines


# A build step as `docker build --progress=plain` names it: "#3 [1/4] COPY ...".
STEP = re.compile(r"#\d+ \[\d+/\d+\] ")


def test_sample_app_builds_with_labels_and_a_streamed_log(
    hello: tuple[BuiltImage, list[str]], docker_client: docker.DockerClient
) -> None:
    built, lines = hello
    assert built.id.startswith("sha256:")
    image = docker_client.images.get(built.id)
    labels = image.labels
    assert labels["conveyor.test"] == "1"
    for key in ("version", "created", "source", "title"):
        assert labels[f"{OCI}.{key}"], key
    assert labels[f"{OCI}.title"] == "hello"
    assert labels[f"{OCI}.version"] == built.version
    assert labels.get(f"{OCI}.revision") == built.revision
    assert built.tags and built.tags[0] in image.tags
    # BuildKit's steps as `docker build --progress=plain` prints them: one call per
    # line, never a multi-line chunk, each step named once and in order, then done.
    assert all("\n" not in line for line in lines)
    steps = [line.split(" ", 2) for line in lines if STEP.match(line)]
    assert [f"{s[1]} {s[2]}" for s in steps][:2] == [
        "[1/4] COPY busybox /bin/busybox",
        '[2/4] RUN ["/bin/busybox", "--install", "-s", "/bin"]',
    ]
    assert [int(s[1][1:].split("/")[0]) for s in steps] == list(range(1, len(steps) + 1))
    for number, _, _ in steps:
        assert any(line.startswith((f"{number} DONE ", f"{number} CACHED")) for line in lines)
    # The build arg reached the image: the busybox symlink was dereferenced to run it.
    out = docker_client.containers.run(
        built.id,
        ["cat", "/www/version"],
        remove=True,
        network_mode="none",
        labels={"conveyor.test": "1"},
    )
    assert out.decode().strip() == "9.8.7-test"


def test_rebuild_of_the_same_source_is_cached(engine: DockerEngine) -> None:
    version = ("1.0.0-cachetest", None)
    tag = _tag("hello")
    engine.build(HELLO, Path("Dockerfile"), tag, source_version=version)
    lines: list[str] = []
    engine.build(HELLO, Path("Dockerfile"), tag, log=lines.append, source_version=version)
    # Every step from the cache (without a commit the image's time is the build's).
    steps = [line.split()[0] for line in lines if STEP.match(line)]
    assert steps and all(f"{n} CACHED" in lines for n in steps)


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    os.symlink(BUSYBOX, ctx / "busybox")
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


def test_failing_run_step_is_build_failed_with_the_log_tail(
    engine: DockerEngine, tmp_path: Path
) -> None:
    marker = f"about-to-fail-{secrets.token_hex(4)}"
    ctx = _context(
        tmp_path,
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        f'RUN ["/bin/busybox", "sh", "-c", "echo {marker}; exit 3"]\n',
    )
    lines: list[str] = []
    with pytest.raises(BuildFailed) as info:
        engine.build(ctx, Path("Dockerfile"), _tag("broken"), log=lines.append)
    message = str(info.value)
    assert "exit code: 3" in message
    # The step's output, under its number, as `docker build --progress=plain` shows it.
    assert marker in message and any(re.fullmatch(rf"#\d+ {marker}", line) for line in lines)


def test_copy_of_a_missing_file_is_build_failed(engine: DockerEngine, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY no-such-file /x\n")
    with pytest.raises(BuildFailed, match="no-such-file"):
        engine.build(ctx, Path("Dockerfile"), _tag("broken"))


def test_unreachable_engine_is_transient(tmp_path: Path) -> None:
    # An explicit API version: docker-py would otherwise ask the (absent) engine for one.
    client = docker.DockerClient(
        base_url=f"tcp://127.0.0.1:{free_port()}", version="1.41", timeout=5
    )
    ctx = _context(tmp_path, "FROM scratch\n")
    with pytest.raises(ConnectFailed) as info:
        DockerEngine(client).build(ctx, Path("Dockerfile"), "conveyor-test/never:1")
    assert isinstance(info.value, TransientError)
    client.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, str]]:
    require_binary("docker-registry", "apt-get install docker-registry")
    require_binary("htpasswd", "apt-get install apache2-utils")
    password = f"pw-{secrets.token_urlsafe(12)}"
    server = RegistryServer(
        tmp_path_factory.mktemp("registry"), htpasswd=("pusher", SecretStr(password))
    )
    with server:
        yield server, password


def _manifest_digest(server: RegistryServer, repo: str, tag: str, password: str) -> str:
    accept = ", ".join(
        [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
        ]
    )
    response = httpx.head(
        f"{server.url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": accept},
        auth=("pusher", password),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def test_push_returns_the_registry_manifest_digest(
    engine: DockerEngine,
    hello: tuple[BuiltImage, list[str]],
    registry: tuple[RegistryServer, str],
) -> None:
    server, password = registry
    repo = _hello_repo(server.address, "1.0.0")
    lines: list[str] = []
    digest = engine.push(
        hello[0].id, repo, "1.0.0", auth=("pusher", SecretStr(password)), log=lines.append
    )
    assert digest == _manifest_digest(server, "team/hello", "1.0.0", password)
    assert lines and all(password not in line for line in lines)


def test_push_with_a_wrong_password_is_authentication_failed(
    engine: DockerEngine,
    hello: tuple[BuiltImage, list[str]],
    registry: tuple[RegistryServer, str],
) -> None:
    server, password = registry
    wrong = f"wrong-{secrets.token_hex(6)}"
    repo = _hello_repo(server.address, "denied")
    lines: list[str] = []
    with pytest.raises(AuthenticationFailed) as info:
        engine.push(
            hello[0].id, repo, "denied", auth=("pusher", SecretStr(wrong)), log=lines.append
        )
    assert wrong not in str(info.value) and password not in str(info.value)
    assert all(wrong not in line for line in lines)


def test_push_to_an_unreachable_registry_is_transient(
    engine: DockerEngine, hello: tuple[BuiltImage, list[str]]
) -> None:
    repo = _hello_repo(f"127.0.0.1:{free_port()}", "nowhere")
    with pytest.raises(ConnectFailed, match="registry unreachable"):
        engine.push(hello[0].id, repo, "nowhere")


@pytest.fixture
def stalling_registry() -> Iterator[str]:
    """A registry address on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


def test_push_to_a_stalling_registry_times_out_as_transient(
    hello: tuple[BuiltImage, list[str]], stalling_registry: str
) -> None:
    # The engine waits on the silent registry, so docker-py's read of the push stream
    # times out inside urllib3 (ReadTimeoutError), past requests' own mapping.
    client = connect(timeout=3)
    repo = _hello_repo(stalling_registry, "stalled")
    try:
        with pytest.raises(RequestTimeout, match="no answer in time") as info:
            DockerEngine(client).push(hello[0].id, repo, "stalled")
    finally:
        client.close()
    assert info.value.transient
