"""Starting N local processes of one script, joined by `saikei.distributed.initialize`.

`launch` gives every process the coordinator address (a free localhost port),
the process count and its id in environment variables, prefixes each line it
prints with the process's rank, and stops every process as soon as one fails or
the timeout passes. Each process runs in its own process group, which is killed
whole, so nothing a rank started outlives the launch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from saikei.distributed import _initialize

EXIT_TIMEOUT = 124


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that no one is listening on right now.

    Example:
      >>> from saikei import distributed
      >>> 0 < distributed.free_port() < 65536
      True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# Each rank starts as this script, which has the kernel SIGKILL it when the
# launcher dies and then execs the command.
_RANK_EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_rank_exec.py")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(rank: int, stream: IO[bytes], out: IO[str], lock: threading.Lock) -> None:
    prefix = f"[rank {rank}] "
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            out.write(prefix + line + "\n")
            out.flush()
    stream.close()


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    devices_per_process: int | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    output: IO[str] | None = None,
) -> int:
    """Runs `command` as `num_processes` local processes and waits for all of them.

    Each process gets `SAIKEI_COORDINATOR_ADDRESS` (127.0.0.1 and a free port),
    `SAIKEI_NUM_PROCESSES`, `SAIKEI_PROCESS_ID` and, if given,
    `SAIKEI_CPU_DEVICES`, which `saikei.distributed.initialize()` reads.
    Output (stdout and stderr) is streamed line by line, prefixed `[rank i]`;
    each stream is read on its own, so a line written in pieces stays whole.

    Args:
      command: The program and its arguments, e.g.
        `[sys.executable, "train.py", "--steps", "10"]`.
      num_processes: How many processes to start.
      devices_per_process: Host (CPU) devices each process gets.
      timeout: Seconds after which every process still running is killed.
      env: The environment for the processes; defaults to `os.environ`.
      output: Where prefixed lines go; defaults to `sys.stdout`.

    Returns:
      0 if every process exited with 0; otherwise the exit code of the first
      process that failed (a signal N gives 128 + N), or 124 on timeout. The
      reason, naming the rank(s), is printed to `output`.

    Example:
      >>> import io, sys
      >>> from saikei import distributed
      >>> out = io.StringIO()
      >>> distributed.launch([sys.executable, "-c",
      ...     "import os; print('hello from', os.environ['SAIKEI_PROCESS_ID'])"], 2, output=out)
      0
      >>> sorted(out.getvalue().splitlines())
      ['[rank 0] hello from 0', '[rank 1] hello from 1']
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"launch: num_processes must be a positive int, got {num_processes!r}.")
    if devices_per_process is not None and devices_per_process < 1:
        raise ValueError(
            f"launch: devices_per_process must be a positive int, got {devices_per_process!r}."
        )
    if not command:
        raise ValueError("launch: command is empty; give the program to run and its arguments.")
    out = sys.stdout if output is None else output
    base = dict(os.environ if env is None else env)
    base[_initialize.ENV_COORDINATOR] = f"127.0.0.1:{free_port()}"
    base[_initialize.ENV_NUM_PROCESSES] = str(num_processes)
    base.setdefault("PYTHONUNBUFFERED", "1")
    if shutil.which(command[0], path=base.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(
            f"launch: cannot find the program {command[0]!r} (not an executable file, and not"
            " on the processes' PATH); give a path to it or its name on PATH, e.g."
            " sys.executable."
        )
    if devices_per_process is not None:
        base[_initialize.ENV_CPU_DEVICES] = str(devices_per_process)
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for rank in range(num_processes):
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _RANK_EXEC, str(os.getpid()), *command],
                env={**base, _initialize.ENV_PROCESS_ID: str(rank)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                # Separate pipes, read line by line: a line a rank prints in
                # several writes (print with several arguments, unbuffered)
                # is never split by a line on the other stream (JAX's and
                # Gloo's C++ logging writes to stderr).
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            procs.append(proc)
            for stream in (proc.stdout, proc.stderr):
                pump = threading.Thread(target=_pump, args=(rank, stream, out, lock), daemon=True)
                pump.start()
                pumps.append(pump)
        code = _wait(procs, deadline, timeout, out, lock)
    finally:
        for proc in procs:
            _kill_group(proc)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for pump in pumps:
            pump.join(timeout=5)
    return code


def _wait(
    procs: list[subprocess.Popen],
    deadline: float | None,
    timeout: float | None,
    out: IO[str],
    lock: threading.Lock,
) -> int:
    def say(text: str) -> None:
        with lock:
            out.write(f"[launch] {text}\n")
            out.flush()

    while True:
        codes = [p.poll() for p in procs]
        failed = [(rank, c) for rank, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            rank, code = failed[0]
            running = [r for r, c in enumerate(codes) if c is None]
            what = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            say(
                f"rank {rank} {what}; stopping the other ranks"
                + (f" {running}" if running else "")
                + "."
            )
            return 128 - code if code < 0 else code
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            running = [r for r, c in enumerate(codes) if c is None]
            say(
                f"timed out after {timeout:g} s; ranks {running} were still running and are"
                " killed. A rank that waits forever is usually stuck in a collective that"
                " another rank never reached (see docs/distributed.md, 'Debugging a hang')."
            )
            return EXIT_TIMEOUT
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: `python -m saikei.launch -n N [options] script.py ARGS...`.

    Example:
      >>> from saikei import distributed
      >>> distributed.main(["-n", "1", "-c", "print('hi')"])
      [rank 0] hi
      0
    """
    parser = argparse.ArgumentParser(
        prog="python -m saikei.launch",
        description=(
            "Start N local processes of a Python script joined into one JAX runtime"
            " (the script calls saikei.distributed.initialize())."
        ),
    )
    parser.add_argument("-n", "--num-processes", type=int, required=True)
    parser.add_argument(
        "--devices-per-process", type=int, default=None, help="host (CPU) devices per process"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds before every process is killed"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-m", dest="module", help="run a module, like python -m")
    target.add_argument("-c", dest="code", help="run a program given as a string")
    target.add_argument("script", nargs="?", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    ns = parser.parse_args(argv)
    if ns.module:
        command = [sys.executable, "-m", ns.module]
    elif ns.code is not None:
        command = [sys.executable, "-c", ns.code]
    else:
        command = [sys.executable, ns.script]
    return launch(
        command + list(ns.args),
        ns.num_processes,
        devices_per_process=ns.devices_per_process,
        timeout=ns.timeout,
    )
