"""Streaming text out of `transformer.generate` as each token is chosen.

`generate` compiles prefill and the whole decode loop into one program and
runs every layer of the model at every step. We put a `TokenTap` in front of
the model's body: a layer that hands the token ids it is fed to a host
callback (`jax.debug.callback`, ordered) and returns them unchanged. Each
decode step feeds the token chosen at the previous step, so the callback sees
every new token as soon as the next step starts; the last one comes from
`generate`'s result. One compiled program, no chunking, and the tokens are
exactly `generate`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei import nn
from saikei.core import named_axes as nx
from saikei.core._struct import pytree_dataclass
from saikei.models import transformer

_LISTENERS: dict[str, Callable[[np.ndarray], Any]] = {}


def _deliver(channel: str, ids: Any) -> None:
    listener = _LISTENERS.get(channel)
    if listener is not None:
        listener(np.asarray(ids))


@contextlib.contextmanager
def listening(channel: str, on_tokens: Callable[[np.ndarray], Any]) -> Iterator[None]:
    """Routes what every `TokenTap(channel)` sees to `on_tokens` while the block runs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.cli import TokenTap, listening
      >>> seen = []
      >>> with listening("doc", lambda ids: seen.append(ids.tolist())):
      ...     _ = TokenTap("doc")(sk.nx.wrap(jnp.array([3, 4]), "seq"))
      ...     jax.effects_barrier()
      >>> seen
      [[3, 4]]
    """
    if channel in _LISTENERS:
        raise ValueError(f"listening: channel {channel!r} already has a listener.")
    _LISTENERS[channel] = on_tokens
    try:
        yield
    finally:
        jax.effects_barrier()
        del _LISTENERS[channel]


@pytree_dataclass
class TokenTap(nn.Layer):
    """An identity layer on token ids that reports them to the host at each call.

    Whatever listens on its channel (`listening(channel, fn)`) gets the ids
    (a numpy array, axes in the order of the input's named axes) each time
    the layer runs, in call order, also inside `jax.jit` and `generate`'s
    compiled loop. The channel is a name, not a function, so a model with a
    tap compiles once however many times it is listened to.

    Attributes:
      channel: The name listeners subscribe to.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.cli import TokenTap
      >>> tap = TokenTap("ids")
      >>> tap(sk.nx.wrap(jnp.array([3, 4]), "seq")).unwrap("seq").tolist()  # nobody listens
      [3, 4]
    """

    channel: str = dataclasses.field(metadata={"pytree_node": False})

    def __call__(self, tokens: Any, /, **side_inputs: Any) -> Any:
        data = tokens.unwrap(*tokens.named_shape) if nx.is_namedarray(tokens) else tokens
        jax.debug.callback(functools.partial(_deliver, self.channel), data, ordered=True)
        return tokens


class TextStream:
    """Turns a growing list of token ids into text deltas (held back mid-character).

    Example:
      >>> from saikei.cli import TextStream
      >>> class Chars:
      ...     def decode(self, ids):
      ...         return "".join(chr(i) for i in ids)
      >>> out = []
      >>> stream = TextStream(Chars(), out.append)
      >>> stream.add(104); stream.add(105); stream.finish()
      >>> out
      ['h', 'i']
    """

    def __init__(self, tokenizer: Any, write: Callable[[str], Any]):
        self.tokenizer, self.write = tokenizer, write
        self.ids: list[int] = []
        self.printed = ""

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids)
        if not final and text.endswith("\ufffd"):
            return  # a character split across tokens: wait for its other bytes
        if text.startswith(self.printed) and len(text) > len(self.printed):
            self.write(text[len(self.printed) :])
            self.printed = text

    def add(self, token: int) -> None:
        """Appends one token id and writes the text it completes."""
        self.ids.append(int(token))
        self._flush(final=False)

    def finish(self) -> None:
        """Writes whatever text is still held back."""
        self._flush(final=True)


_CHANNEL = "saikei.cli.stream_generate"


def stream_generate(
    lm: Any,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int,
    on_token: Callable[[int], Any],
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int] = (),
    rng: jax.Array | None = None,
) -> list[int]:
    """Runs `transformer.generate` on one prompt, calling `on_token(id)` for each new token in order.

    Args:
      lm: A `TransformerLM`.
      prompt_ids: The prompt's token ids.
      max_new_tokens: How many tokens to generate at most.
      on_token: Called with each new token id as soon as it is chosen.
      temperature, top_k, top_p, stop_tokens, rng: As for `generate`.

    Returns:
      The new token ids, ending at (and including) the first stop token.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.cli import stream_generate
      >>> from saikei.models import transformer
      >>> from saikei.models.transformer.variants import llamalike
      >>> cfg = llamalike.LlamalikeTransformerConfig(num_kv_heads=1, query_head_multiplier=1,
      ...     embedding_dim=8, projection_dim=4, mlp_hidden_dim=16, num_decoder_blocks=1,
      ...     vocab_size=11)
      >>> lm = llamalike.build_llamalike_transformer(cfg, jax.random.key(0))
      >>> seen = []
      >>> new = stream_generate(lm, [3, 4, 5], max_new_tokens=4, on_token=seen.append)
      >>> plain = transformer.generate(lm, sk.nx.wrap(jax.numpy.array([3, 4, 5]), "seq"),
      ...     max_new_tokens=4, temperature=0.0)
      >>> new == seen == plain.unwrap("seq").tolist()
      True
    """
    calls = 0
    streamed: list[int] = []

    def on_tokens(ids: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the first call is the prompt (prefill)
            token = int(ids.reshape(-1)[-1])
            streamed.append(token)
            on_token(token)

    tapped = dataclasses.replace(lm, body=nn.Sequential([TokenTap(_CHANNEL), lm.body]))
    prompt = nx.wrap(jnp.asarray(list(prompt_ids), dtype=jnp.int32), "seq")
    with listening(_CHANNEL, on_tokens):
        out = transformer.generate(
            tapped,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop_tokens=stop_tokens,
            rng=rng,
            pad_id=-1,  # no padding: prompt tokens are all real
        )
    tokens = [int(t) for t in np.asarray(out.unwrap("seq"))]
    stops = set(stop_tokens)
    for i, token in enumerate(tokens):
        if token in stops:
            tokens = tokens[: i + 1]
            break
    if streamed != tokens[: len(streamed)]:
        raise RuntimeError(f"stream_generate: streamed {streamed} but generate returned {tokens}.")
    for token in tokens[len(streamed) :]:
        on_token(token)
    return tokens
