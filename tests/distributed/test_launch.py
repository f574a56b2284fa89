"""Tests for saikei.distributed's launcher and initializer (`python -m saikei.launch`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from saikei import distributed


def _launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-m", "saikei.launch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's bookkeeping is left.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def _wait_dead(pids: list[int], within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _script(tmp_path, body: str):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_every_rank_runs_with_its_id_and_output_is_prefixed(tmp_path):
    script = _script(
        tmp_path,
        """
        import os, sys
        print("rank", os.environ["SAIKEI_PROCESS_ID"], "of", os.environ["SAIKEI_NUM_PROCESSES"],
              "devices", os.environ["SAIKEI_CPU_DEVICES"], "args", sys.argv[1:])
        print("to stderr", file=sys.stderr)
        """,
    )
    proc = _launch("-n", "3", "--devices-per-process", "2", script, "--flag", "x")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    for rank in range(3):
        assert f"[rank {rank}] rank {rank} of 3 devices 2 args ['--flag', 'x']" in lines
        assert f"[rank {rank}] to stderr" in lines


def test_a_line_written_in_pieces_is_not_split_by_the_other_stream(tmp_path):
    # JAX's C++ logging writes whole lines to stderr while a print with several
    # arguments writes stdout in pieces; the launcher keeps each line whole.
    script = _script(
        tmp_path,
        """
        import sys
        sys.stdout.write("first half, "); sys.stdout.flush()
        sys.stderr.write("a whole stderr line\\n"); sys.stderr.flush()
        sys.stdout.write("second half\\n"); sys.stdout.flush()
        """,
    )
    proc = _launch("-n", "1", script)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert "[rank 0] first half, second half" in lines, lines
    assert "[rank 0] a whole stderr line" in lines, lines


def test_coordinator_ports_are_free_and_differ_between_launches(tmp_path):
    script = _script(tmp_path, "import os; print(os.environ['SAIKEI_COORDINATOR_ADDRESS'])")
    first = _launch("-n", "1", script).stdout.split()[-1]
    second = _launch("-n", "1", script).stdout.split()[-1]
    assert first.startswith("127.0.0.1:") and second.startswith("127.0.0.1:")
    assert first != second


def test_a_rank_that_dies_fails_the_launch_fast_naming_it_and_stops_the_others(tmp_path):
    script = _script(
        tmp_path,
        f"""
        import os, sys, time
        rank = int(os.environ["SAIKEI_PROCESS_ID"])
        open(os.path.join({str(tmp_path)!r}, f"pid{{rank}}"), "w").write(str(os.getpid()))
        if rank == 1:
            time.sleep(1)
            sys.exit(3)
        time.sleep(600)
        """,
    )
    start = time.monotonic()
    proc = _launch("-n", "2", "--timeout", "100", script)
    assert time.monotonic() - start < 60
    assert proc.returncode == 3, proc.stdout
    assert "rank 1 exited with code 3" in proc.stdout
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    assert _wait_dead(pids) == []


def test_a_hang_times_out_and_leaves_no_process_behind(tmp_path):
    script = _script(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        rank = os.environ["SAIKEI_PROCESS_ID"]
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with open(os.path.join({str(tmp_path)!r}, "pids"), "a") as f:
            f.write(f"{{os.getpid()}}\\n{{child.pid}}\\n")
        print("hanging", flush=True)
        time.sleep(600)
        """,
    )
    proc = _launch("-n", "2", "--timeout", "5", script)
    assert proc.returncode == 124, proc.stdout
    assert "timed out after 5 s; ranks [0, 1]" in proc.stdout
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 4
    assert _wait_dead(pids) == []


def test_killing_the_launcher_kills_its_ranks(tmp_path):
    script = _script(
        tmp_path,
        f"""
        import os, time
        rank = os.environ["SAIKEI_PROCESS_ID"]
        open(os.path.join({str(tmp_path)!r}, f"pid{{rank}}"), "w").write(str(os.getpid()))
        time.sleep(600)
        """,
    )
    launcher = subprocess.Popen(
        [sys.executable, "-m", "saikei.launch", "-n", "2", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"pid{r}").exists() for r in range(2)):
            assert time.monotonic() < deadline, "the ranks never started"
            time.sleep(0.1)
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    assert _wait_dead(pids) == []


def test_initialize_joins_processes_and_collectives_work(tmp_path):
    script = _script(
        tmp_path,
        """
        from saikei import distributed
        distributed.initialize()
        import jax, numpy as np
        from jax.experimental import multihost_utils
        total = multihost_utils.process_allgather(np.array([jax.process_index() + 1]))
        print("devices", len(jax.devices()), "local", len(jax.local_devices()),
              "sum", int(np.sum(total)))
        """,
    )
    proc = _launch("-n", "2", "--devices-per-process", "2", "--timeout", "100", script)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for rank in range(2):
        assert f"[rank {rank}] devices 4 local 2 sum 3" in proc.stdout


def test_cluster_settings_reads_launcher_then_torchrun_variables():
    env = {
        "SAIKEI_COORDINATOR_ADDRESS": "h:1",
        "SAIKEI_NUM_PROCESSES": "2",
        "SAIKEI_PROCESS_ID": "1",
        "MASTER_ADDR": "other",
        "MASTER_PORT": "2",
        "WORLD_SIZE": "9",
        "RANK": "0",
    }
    assert distributed.cluster_settings(env) == {
        "coordinator_address": "h:1",
        "num_processes": 2,
        "process_id": 1,
    }
    with pytest.raises(ValueError, match="SAIKEI_NUM_PROCESSES='two'"):
        distributed.cluster_settings({**env, "SAIKEI_NUM_PROCESSES": "two"})


def test_initialize_rejects_partial_or_out_of_range_settings(monkeypatch):
    for key in ("SAIKEI_COORDINATOR_ADDRESS", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match=r"not \['num_processes', 'process_id'\]"):
        distributed.initialize("127.0.0.1:1")
    with pytest.raises(ValueError, match=r"process_id=2 is not in range\(num_processes=2\)"):
        distributed.initialize("127.0.0.1:1", 2, 2)


def test_launch_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_processes"):
        distributed.launch(["true"], 0)
    with pytest.raises(ValueError, match="command is empty"):
        distributed.launch([], 1)
    with pytest.raises(FileNotFoundError, match="cannot find the program 'no-such-program-x'"):
        distributed.launch(["no-such-program-x"], 1)
