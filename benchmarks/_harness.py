"""The benchmark protocol shared by every `benchmarks/bench_*.py`.

Protocol: a bench module imports this module *before* jax or torch (so the
thread settings below apply), defines `run() -> list[Result]`, and ends with

    if __name__ == "__main__":
        sys.exit(_harness.main_single(run))

so it can run alone; `benchmarks/run.py` imports every bench module and calls
its `run()` in one process. Each case is measured with `compare(...)`, which
times saikei and the peer side by side in this process and returns a `Result`.

Threads: both sides share one JAX runtime, pinned to one intra-op thread
(`XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`);
benches that use torch call `pin_torch_threads()` (`torch.set_num_threads(1)`,
`torch.set_num_interop_threads(1)`). Single-threaded figures make the ratio
independent of how busy the shared machine's other core is.

Timing: each side is warmed up (compilation, caches), then the number of calls
per batch is chosen so one batch of the slower side lasts at least
`min_batch_s`; batches of the two sides alternate (saikei first on even
repeats, the peer first on odd ones) and the reported figure is the median
over repeats of batch time / calls. As in `timeit`, the garbage collector is
paused inside a batch and run between batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from types import ModuleType

_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _pin_threads_before_imports() -> None:
    if "jax" in sys.modules:
        # XLA reads its flags when the CPU client starts; warn rather than
        # silently report figures taken with other settings.
        print("benchmarks: jax was imported before _harness; thread pinning may not apply")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_THREAD_XLA_FLAGS}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # saikei's persistent compilation cache is process-wide: with it on, a
    # case that times compilation would time a cache load from its second
    # repeat on, for the peer too. Cases that measure the cache set it.
    os.environ.setdefault("SAIKEI_COMPILATION_CACHE", "0")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


_pin_threads_before_imports()

PEER = "penzai 0.2.5"


@dataclasses.dataclass(frozen=True)
class Result:
    """One benchmark case: median seconds per call for saikei and for the peer.

    A side that failed to build or run has time None and its error in `error`.
    """

    name: str
    saikei_s: float | None
    peer_s: float | None
    target_ratio: float = 1.0
    note: str = ""
    peer: str = PEER
    error: str | None = None
    # How the row was timed, when it differs from the run's Method line.
    method: str | None = None
    # The unit of saikei_s and peer_s for a row that measures something other
    # than time (e.g. "KiB"); None for seconds.
    unit: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.saikei_s is None or self.peer_s is None or self.peer_s <= 0:
            return None
        return self.saikei_s / self.peer_s

    @property
    def meets_target(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else ratio <= self.target_ratio


@dataclasses.dataclass
class Settings:
    """How hard to measure; set from the command line by `run.py` / `main_single`."""

    repeats: int = 7
    warmup: int = 2
    min_batch_s: float = 0.1

    @classmethod
    def quick(cls) -> Settings:
        return cls(repeats=3, warmup=1, min_batch_s=0.02)


settings = Settings()


def pin_torch_threads() -> None:
    """Pins torch to one thread, matching the XLA setting; call before torch runs."""
    import torch

    torch.set_num_threads(1)
    # Allowed only once per process, before any inter-op work; a second bench
    # module in the same run finds it already set.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _time_batch(fn: Callable[[], object], number: int) -> float:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()


def _build(factory: Callable[[], Callable[[], object]] | None) -> tuple[Callable | None, str]:
    if factory is None:
        return None, "not measured"
    try:
        fn = factory()
        for _ in range(max(1, settings.warmup)):
            fn()
        return fn, ""
    except Exception as exc:  # reported in the results, never hidden
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, detail


def compare(
    name: str,
    *,
    saikei: Callable[[], Callable[[], object]],
    peer: Callable[[], Callable[[], object]] | None,
    target_ratio: float = 1.0,
    note: str = "",
    peer_name: str = PEER,
) -> Result:
    """Times saikei against the peer on one case.

    Args:
      name: The case's name in the results table.
      saikei: Builds (and checks) the saikei side; returns the zero-argument
        callable to time, which must block until its result is ready.
      peer: The same for the peer (None to time saikei alone).
      target_ratio: The ratio saikei/peer the case should stay under.
      note: A short remark printed under the table.
      peer_name: Who the peer is.

    Returns:
      A `Result`; a side that raised while being built or warmed up is
      reported in `Result.error` with no time.
    """
    saikei_fn, saikei_err = _build(saikei)
    peer_fn, peer_err = _build(peer)
    live = [fn for fn in (saikei_fn, peer_fn) if fn is not None]
    times: dict[int, list[float]] = {0: [], 1: []}
    number = 1
    if live:
        slowest = max(_time_batch(fn, 1) for fn in live)
        number = max(1, math.ceil(settings.min_batch_s / max(slowest, 1e-9)))
        for repeat in range(settings.repeats):
            order = (0, 1) if repeat % 2 == 0 else (1, 0)
            for side in order:
                fn = (saikei_fn, peer_fn)[side]
                if fn is not None:
                    times[side].append(_time_batch(fn, number) / number)
    errors = []
    if saikei_fn is None:
        errors.append(f"saikei: {saikei_err}")
    if peer is not None and peer_fn is None:
        errors.append(f"peer: {peer_err}")
    return Result(
        name=name,
        saikei_s=statistics.median(times[0]) if times[0] else None,
        peer_s=statistics.median(times[1]) if times[1] else None,
        target_ratio=target_ratio,
        note=note,
        peer=peer_name,
        error="; ".join(errors) or None,
        method=repeat_method(),
    )


def compare_namespace_cases(
    cases: Sequence[tuple[str, Callable[[ModuleType], Callable[[], object]], str]],
) -> list[Result]:
    """Runs `(name, factory, note)` cases whose factory builds either side from a namespace.

    Each factory is called with `saikei.sk` for saikei and `penzai.pz` for the
    peer, so the same case code measures both; the target is 1.0 and each
    result is printed as it comes.
    """
    results = []
    for name, factory, note in cases:
        result = compare(
            name,
            saikei=lambda factory=factory: factory(saikei_namespace()),
            peer=lambda factory=factory: factory(penzai_namespace()),
            target_ratio=1.0,
            note=note,
        )
        print(
            f"  {name}: saikei {format_seconds(result.saikei_s)}, "
            f"penzai {format_seconds(result.peer_s)}",
            flush=True,
        )
        results.append(result)
    return results


def saikei_namespace() -> ModuleType:
    """`saikei.sk`, imported on first use (after the thread pins above)."""
    from saikei import sk

    return sk


def penzai_namespace() -> ModuleType:
    """`penzai.pz`, the peer's namespace, imported on first use."""
    from penzai import pz

    return pz


def check(condition: bool, what: str) -> None:
    """Refuses to time a wrong answer: each factory checks its result once first."""
    if not condition:
        raise AssertionError(f"sanity check failed: {what}")


def format_seconds(seconds: float | None) -> str:
    """Formats a duration with a unit that keeps three significant digits."""
    if seconds is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _meets(result: Result) -> str:
    verdict = result.meets_target
    return "n/a" if verdict is None else ("yes" if verdict else "NO")


def _format_value(value: float | None, unit: str | None) -> str:
    if unit is None or value is None:
        return format_seconds(value)
    return f"{value:.3g} {unit}"


def table(results: Sequence[Result]) -> str:
    """The results as a Markdown table (also readable as plain text)."""
    lines = [
        "| benchmark | saikei (median) | peer | peer (median) | saikei/peer | target | meets |",
        "| --- | ---: | --- | ---: | ---: | ---: | :---: |",
    ]
    for r in results:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
        ours, theirs = (_format_value(value, r.unit) for value in (r.saikei_s, r.peer_s))
        lines.append(
            f"| {r.name} | {ours} | {r.peer} | {theirs}"
            f" | {ratio} | <= {r.target_ratio:g} | {_meets(r)} |"
        )
    return "\n".join(lines)


def notes(results: Sequence[Result]) -> list[str]:
    """Bullet lines with each case's note and error."""
    out = []
    for r in results:
        if r.note:
            out.append(f"- {r.name}: {r.note}")
        if r.error:
            out.append(f"- {r.name}: ERROR {r.error}")
    return out


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}{' (with uncommitted changes)' if dirty else ''}"


def repeat_method() -> str:
    """How `compare` times a row under the current `settings`."""
    return (
        f"median of {settings.repeats} alternating repeats after {settings.warmup} warm-up call(s)"
    )


def method_lines(results: list[Result]) -> list[str]:
    """Bullet lines for rows timed otherwise than the Method line says (grouped)."""
    counts: dict[str, int] = {}
    for r in results:
        if r.method is not None and r.method != repeat_method():
            counts[r.method] = counts.get(r.method, 0) + 1
    return [f"- {n} row(s) timed otherwise: {m}" for m, n in counts.items()]


def machine_lines() -> list[str]:
    """Bullet lines describing the machine, versions and thread settings."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = ", ".join(
        f"{dist} {_version(dist)}"
        for dist in ("saikei", "penzai", "jax", "jaxlib", "numpy", "treescope")
    )
    optional = [dist for dist in ("torch", "transformers") if dist in sys.modules]
    if optional:
        versions += ", " + ", ".join(f"{dist} {_version(dist)}" for dist in optional)
    return [
        f"- Machine: {_cpu_model()}; {os.cpu_count()} CPUs ({usable} usable); "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        f"- saikei revision: {_git_revision()}",
        f"- Threads: XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
        f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}; torch (where used) "
        "set_num_threads(1)",
        f"- Method: {repeat_method()}; each repeat times a batch of calls lasting "
        f">= {settings.min_batch_s:g} s on the slower side, with GC paused inside the batch",
    ]


def add_cli_arguments(parser) -> None:
    """Adds the measuring options shared by `run.py` and single bench scripts."""
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (smoke run)")
    parser.add_argument("--repeats", type=int, help="timed repeats per side (default 7)")


def apply_cli_arguments(args) -> None:
    """Updates `settings` from parsed command-line arguments."""
    chosen = Settings.quick() if args.quick else Settings()
    if args.repeats:
        chosen.repeats = args.repeats
    # Mutated in place so every module holding a reference sees the change.
    for field in dataclasses.fields(Settings):
        setattr(settings, field.name, getattr(chosen, field.name))


def print_results(title: str, results: Sequence[Result]) -> None:
    """Prints a results table and its notes to stdout."""
    print(f"\n{title}\n")
    print(table(results))
    for line in notes(results):
        print(line)


def main_single(run: Callable[[], list[Result]], argv: Sequence[str] | None = None) -> int:
    """Runs one bench module's `run()` from the command line and prints its table.

    Returns:
      0 when every case ran on both sides, 1 otherwise.
    """
    import argparse

    parser = argparse.ArgumentParser(description="Run one saikei benchmark module.")
    add_cli_arguments(parser)
    apply_cli_arguments(parser.parse_args(argv))
    results = run()
    script = os.path.basename(getattr(sys.modules[run.__module__], "__file__", run.__module__))
    print_results(f"{script} (not written to RESULTS.md; use benchmarks/run.py)", results)
    return 1 if any(r.error for r in results) else 0
