"""Tokenizers rebuilt from a GGUF file's `tokenizer.ggml.*` metadata.

`tokenizer_from_gguf` returns a `tokenizers.Tokenizer` (the Hugging Face
library, imported lazily) for the two vocabulary kinds llama.cpp stores:
byte-level BPE (GPT-2 style, e.g. SmolLM2, Llama 3, Qwen2) and
SentencePiece-style BPE with byte fallback (Llama 1/2, Gemma).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# llama.cpp token types.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "\u2581"

# Pre-tokenizer regexes of byte-level vocabularies, by `tokenizer.ggml.pre`.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_BYTE_LEVEL_SPLITS = {
    "default": None,
    "gpt-2": None,
    "gpt2": None,
    "smollm": "digits",
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
}


def _byte_level_tokenizer(meta: Mapping[str, Any], source: str) -> Any:
    import tokenizers
    from tokenizers import decoders, pre_tokenizers, processors

    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _BYTE_LEVEL_SPLITS:
        raise ValueError(
            f"{source}: tokenizer.ggml.pre={pre!r} is not a pre-tokenizer saikei knows (it knows"
            f" {sorted(_BYTE_LEVEL_SPLITS)}); the split it stands for decides the token ids, so"
            " saikei will not guess. Use the model's tokenizer.json instead."
        )
    vocab = {token: i for i, token in enumerate(tokens)}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges))
    split = _BYTE_LEVEL_SPLITS[pre]
    # ByteLevel's own regex is GPT-2's; other vocabularies split first with theirs.
    byte_level = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=split in (None, "digits")
    )
    if split == "digits":  # SmolLM: every digit on its own, then GPT-2's split
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(tokenizers.Regex(split), behavior="isolated"),
                byte_level,
            ]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _sentencepiece_merges(
    tokens: list[str], scores: np.ndarray, types: np.ndarray
) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece BPE encoding.

    SentencePiece repeatedly merges the adjacent pair whose concatenation is the
    highest-scoring normal token; ranking every such pair by that token's score
    gives a BPE merge list that makes the same choices.
    """
    vocab = {token: i for i, token in enumerate(tokens)}
    ranked = []
    for i, token in enumerate(tokens):
        if types[i] != _NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[i]), i, vocab[left], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _sentencepiece_tokenizer(meta: Mapping[str, Any], source: str) -> Any:
    import tokenizers
    from tokenizers import decoders, normalizers, pre_tokenizers

    # Some converters spell whitespace-only tokens with real spaces; in a
    # SentencePiece vocabulary a space is always U+2581.
    tokens = [
        t.replace(" ", _SPACE) if t and not t.strip(" ") else t
        for t in meta["tokenizer.ggml.tokens"]
    ]
    n = len(tokens)
    scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(n)), np.float64)
    types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(n, _NORMAL)), np.int64)
    if len(scores) != n or len(types) != n:
        raise ValueError(
            f"{source}: tokenizer.ggml.scores/token_type have {len(scores)}/{len(types)} entries"
            f" for {n} tokens; the file is corrupt."
        )
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    model = tokenizers.models.BPE(
        vocab={token: i for i, token in enumerate(tokens)},
        merges=_sentencepiece_merges(tokens, scores, types),
        unk_token=tokens[int(unk_id)] if unk_id is not None else None,
        byte_fallback=bool((types == _BYTE).any()),
        fuse_unk=True,
    )
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    add_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    if add_prefix:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_SPACE, prepend_scheme="first", split=False
        )
    steps = [decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def tokenizer_from_gguf(metadata: Mapping[str, Any], source: str = "GGUF file") -> Any:
    """Builds a `tokenizers.Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata.

    Supports `tokenizer.ggml.model` `"gpt2"` (byte-level BPE with the file's
    merges and the pre-tokenizer named by `tokenizer.ggml.pre`) and `"llama"`
    (SentencePiece BPE: merges ranked by token score, byte fallback). Control
    tokens become special tokens, user-defined tokens added tokens, and the
    BOS/EOS tokens are prepended/appended as `add_bos_token`/`add_eos_token` say.

    Example:
      >>> from saikei.models.transformer import _gguf_tokenizer
      >>> meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
      ...   "tokenizer.ggml.merges": ["a b"]}
      >>> tok = _gguf_tokenizer.tokenizer_from_gguf(meta)
      >>> tok.encode("abab").ids, tok.decode([2, 0])
      ([2, 2], 'aba')
    """
    import tokenizers
    from tokenizers import processors

    kind = metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in metadata:
        raise ValueError(f"{source}: the file has no tokenizer (no 'tokenizer.ggml.tokens').")
    if kind == "gpt2":
        tok = _byte_level_tokenizer(metadata, source)
    elif kind == "llama":
        tok = _sentencepiece_tokenizer(metadata, source)
    else:
        raise ValueError(
            f"{source}: tokenizer.ggml.model={kind!r} is not supported; saikei builds 'gpt2'"
            " (byte-level BPE) and 'llama' (SentencePiece BPE) tokenizers."
        )
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = metadata.get("tokenizer.ggml.token_type")
    if types is not None:
        # The model's own spelling of each token (the SentencePiece builder respells some).
        pieces = [tok.id_to_token(i) for i in range(len(tokens))]
        tok.add_special_tokens(
            [
                tokenizers.AddedToken(piece, special=True, normalized=False)
                for piece, token_type in zip(pieces, types)
                if token_type == _CONTROL
            ]
        )
        tok.add_tokens(
            [
                tokenizers.AddedToken(piece, special=False, normalized=kind == "llama")
                for piece, token_type in zip(pieces, types)
                if token_type == _USER_DEFINED
            ]
        )
    bos, eos = (metadata.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos"))
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token", False))
    template = "$A"
    special: list[tuple[str, int]] = []
    if add_bos and bos is not None:
        template = f"{tokens[int(bos)]} {template}"
        special.append((tokens[int(bos)], int(bos)))
    if add_eos and eos is not None:
        template = f"{template} {tokens[int(eos)]}"
        special.append((tokens[int(eos)], int(eos)))
    if special:
        steps = [processors.TemplateProcessing(single=template, special_tokens=special)]
        if tok.post_processor is not None:
            steps.insert(0, tok.post_processor)
        tok.post_processor = processors.Sequence(steps)
    return tok
