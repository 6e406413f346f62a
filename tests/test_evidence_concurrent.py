"""Evidence attached to one image by several runs at once (issue 13's eight concurrent
ships): on a registry without the referrers API every attach rewrites the image's
``sha256-<hex>`` index, and none may be lost, against a real docker-registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from conveyor.clients.registry import RegistryClient
from conveyor.errors import TransientError
from conveyor.evidence import attach_evidence
from conveyor.localstack.registry import RegistryServer
from tests.registry_support import need_registry, push_image, random_layer

pytestmark = pytest.mark.registry
WRITERS = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    need_registry()
    with RegistryServer(tmp_path_factory.mktemp("registry")) as s:
        yield s


def test_concurrent_attaches_to_one_image_keep_every_record(server: RegistryServer) -> None:
    with RegistryClient(server.url) as client:
        digest = push_image(client, "ev/busy", "1.0.0", [random_layer(1024)])
    start = threading.Barrier(WRITERS)

    def attach(n: int) -> str:
        # A client each, as separate runs have; all write at the same moment.
        with RegistryClient(server.url) as own:
            start.wait(30)
            for _ in range(3):
                try:
                    return attach_evidence(own, "ev/busy", digest, "source", {"run": n})
                except TransientError:  # retried as the pipeline's task retries it
                    time.sleep(0.5)
            return attach_evidence(own, "ev/busy", digest, "source", {"run": n})

    with ThreadPoolExecutor(WRITERS) as pool:
        attached = set(pool.map(attach, range(WRITERS)))
    with RegistryClient(server.url) as client:
        listed = {d["digest"] for d in client.referrers("ev/busy", digest)}
    assert len(attached) == WRITERS
    assert attached <= listed, f"lost {len(attached - listed)} of {WRITERS} records"
