"""`saikei convert`: a GGUF file written as a Hugging Face model directory.

`load_pretrained` reads the GGUF file (dequantizing its tensors),
`save_pretrained` writes `config.json` and `model.safetensors`, and
`load_tokenizer` rebuilds the tokenizer from the file's metadata, saved as
`tokenizer.json`. What the builder config does not carry but `transformers`
uses is added from the GGUF header: the context length and the special token
ids (in `config.json` and `generation_config.json`), and the special tokens
and chat template (in `tokenizer_config.json`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from saikei.cli._models import (
    UsageError,
    _is_gguf,
    checkpoint_config,
    context_length,
    load_model,
    load_tokenizer,
)
from saikei.models import transformer

_SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _write_json(path: Path, data: Any) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _chat_template(path: Path) -> str | None:
    from saikei.models.transformer import _gguf

    with _gguf.GGUFFile(path) as gguf_file:
        template = gguf_file.metadata.get("tokenizer.chat_template")
    return template if isinstance(template, str) else None


def convert_gguf(
    source: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Writes the GGUF model `source` as a Hugging Face directory `outdir`; returns its path.

    Args:
      source: A `.gguf` file.
      outdir: The directory to write (created if missing).
      dtype: The dtype of the written weights: `"float32"`, `"bfloat16"` or
        `"float16"` (the GGUF tensors are dequantized to it).
      overwrite: Allow an `outdir` that is not empty (its model files are
        replaced).
      progress: Show a progress bar while loading.

    Raises:
      UsageError: `source` is not a GGUF file of a supported architecture, or
        `outdir` is not empty and `overwrite` is False.

    Example:
      >>> import os, tempfile
      >>> from saikei.cli import UsageError, convert_gguf
      >>> try:
      ...     convert_gguf(tempfile.mkdtemp(), os.path.join(tempfile.mkdtemp(), "out"))
      ... except UsageError as err:
      ...     print("GGUF" in str(err))
      True
    """
    source, outdir = Path(source), Path(outdir)
    if not source.exists():
        raise UsageError(f"{source} does not exist; pass the .gguf file to convert.")
    if not source.is_file() or not _is_gguf(source):
        raise UsageError(
            f"{source} is not a GGUF file; convert reads a .gguf file (a Hugging Face directory"
            " needs no conversion)."
        )
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{outdir} exists and is not a directory; choose another OUTDIR.")
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise UsageError(f"{outdir} is not empty; choose an empty OUTDIR or pass --overwrite.")
    config = checkpoint_config(source)
    tokenizer = load_tokenizer(source)
    lm = load_model(source, progress=progress, dtype=dtype)
    transformer.save_pretrained(lm, outdir, overwrite=True)

    written = json.loads((outdir / "config.json").read_text(encoding="utf-8"))
    limit = context_length(config)
    if limit is not None:
        written["max_position_embeddings"] = limit
    special = {key: config[key] for key in _SPECIAL_IDS if isinstance(config.get(key), int)}
    written.update(special)
    _write_json(outdir / "config.json", written)
    _write_json(outdir / "generation_config.json", dict(special))

    partial = outdir / ".tokenizer.json.partial"
    try:
        tokenizer.save(str(partial))
        os.replace(partial, outdir / "tokenizer.json")
    finally:
        partial.unlink(missing_ok=True)
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
    }
    for key in _SPECIAL_IDS:
        if key in special:
            tokenizer_config[key.removesuffix("_id")] = tokenizer.id_to_token(special[key])
    if limit is not None:
        tokenizer_config["model_max_length"] = limit
    template = _chat_template(source)
    if template is not None:
        tokenizer_config["chat_template"] = template
    _write_json(outdir / "tokenizer_config.json", tokenizer_config)
    return outdir
