"""The pipeline-file mutation set, judged: every file must end in one clear line or be
accepted as valid; none in a traceback or a hang.

Prints: files, clear errors, accepted valid files, wrong verdicts, tracebacks, hangs,
the slowest rejection and the median. Touches no outside system:
``PYTHONPATH=. python bench/validate_mutations.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

from conveyor.config import load_pipeline
from conveyor.errors import ConfigError
from tests.config_mutations import BOUND_S, MUTATIONS, Hang, bounded, make_repository, write


def main() -> int:
    clear = accepted = wrong = tracebacks = hangs = 0
    rejections: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_repository(Path(tmp) / "repo")
        for mutation in MUTATIONS:
            path, env = write(mutation, root)
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            start = time.perf_counter()
            try:
                with bounded(BOUND_S):
                    load_pipeline(path)
                verdict = None
            except ConfigError as exc:
                verdict = exc.problems
            except Hang:
                hangs += 1
                print(f"  HANG {mutation.name}")
                continue
            except Exception:
                tracebacks += 1
                print(f"  TRACEBACK {mutation.name}:\n{traceback.format_exc()}")
                continue
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            elapsed = time.perf_counter() - start
            if verdict is None:
                accepted += mutation.expect is None
                wrong += mutation.expect is not None
                if mutation.expect is not None:
                    print(f"  ACCEPTED but invalid: {mutation.name}")
                continue
            rejections.append((elapsed, mutation.name))
            one_line = all(p.strip() and "\n" not in p for p in verdict)
            if mutation.expect is None or not one_line:
                wrong += 1
                print(f"  WRONG {mutation.name}: {verdict}")
            elif not any(mutation.expect in p for p in verdict):
                wrong += 1
                print(f"  UNEXPECTED MESSAGE {mutation.name}: {verdict}")
            else:
                clear += 1
    slowest = max(rejections)
    print(f"files: {len(MUTATIONS)}")
    print(f"clear errors (one line each, naming the field): {clear}")
    print(f"accepted, and valid: {accepted}")
    print(f"wrong verdicts: {wrong}")
    print(f"tracebacks: {tracebacks}")
    print(f"hangs (> {BOUND_S:.0f} s): {hangs}")
    print(f"slowest rejection: {slowest[0] * 1000:.1f} ms ({slowest[1]})")
    print(f"median rejection: {statistics.median(t for t, _ in rejections) * 1000:.1f} ms")
    return 1 if wrong or tracebacks or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
