"""``python -m conveyor.sim.marathon``: see conveyor.sim.marathon for the options."""

import sys

from conveyor.sim.marathon.server import main

sys.exit(main())
