"""``python -m agent.cli``: the `gatewatch` command."""

import sys

from agent.cli import main

sys.exit(main())
