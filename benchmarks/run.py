"""Runs every `benchmarks/bench_*.py` in one process and rewrites `benchmarks/RESULTS.md`.

Usage:
  python benchmarks/run.py            # everything; rewrites RESULTS.md
  python benchmarks/run.py --quick    # fewer, shorter repeats (smoke run)
  python benchmarks/run.py --only core --no-write

Each bench module defines `run() -> list[_harness.Result]` (see `_harness.py`
for the protocol, the thread settings and the timing method). A module that
fails to import or run is reported in the table as an error and the others
still run. Exit status: 0 when every case ran on both sides, 1 otherwise
(a ratio above its target is reported, not treated as an error).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import pathlib
import shlex
import sys
import traceback

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _harness  # noqa: E402  (needs HERE on sys.path; pins threads before any jax import)


def _discover(only: list[str]) -> list[pathlib.Path]:
    paths = sorted(HERE.glob("bench_*.py"))
    if only:
        paths = [p for p in paths if any(word in p.stem for word in only)]
    return paths


def _run_module(path: pathlib.Path) -> list[_harness.Result]:
    print(f"{path.name}:", flush=True)
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return list(module.run())
    except Exception as exc:  # reported in the results, never hidden
        traceback.print_exc()
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return [_harness.Result(f"{path.stem} (whole module)", None, None, error=detail)]


def _results_markdown(results: list[_harness.Result], command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    met = [r for r in results if r.meets_target]
    measured = [r for r in results if r.ratio is not None]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` on {now}; do not edit by hand, rerun the command.",
        "Each row times saikei and its peer side by side in the same process; absolute times",
        "on a shared machine are noisy, the ratio saikei/peer is the figure that counts",
        "(lower is better; the target is the ratio to stay under).",
        "",
        *_harness.machine_lines(),
        *_harness.method_lines(results),
        "",
        _harness.table(results),
        "",
        f"{len(met)} of {len(measured)} measured cases meet their target"
        f" ({len(results) - len(measured)} not measured).",
        "",
    ]
    extra = _harness.notes(results)
    if extra:
        lines += ["Notes:", "", *extra, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, runs the selected bench modules and reports; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _harness.add_cli_arguments(parser)
    parser.add_argument(
        "--only", nargs="+", default=[], help="run only bench modules whose name contains a word"
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    parser.add_argument(
        "--results",
        type=pathlib.Path,
        help="where to write (default benchmarks/RESULTS.md; with --only, nowhere unless given)",
    )
    args = parser.parse_args(argv)
    _harness.apply_cli_arguments(args)

    paths = _discover(args.only)
    if not paths:
        print(f"benchmarks: no bench_*.py matches {args.only}", file=sys.stderr)
        return 1
    results: list[_harness.Result] = []
    for path in paths:
        results.extend(_run_module(path))

    _harness.print_results("Results (saikei/peer; lower is better)", results)
    # A partial run must not replace the full table unless asked to.
    target = args.results or (None if args.only else HERE / "RESULTS.md")
    if args.no_write or target is None:
        print("\n(RESULTS.md left as it was: --no-write, or --only without --results)")
    else:
        argv_shown = sys.argv[1:] if argv is None else argv
        command = shlex.join(["python", "benchmarks/run.py", *argv_shown])
        target.write_text(_results_markdown(results, command), encoding="utf-8")
        print(f"\nwrote {target}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
