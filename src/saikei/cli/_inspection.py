"""What `saikei inspect` measures: a greedy continuation and a look inside the model on it.

`inspect_model` runs the library calls in order and returns an `Inspection`
of plain numpy arrays and strings, which `report_html` then lays out:

1. `transformer.generate` (greedy) continues the prompt.
2. `interp.run_with_cache` runs the model once on a batch of two sequences of
   the same length: the prompt plus its continuation, and a random token
   sequence repeated (the standard probe for induction heads). It records
   every block's attention pattern and the residual stream.
3. From the cache: each token's log-probability; the logit lens
   (`cache.accumulated_resid(apply_final_norm=True)` through the unembedding
   `interp.weights(lm).W_U`: the top token per layer and position); and the
   per-head scores `interp.head_scores.previous_token` (on the text) and
   `interp.head_scores.induction` (on the repeated random tokens).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei import interp
from saikei.core import named_axes as nx
from saikei.models import transformer


@dataclasses.dataclass
class Inspection:
    """The numbers a `saikei inspect` report shows (numpy arrays; no model inside).

    Attributes:
      token_ids: The prompt's ids, then the continuation's.
      num_prompt: How many of `token_ids` are the prompt.
      token_texts: Each token as text.
      logprobs: `[seq]` log-probability of each token given the ones before
        (NaN for the first).
      top_next: `[seq][k]` the model's `(text, probability)` top predictions
        for the token after each position.
      patterns: `[layer, heads, seq, kv_seq]` attention weights on `token_ids`.
      lens_labels: The residual stream names along the logit lens' `layer` axis.
      lens_ids: `[layer, seq]` top token id of the logit lens.
      lens_probs: `[layer, seq]` its probability.
      lens_texts: `[layer][seq]` its text.
      previous_token_scores: `[layer, heads]` mean attention to the previous token.
      induction_scores: `[layer, heads]` mean attention to the token after the
        previous occurrence of the current one, on a repeated random sequence.
      induction_period: The length of the repeated random block.
      seconds: Wall time of each step.

    Example:
      >>> import numpy as np
      >>> from saikei.cli import Inspection
      >>> Inspection.__dataclass_fields__["patterns"].name
      'patterns'
    """

    token_ids: list[int]
    num_prompt: int
    token_texts: list[str]
    logprobs: np.ndarray
    top_next: list[list[tuple[str, float]]]
    patterns: np.ndarray
    lens_labels: list[str]
    lens_ids: np.ndarray
    lens_probs: np.ndarray
    lens_texts: list[list[str]]
    previous_token_scores: np.ndarray
    induction_scores: np.ndarray
    induction_period: int
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def token_text(tokenizer: Any, token_id: int) -> str:
    """How a token reads on its own: its decoded text, else its vocabulary entry.

    Example:
      >>> from saikei.cli import token_text
      >>> class Tok:
      ...     def decode(self, ids, **options): return " hi"
      ...     def id_to_token(self, i): return "Ġhi"
      >>> token_text(Tok(), 5)
      ' hi'
    """
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    if not text or "\ufffd" in text:
        text = tokenizer.id_to_token(int(token_id)) or f"<{int(token_id)}>"
    return text


def _repeated_random(
    length: int, vocab_size: int, seed: int, first: int | None
) -> tuple[np.ndarray, int, int]:
    """`length` ids: `first` (e.g. BOS) if given, a filler token if the rest is odd, then a
    random block twice. Returns `(ids, prefix, period)`."""
    head = [] if first is None or length < 3 else [first]
    period = max((length - len(head)) // 2, 1)
    prefix = length - 2 * period
    rng = np.random.default_rng(seed)
    low = min(1000, vocab_size // 4)  # skip the low ids, where special tokens tend to sit
    block = rng.integers(low, vocab_size, size=period)
    filler = [int(block[0])] * (prefix - len(head))
    return np.asarray([*head, *filler, *block, *block], dtype=np.int32), prefix, period


def _special_ids(tokenizer: Any) -> set[int]:
    try:
        decoder = tokenizer.get_added_tokens_decoder()
    except AttributeError:
        return set()
    return {int(i) for i, token in decoder.items() if getattr(token, "special", False)}


@jax.jit
def _lens_top(normed: jax.Array, unembed: jax.Array) -> tuple[jax.Array, jax.Array]:
    # One layer at a time: all layers' logits at once would be layers x seq x vocabulary.
    def top(resid: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = (resid @ unembed).astype(jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1)
        best = jnp.argmax(logits, axis=-1)
        return best, jnp.take_along_axis(probs, best[..., None], axis=-1)[..., 0]

    return jax.lax.map(top, normed)


@jax.jit
def _token_stats(logits: jax.Array, ids: jax.Array, k: int = 3) -> tuple[jax.Array, ...]:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(logp[:-1], ids[1:, None], axis=-1)[:, 0]
    top_logp, top_ids = jax.lax.top_k(logp, k)
    return chosen, jnp.exp(top_logp), top_ids


def inspect_model(
    lm: Any,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int = 32,
    stop_tokens: Sequence[int] = (),
    seed: int = 0,
    on_step: Callable[[str], Any] = lambda step: None,
) -> Inspection:
    """Continues `prompt_ids` greedily and looks inside `lm` on the result.

    Args:
      lm: A `TransformerLM` (hook points are added if it has none).
      tokenizer: Its `tokenizers.Tokenizer` (for token texts).
      prompt_ids: The prompt's token ids.
      max_new_tokens: How many tokens to generate (fewer if a stop token comes).
      stop_tokens: Ids that end the continuation (e.g. the end-of-sequence id).
      seed: Seed of the random sequence that probes induction heads.
      on_step: Called with the name of each step as it starts (for progress).

    Returns:
      An `Inspection`.

    Example:
      >>> import jax, tokenizers
      >>> from saikei.cli import inspect_model
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=2,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=2,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
      ...     {f"w{i}": i for i in range(11)}, "w0"))
      >>> result = inspect_model(lm, tok, [1, 2, 3], max_new_tokens=3)
      >>> result.patterns.shape, result.induction_scores.shape, len(result.token_ids)
      ((2, 2, 6, 6), (2, 2), 6)
    """
    seconds: dict[str, float] = {}
    on_step("generating")
    begin = time.perf_counter()
    prompt = nx.wrap(jnp.asarray(list(prompt_ids), dtype=jnp.int32), "seq")
    new = transformer.generate(
        lm,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        stop_tokens=stop_tokens,
        pad_id=-1,
    )
    new_ids = [int(t) for t in np.asarray(new.unwrap("seq"))]
    stops = set(stop_tokens)
    for i, token in enumerate(new_ids):
        if token in stops:
            new_ids = new_ids[: i + 1]
            break
    seconds["generate"] = time.perf_counter() - begin

    on_step("running with cache")
    begin = time.perf_counter()
    ids = np.asarray([*prompt_ids, *new_ids], dtype=np.int32)
    # The probe starts like the prompt when that starts with a special token (BOS): models
    # trained with one attend differently without it.
    first = int(ids[0]) if int(ids[0]) in _special_ids(tokenizer) else None
    probe, start, period = _repeated_random(len(ids), lm.metadata.vocab_size, seed, first)
    tokens = nx.wrap(jnp.asarray(np.stack([ids, probe])), "batch", "seq")
    logits, cache = interp.run_with_cache(
        lm, tokens, names=["attn.pattern", "resid_pre", "resid_post"]
    )
    stacked = cache.stack("attn.pattern")
    patterns = np.asarray(
        stacked[{"batch": 0}].unwrap("layer", "heads", "seq", "kv_seq"), dtype=np.float32
    )
    previous = interp.head_scores.previous_token(stacked[{"batch": 0}])
    if period >= 2:
        induction = interp.head_scores.induction(stacked[{"batch": 1}], period, prefix=start)
        induction = np.asarray(induction.unwrap("layer", "heads"))
    else:  # too short to repeat a block of 2 tokens
        induction = np.full(patterns.shape[:2], np.nan, np.float32)
    resid, labels = cache.accumulated_resid(apply_final_norm=True, return_labels=True)
    normed = resid[{"batch": 0}].unwrap("layer", "seq", "embedding")
    unembed = interp.weights(lm).W_U.unwrap("embedding", "vocabulary")
    lens_ids, lens_probs = (np.asarray(a) for a in _lens_top(normed, unembed.astype(normed.dtype)))
    chosen, top_p, top_ids = (
        np.asarray(a)
        for a in _token_stats(logits[{"batch": 0}].unwrap("seq", "vocabulary"), jnp.asarray(ids))
    )
    seconds["run with cache"] = time.perf_counter() - begin

    on_step("scoring heads")
    begin = time.perf_counter()
    text_of: dict[int, str] = {}

    def text(i: int) -> str:
        if i not in text_of:
            text_of[i] = token_text(tokenizer, i)
        return text_of[i]

    inspection = Inspection(
        token_ids=[int(i) for i in ids],
        num_prompt=len(prompt_ids),
        token_texts=[text(int(i)) for i in ids],
        logprobs=np.concatenate([[np.nan], chosen]),
        top_next=[
            [(text(int(i)), float(p)) for i, p in zip(row_ids, row_p)]
            for row_ids, row_p in zip(top_ids, top_p)
        ],
        patterns=patterns,
        lens_labels=list(labels),
        lens_ids=lens_ids,
        lens_probs=lens_probs,
        lens_texts=[[text(int(i)) for i in row] for row in lens_ids],
        previous_token_scores=np.asarray(previous.unwrap("layer", "heads")),
        induction_scores=induction,
        induction_period=period,
        seconds=seconds,
    )
    seconds["scores"] = time.perf_counter() - begin
    return inspection
