"""What signed approvals cost: signing an answer, judging it, and `conveyor verify`.

- sign: ``signed_token`` (one ``ssh-keygen -Y sign`` with a key file), as
  ``conveyor approve --key`` does before it sends the answer;
- judge: the gate's check of one signed answer (one ``ssh-keygen -Y verify``);
- verify: ``conveyor verify DIGEST --env production`` as a new process, against a
  release with 4 evidence items (scan, integration, and two 2-of-2 signed approvals
  of production), so 4 signatures are checked; beside it the same read and check in
  process, and ``conveyor --help``, so the command's start-up cost shows apart.

Medians of ``--runs`` (default 5), side by side in one run.

    python bench/approval_signing.py [--runs 5]

Starts its own registry on a free port of 127.0.0.1; needs ssh-keygen and docker-registry.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor.approvals.policy import Request, Tally, identities, judge
from conveyor.approvals.record import approval_payload
from conveyor.approvals.verify import check_approvals
from conveyor.cli.sign_answer import signed_token
from conveyor.clients.registry import RegistryClient
from conveyor.evidence import attach_evidence, read_evidence
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.approval_support import RUN, make_key
from tests.registry_support import push_image, random_layer
from tests.test_approval_evidence import REPO, cfg, pipeline_file


def _timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = {n: make_key(root, n) for n in ("alice", "bob")}
        config = cfg(keys)
        with RegistryServer(root / "registry") as server, RegistryClient(server.url) as client:
            digest = push_image(client, REPO, None, [random_layer(256)])
            release = Release(
                app="shop", registry="127.0.0.1", repository=REPO, digest=digest, version="1.0.0"
            )
            waiting = {"app": "shop", "environment": "production", "digest": digest, "run_id": RUN}
            request = Request(
                app="shop",
                environment="production",
                digest=digest,
                run_id=RUN,
                identity="signed",
                people=identities(config),
            )
            attach_evidence(client, REPO, digest, "scan", {"passed": True, "summary": "0 critical"})
            attach_evidence(
                client,
                REPO,
                digest,
                "integration",
                {"environment": "integration", "passed": 3, "failed": 0},
            )
            for names in (["alice", "bob"], ["bob", "alice"]):
                tally = Tally(required=2)
                for name in names:
                    token = signed_token(
                        waiting,
                        decision="approve",
                        approver=name,
                        comment="",
                        key=keys[name].private,
                    )
                    verdict = judge(request, decision="", approver="", signature=token)
                    assert verdict.answer is not None, verdict.refusal
                    tally.add(verdict.answer)
                attach_evidence(
                    client,
                    REPO,
                    digest,
                    "approval",
                    approval_payload(release, request, tally, decision="approve"),
                )
            file = pipeline_file(root / "repo", server.url, keys)
            subprocess.run(["git", "init", "-q", str(root / "repo")], check=True)

            def sign() -> str:
                return signed_token(
                    waiting,
                    decision="approve",
                    approver="alice",
                    comment="",
                    key=keys["alice"].private,
                )

            token = sign()
            conveyor = str(Path(sys.executable).parent / "conveyor")
            env = {**os.environ, "PREFECT_API_URL": ""}

            def verify() -> None:
                done = subprocess.run(
                    [conveyor, "verify", digest, "-p", str(file), "--env", "production"],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if done.returncode != 0:
                    raise SystemExit(f"conveyor verify failed:\n{done.stdout}{done.stderr}")

            results = {
                "sign (ssh-keygen -Y sign)": _timed(sign, args.runs),
                "judge (ssh-keygen -Y verify)": _timed(
                    lambda: judge(request, decision="", approver="", signature=token), args.runs
                ),
                "read + check 4 items, in process": _timed(
                    lambda: check_approvals(
                        read_evidence(client, REPO, digest), digest, {"production": config}
                    ),
                    args.runs,
                ),
                "conveyor verify, 4 items, new process": _timed(verify, args.runs),
                "conveyor --help, new process": _timed(
                    lambda: subprocess.run([conveyor, "--help"], capture_output=True, env=env),
                    args.runs,
                ),
            }
    for what, times in results.items():
        print(f"{what:36s} median {statistics.median(times) * 1000:8.1f} ms  (n={len(times)})")


if __name__ == "__main__":
    main()
