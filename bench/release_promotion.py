"""Promotion of a release of N services: conveyor's all-or-nothing tag move vs N
``skopeo copy`` runs of the same images, side by side on one throwaway local registry.

Each round promotes to a fresh environment tag, so every tag really moves. Prints the
median wall time of each method, conveyor's requests by method and path kind, and the
layer bytes it sent or received (target: none; each member one manifest GET and one PUT,
wall time <= 0.5x skopeo's total).

    PYTHONPATH=. python bench/release_promotion.py [--services 20] [--runs 3]

(It reuses the tests' image helper, hence the checkout on the path.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from conveyor.clients.registry import RegistryClient
from conveyor.localstack.registry import RegistryServer
from conveyor.promotion import TagPolicy
from conveyor.release import Release
from conveyor.release_set import ReleaseSet, promote_set, record_release
from tests.registry_support import push_image, random_layer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RegistryServer(Path(tmp) / "reg") as server:
        client = RegistryClient(server.url)
        host = server.url.split("://", 1)[1]
        members = []
        for i in range(args.services):
            repo = f"bench/shop/s{i}"
            digest = push_image(client, repo, "1", [random_layer(256 * 1024)])
            members.append(
                Release(app=f"s{i}", registry=host, repository=repo, digest=digest, version="1")
            )
        release = ReleaseSet(
            name="shop", registry=host, repository="bench/shop", version="1", members=tuple(members)
        )
        recorded = record_release(client, release)
        ours, theirs, requests = [], [], Counter[str]()
        skopeo = ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", "-q"]
        for run in range(args.runs):
            tag = f"env-{run}"
            policy = TagPolicy(frozenset({tag}))
            client.counters.reset()
            start = time.perf_counter()
            promote_set(client, recorded, tag, policy=policy)
            ours.append(time.perf_counter() - start)
            blob_bytes = client.counters.blob_bytes_sent + client.counters.blob_bytes_received
            requests = Counter(client.counters.requests)
            start = time.perf_counter()
            for m in members:
                subprocess.run(
                    [
                        *skopeo,
                        f"docker://{host}/{m.repository}@{m.digest}",
                        f"docker://{host}/{m.repository}:sk-{run}",
                    ],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
            theirs.append(time.perf_counter() - start)
        client.close()
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"services: {args.services}, runs: {args.runs}")
    print(f"conveyor promote_set     median {o:8.3f} s  (layer bytes moved: {blob_bytes})")
    print(f"{args.services} x skopeo copy      median {t:8.3f} s")
    print(f"ratio conveyor / skopeo: {o / t:.3f}x (target <= 0.5x)")
    print("conveyor requests (last run):", dict(sorted(requests.items())))


if __name__ == "__main__":
    main()
