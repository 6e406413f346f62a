"""What signed approvals cost: signing an answer, judging it, and `conveyor verify`.

- sign: ``signed_token`` (one ``ssh-keygen -Y sign`` with a key file), as
  ``conveyor approve --key`` does before it sends the answer;
- judge: the gate's check of one signed answer (one ``ssh-keygen -Y verify``);
- verify: ``conveyor verify DIGEST --env production`` as a new process, against a
  release with 4 evidence items (scan, integration, and two 2-of-2 signed approvals
  of production), so 4 signatures are checked; beside it the same read and check in
  process, and ``conveyor --help``, so the command's start-up cost shows apart.

- approve: ``conveyor approve RUN --as alice --key KEY`` as a new process, from the
  command's start to the signed answer stored on the Prefect server (the run input the
  Resume call writes, polled every 20 ms), against a run Suspended the way the promote
  gate leaves it (its request and form schema stored as run inputs).

Medians of ``--runs`` (default 5), side by side in one run.

    python bench/approval_signing.py [--runs 5]

Starts its own registry and Prefect server on free ports of 127.0.0.1; needs
ssh-keygen and docker-registry.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
from prefect import get_client
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_base_key
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Suspended

from conveyor.approvals.policy import Request, Tally, identities, judge
from conveyor.approvals.record import approval_payload
from conveyor.approvals.verify import check_approvals
from conveyor.cli.sign_answer import signed_token
from conveyor.clients.registry import RegistryClient
from conveyor.evidence import attach_evidence, read_evidence
from conveyor.localstack.prefect_server import PrefectServer
from conveyor.localstack.registry import RegistryServer
from conveyor.release import Release
from tests.approval_support import DIGEST, RUN, make_key
from tests.parts import free_port
from tests.registry_support import push_image, random_layer
from tests.test_approval_evidence import REPO, attach_checks, cfg, pipeline_file


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
            attach_checks(client, digest)
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
        results["conveyor approve --key, to answer stored"] = _approve_times(
            root, keys["alice"].private, args.runs
        )
    for what, times in results.items():
        print(f"{what:36s} median {statistics.median(times) * 1000:8.1f} ms  (n={len(times)})")


class _Form(RunInput):
    """The fields of the promote gate's Resume form."""

    decision: str
    approver: str
    digest: str
    environment: str
    comment: str = ""
    signature: str = ""


def _suspended(client: Any, n: int) -> tuple[UUID, str]:
    # A suspended run can be resumed only when it belongs to a deployment (the server
    # reschedules it for a worker); no worker runs here, so it is never executed.
    flow_id = client.create_flow_from_name("promote")
    deployment_id = client.create_deployment(flow_id=flow_id, name="bench-promote")
    run = client.create_flow_run_from_deployment(deployment_id)
    key = f"approval-production-{n}"
    keyset = keyset_from_base_key(f"suspended-{key}")
    client.create_flow_run_input(
        run.id, keyset["schema"], orjson.dumps(_Form.model_json_schema()).decode()
    )
    request = {
        "run_id": str(run.id),
        "app": "shop",
        "version": "1.0.0",
        "digest": DIGEST,
        "environment": "production",
        "repository": REPO,
        "pause_key": key,
        "since": "2026-12-01T00:00:00+00:00",
        "deadline": "2099-01-01T00:00:00+00:00",
        "approvers": ["alice"],
        "valid_for_s": 3600,
    }
    client.create_flow_run_input(run.id, f"conveyor-request-{key}", json.dumps(request))
    state = Suspended(timeout_seconds=3600, pause_key=key)
    state.state_details.run_input_keyset = keyset
    client.set_flow_run_state(run.id, state, force=True)
    return run.id, keyset["response"]


def _approve_times(root: Path, key: Path, runs: int) -> list[float]:
    server = PrefectServer(root / "prefect", port=free_port())
    server.start(timeout=240)
    times = []
    try:
        env = {**os.environ, "PREFECT_API_URL": server.api_url}
        conveyor = str(Path(sys.executable).parent / "conveyor")
        with (
            temporary_settings({PREFECT_API_URL: server.api_url}),
            get_client(sync_client=True) as client,
        ):
            for n in range(runs):
                run_id, response_key = _suspended(client, n)
                start = time.perf_counter()
                proc = subprocess.Popen(
                    [conveyor, "approve", str(run_id), "--as", "alice", "--key", str(key)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                stored = None
                while stored is None and time.perf_counter() - start < 60:
                    try:
                        stored = client.read_flow_run_input(run_id, response_key)
                    except Exception:
                        time.sleep(0.02)
                times.append(time.perf_counter() - start)
                if stored is None or "signature" not in json.loads(stored):
                    proc.kill()
                    raise SystemExit(
                        f"no signed answer stored for run {run_id}: {proc.communicate()[0]}"
                    )
                # Nobody executes the run here, so the CLI waits out its 10 s watch: stop it.
                proc.kill()
                proc.wait()
    finally:
        server.stop()
    return times


if __name__ == "__main__":
    main()
