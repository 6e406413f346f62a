"""Promotion cost: manifest copy vs ``skopeo copy`` vs docker pull/tag/push, side by side.

Builds a ~200 MB image of random (incompressible) tar layers at run time, uploads it
with conveyor's client to a throwaway local registry, then promotes it to a new tag
within the repository several times with each method. Every method talks to the
registry through a counting TCP proxy on 127.0.0.1, so bytes are measured the same way.
Prints medians; everything it creates is removed afterwards.

    python bench/promote.py [--mb 200] [--runs 3] [--no-docker]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import socket
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conveyor.clients.registry import OCI_MANIFEST, RegistryClient
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy, promote

REPO = "bench/app"
LAYERS = 4


class CountingProxy:
    """A TCP relay on 127.0.0.1 counting bytes each way (client->registry = sent)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.sent = self.received = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=60)
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    if up:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        self.sent = self.received = 0

    def close(self) -> None:
        self.sock.close()


def _tar_layer(path: Path, size: int) -> tuple[str, int]:
    """A tar holding one random file, streamed to disk and hashed on the way."""
    with path.open("wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
        info = tarfile.TarInfo(f"data/{path.stem}.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_RandomReader(size)))  # type: ignore[type-var]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), path.stat().st_size


class _RandomReader(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


def upload_image(client: RegistryClient, work: Path, total_mb: int) -> str:
    layers, diff_ids = [], []
    for i in range(LAYERS):
        path = work / f"layer{i}.tar"
        digest, size = _tar_layer(path, total_mb * 1024 * 1024 // LAYERS)
        with path.open("rb") as f:
            client.upload_blob(REPO, f, digest, size)
        path.unlink()
        layers.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size}
        )
        diff_ids.append(digest)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }
    cfg = client.push_blob(REPO, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
        "layers": layers,
    }
    return client.put_manifest(REPO, "1.0.0", json.dumps(manifest).encode(), OCI_MANIFEST)


def measure(name: str, runs: int, proxy: CountingProxy, step: Callable[[int], object]) -> None:
    times, sent, received = [], [], []
    for i in range(runs):
        proxy.reset()
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
        sent.append(proxy.sent)
        received.append(proxy.received)
    RESULTS[name] = (statistics.median(times), statistics.median(sent), statistics.median(received))


RESULTS: dict[str, tuple[float, float, float]] = {}


def docker_step(registry: str, digest: str) -> Callable[[int], None]:
    def run(i: int) -> None:
        source, target = f"{registry}/{REPO}@{digest}", f"{registry}/{REPO}:docker-{i}"
        for cmd in (
            ["docker", "pull", "-q", source],
            ["docker", "tag", source, target],
            ["docker", "push", "-q", target],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        subprocess.run(["docker", "rmi", "-f", target, source], capture_output=True, timeout=120)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp,
        RegistryServer(Path(tmp) / "registry") as server,
    ):
        proxy = CountingProxy(server.port)
        registry = f"127.0.0.1:{proxy.port}"
        client = RegistryClient(f"http://{registry}")
        t0 = time.perf_counter()
        digest = upload_image(client, Path(tmp), args.mb)
        print(f"uploaded {args.mb} MB image {digest[:19]} in {time.perf_counter() - t0:.1f}s")
        policy = TagPolicy(frozenset())
        measure(
            "conveyor manifest copy",
            args.runs,
            proxy,
            lambda i: promote(client, REPO, digest, f"ours-{i}", policy=policy),
        )
        skopeo = ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
        measure(
            "skopeo copy",
            args.runs,
            proxy,
            lambda i: subprocess.run(
                [
                    *skopeo,
                    f"docker://{registry}/{REPO}@{digest}",
                    f"docker://{registry}/{REPO}:skopeo-{i}",
                ],
                check=True,
                capture_output=True,
                timeout=600,
            ),
        )
        if not args.no_docker:
            measure("docker pull/tag/push", args.runs, proxy, docker_step(registry, digest))
        client.close()
        proxy.close()
    report(args.runs)


def report(runs: int) -> None:
    print(f"\nmedian of {runs} runs, same-repository promotion to a new tag")
    print(f"{'method':26} {'wall s':>8} {'sent':>12} {'received':>12}")
    for name, (wall, sent, received) in RESULTS.items():
        print(f"{name:26} {wall:8.3f} {sent:12,.0f} {received:12,.0f}")
    ours, skopeo = RESULTS["conveyor manifest copy"][0], RESULTS["skopeo copy"][0]
    print(f"\nconveyor / skopeo wall time: {ours / skopeo:.3f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()
