"""`python -m saikei`: the `saikei` command (see `saikei.cli`)."""

import sys

from saikei.cli import main

if __name__ == "__main__":
    sys.exit(main())
