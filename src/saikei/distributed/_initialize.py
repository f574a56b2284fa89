"""Joining JAX's multi-process runtime: `initialize` reads the launcher's or the cluster's settings."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

# Set by `python -m saikei.launch` for each process it starts.
ENV_COORDINATOR = "SAIKEI_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "SAIKEI_NUM_PROCESSES"
ENV_PROCESS_ID = "SAIKEI_PROCESS_ID"
ENV_CPU_DEVICES = "SAIKEI_CPU_DEVICES"


def _env_int(env: Mapping[str, str], key: str) -> int:
    text = env[key]
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"saikei.distributed.initialize: the environment variable {key}={text!r} is not an"
            " integer; fix or unset it."
        ) from None


def cluster_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The coordinator, process count and process id found in the environment.

    Looked up in order: the variables `python -m saikei.launch` sets
    (`SAIKEI_COORDINATOR_ADDRESS`, `SAIKEI_NUM_PROCESSES`, `SAIKEI_PROCESS_ID`),
    then the torchrun-style `MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`.
    An empty dict means none is set; `jax.distributed.initialize` then detects
    SLURM, Open MPI, TPU pod slices and GKE by itself.

    Args:
      env: The environment to read; defaults to `os.environ`.

    Returns:
      A dict with keys `coordinator_address`, `num_processes`, `process_id`
      (empty if no launcher variables are set).

    Example:
      >>> from saikei import distributed
      >>> distributed.cluster_settings({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234",
      ...     "WORLD_SIZE": "4", "RANK": "2"})
      {'coordinator_address': '10.0.0.1:1234', 'num_processes': 4, 'process_id': 2}
      >>> distributed.cluster_settings({})
      {}
    """
    env = os.environ if env is None else env
    if ENV_COORDINATOR in env:
        return {
            "coordinator_address": env[ENV_COORDINATOR],
            "num_processes": _env_int(env, ENV_NUM_PROCESSES),
            "process_id": _env_int(env, ENV_PROCESS_ID),
        }
    if all(k in env for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")):
        return {
            "coordinator_address": f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}",
            "num_processes": _env_int(env, "WORLD_SIZE"),
            "process_id": _env_int(env, "RANK"),
        }
    return {}


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_devices: int | None = None,
    cpu_collectives: str | None = "gloo",
    initialization_timeout: int = 300,
    exit_on_error: bool = True,
    **jax_kwargs: Any,
) -> None:
    """Joins this process to JAX's multi-process runtime (`jax.distributed.initialize`).

    Call it once at the start of every process, before any other JAX call.
    Arguments left out are read from the environment (see
    `cluster_settings`); with nothing there, JAX detects SLURM, Open MPI, TPU
    pod slices and GKE itself. On CPU, collectives across processes go
    through Gloo (`jax_cpu_collectives_implementation`); GPUs use NCCL and
    TPUs their interconnect, which the CPU setting does not touch. Calling it
    again in an initialized process does nothing.

    Args:
      coordinator_address: `host:port` of process 0's coordination service.
      num_processes: The number of processes.
      process_id: This process's index, in `range(num_processes)`.
      local_device_ids: Restrict this process to these local accelerators.
      cpu_devices: Number of host (CPU) devices per process; defaults to the
        launcher's `--devices-per-process` (`SAIKEI_CPU_DEVICES`), else JAX's
        default of one.
      cpu_collectives: CPU collectives implementation (`"gloo"`, `"mpi"`), or
        None to leave JAX's setting alone.
      initialization_timeout: Seconds to wait for every process to join.
      exit_on_error: Make an uncaught exception end this process at once (exit
        status 1, after printing the traceback). Otherwise JAX's shutdown
        waits at a barrier for the other processes, which may themselves be
        waiting in a collective for this one: the whole job hangs instead of
        failing.
      **jax_kwargs: Passed on to `jax.distributed.initialize`.

    Raises:
      ValueError: a process id outside `range(num_processes)`, or settings given
        only in part.
      RuntimeError: JAX was already used in this process before `initialize`.

    Example:
      >>> from saikei import distributed
      >>> callable(distributed.initialize)  # in a launched script: distributed.initialize()
      True
    """
    import jax  # here, so that the launcher itself starts without loading JAX

    if jax.distributed.is_initialized():
        return
    settings = cluster_settings()
    coordinator_address = coordinator_address or settings.get("coordinator_address")
    if num_processes is None:
        num_processes = settings.get("num_processes")
    if process_id is None:
        process_id = settings.get("process_id")
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        raise ValueError(
            f"saikei.distributed.initialize: got {given} but not {missing}. Pass all three (or"
            " set SAIKEI_COORDINATOR_ADDRESS, SAIKEI_NUM_PROCESSES and SAIKEI_PROCESS_ID), or"
            " none to let JAX detect the cluster."
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"saikei.distributed.initialize: process_id={process_id} is not in"
            f" range(num_processes={num_processes})."
        )
    if cpu_devices is None and ENV_CPU_DEVICES in os.environ:
        cpu_devices = _env_int(os.environ, ENV_CPU_DEVICES)
    try:
        if cpu_collectives is not None:
            jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
        if cpu_devices is not None:
            jax.config.update("jax_num_cpu_devices", int(cpu_devices))
    except RuntimeError as err:
        raise RuntimeError(
            "saikei.distributed.initialize must run before anything else uses JAX in this"
            f" process (JAX said: {err}). Move the call to the top of the script."
        ) from None
    if exit_on_error:
        _exit_on_uncaught_exception()
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        **jax_kwargs,
    )


def _exit_on_uncaught_exception() -> None:
    previous = sys.excepthook

    def hook(kind: Any, value: Any, traceback: Any) -> None:
        previous(kind, value, traceback)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    sys.excepthook = hook
