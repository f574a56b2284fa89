"""Started by `saikei.distributed.launch` for each rank: `python _rank_exec.py PID COMMAND...`.

It asks the kernel to SIGKILL this process when the launcher (PID) dies, then
replaces itself with COMMAND (the setting survives the exec). It runs as a
script, importing only the standard library, so that the launcher, which has
JAX and threads running, never runs Python code between fork and exec (a
`preexec_fn` would, and that can deadlock in a threaded process).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_NOT_RUN = 127


def main(argv: list[str]) -> int:
    """Sets the parent-death signal and execs the command; returns only on failure.

    `argv` is `[launcher pid, program, *arguments]`. Not meant to be called
    in a running program (the signal setting stays with the process); the
    launcher's own example shows it at work (`saikei.distributed.launch`).
    """
    launcher, command = int(argv[0]), argv[1:]
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the launcher's group kill still applies
        pass
    if os.getppid() != launcher:  # the launcher died before the signal was set
        return EXIT_NOT_RUN
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"saikei.launch: cannot run {command[0]!r}: {error}", file=sys.stderr)
    return EXIT_NOT_RUN


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
