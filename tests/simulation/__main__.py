"""``python -m tests.simulation --seeds N``: see tests/simulation/runner.py."""

import sys

from tests.simulation.runner import main

sys.exit(main())
