"""`python -m saikei.launch -n N [--devices-per-process D] script.py ARGS...`.

Starts N local processes of a script that calls `saikei.distributed.initialize()`;
see `saikei.distributed.launch`.

Example:
  >>> from saikei import launch
  >>> launch.main is not None
  True
"""

import sys

from saikei.distributed import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
