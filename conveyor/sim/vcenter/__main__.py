"""``python -m conveyor.sim.vcenter [launcher options]``: build (once) and run the launcher.

Every option goes to the launcher unchanged (``--listen 127.0.0.1:PORT --hosts 3
--agents 3 --agent-prefix production-agent- --vms 100 --datastore-free-pct 3`` ...);
``--build-only`` just builds and prints the binary's path.
"""

from __future__ import annotations

import os
import sys

from conveyor.sim.vcenter import SimulatorError, build, password_for_humans


def main(argv: list[str]) -> int:
    try:
        binary = build()
    except SimulatorError as exc:
        print(exc, file=sys.stderr)
        return 2
    if "--build-only" in argv:
        print(binary)
        return 0
    password, path = password_for_humans()
    if path is not None:
        print(f"vcsim: login password written to {path}", file=sys.stderr)
    env = {**os.environ, "VCSIM_PASSWORD": password.get_secret_value()}
    # exec: the launcher gets the signals directly and cleans up after itself.
    os.execve(binary, [str(binary), *argv], env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
