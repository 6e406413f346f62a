"""A push cut off mid-blob leaves an upload session behind; the local stack's registry
runs distribution's upload purger, so such sessions do not pile up."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import yaml

from conveyor.localstack.registry import RegistryServer
from tests.fault_proxy import Fault, FaultProxy
from tests.registry_support import need_registry

REPO = "conveyor/abandoned"


def _uploads(server: RegistryServer) -> list[Path]:
    folder = server.storage_path / "docker/registry/v2/repositories" / REPO / "_uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_cut_push_leaves_an_upload_that_the_registrys_purger_is_set_to_remove(
    tmp_path: Path,
) -> None:
    need_registry()
    with (
        RegistryServer(tmp_path / "registry") as server,
        FaultProxy(("127.0.0.1", server.port)) as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        started = client.post(f"/v2/{REPO}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        proxy.add(Fault("PATCH", "/blobs/uploads/", kind="cut", cut_after=64 * 1024))
        body = b"x" * (1024 * 1024)
        with contextlib.suppress(httpx.HTTPError):
            client.patch(
                location, content=body, headers={"Content-Type": "application/octet-stream"}
            )
        assert [kind for _, _, kind in proxy.seen] == ["pass", "cut"]
        assert len(_uploads(server)) == 1

        # What the registry was told, and that it took it: distribution logs the first
        # purge's (randomly delayed) start only when the purger is enabled.
        purging = yaml.safe_load(server.config_path.read_text())["storage"]["maintenance"]
        assert purging == {
            "uploadpurging": {"enabled": True, "age": "1h", "interval": "1h", "dryrun": False}
        }
        assert "Starting upload purge in" in server.log_tail(50)
