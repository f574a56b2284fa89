"""Array rendering API of `sk.ts`: array figures, sharding figures, token-aware views.

`render_array` and `render_array_sharding` are treescope's own functions: the
NDArray adapter that `NamedArray.__treescope_ndarray_adapter__` returns makes
them address NamedArray axes by name (`rows=["seq"]`, `sliders=["batch"]`),
with valid masks that may themselves be NamedArrays. `ArrayAutovisualizer`
extends treescope's with a tokenizer-aware constructor that understands
Hugging Face tokenizers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import treescope
from treescope import integer_digitbox as integer_digitbox
from treescope import render_array as render_array
from treescope import render_array_sharding as render_array_sharding
from treescope.figures import text_on_color as text_on_color

__all__ = [
    "ArrayAutovisualizer",
    "TokenLookup",
    "integer_digitbox",
    "render_array",
    "render_array_sharding",
    "text_on_color",
    "vocab_autovisualizer",
]


class TokenLookup:
    """Maps token ids to display text for any supported kind of tokenizer.

    Accepted tokenizers:

    - a Hugging Face `tokenizers.Tokenizer` (`id_to_token`, `decode`),
    - a `transformers` tokenizer (`convert_ids_to_tokens`, `decode`),
    - a SentencePiece-like processor (`IdToPiece`, `GetPieceSize`, `IsControl`),
    - a sequence of strings (the vocabulary, indexed by id),
    - a callable from id to string.

    For Hugging Face tokenizers the text is what the token decodes to (so a
    byte-level `Ġthe` shows as ` the`); tokens that do not decode to text on
    their own (partial UTF-8 sequences) show their raw vocabulary entry.

    Args:
      tokenizer: The tokenizer.

    Raises:
      TypeError: If `tokenizer` is none of the above.

    Example:
      >>> from saikei.viz._arrays_api import TokenLookup
      >>> lookup = TokenLookup(["<pad>", "hello", "world"])
      >>> lookup.text(1), lookup.text(7)
      ('hello', '<out of range: 7>')
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}
        self._special: frozenset[int] = frozenset()
        tok = tokenizer
        if hasattr(tok, "id_to_token") and hasattr(tok, "get_vocab_size"):
            self._kind = "tokenizers"
            self.vocab_size: int | None = tok.get_vocab_size(with_added_tokens=True)
            decoder = tok.get_added_tokens_decoder()
            self._special = frozenset(i for i, added in decoder.items() if added.special)
        elif hasattr(tok, "convert_ids_to_tokens") and hasattr(tok, "decode"):
            self._kind = "transformers"
            self.vocab_size = len(tok)
            self._special = frozenset(getattr(tok, "all_special_ids", ()))
        elif hasattr(tok, "IdToPiece") and hasattr(tok, "GetPieceSize"):
            self._kind = "sentencepiece"
            self.vocab_size = tok.GetPieceSize()
        elif isinstance(tok, Sequence) and not isinstance(tok, str | bytes):
            self._kind = "sequence"
            self.vocab_size = len(tok)
        elif callable(tok):
            self._kind = "callable"
            self.vocab_size = None
        else:
            raise TypeError(
                f"Unsupported tokenizer {type(tok).__name__}: {tok!r}. Expected a Hugging Face"
                " `tokenizers.Tokenizer`, a `transformers` tokenizer, a SentencePiece"
                " processor, a list of token strings, or a callable from id to string."
            )

    def in_range(self, token_id: int) -> bool:
        """Whether `token_id` is a valid id for this tokenizer.

        Example:
          >>> from saikei.viz._arrays_api import TokenLookup
          >>> TokenLookup(["a", "b"]).in_range(-1)
          False
        """
        return token_id >= 0 and (self.vocab_size is None or token_id < self.vocab_size)

    def is_special(self, token_id: int) -> bool:
        """Whether `token_id` is a special/control token (shown dimmed).

        Example:
          >>> from saikei.viz._arrays_api import TokenLookup
          >>> TokenLookup(["a", "b"]).is_special(0)
          False
        """
        token_id = int(token_id)
        if self._kind == "sentencepiece":
            is_control = getattr(self.tokenizer, "IsControl", None)
            return bool(self.in_range(token_id) and is_control and is_control(token_id))
        return token_id in self._special

    def text(self, token_id: int) -> str:
        """The display text of `token_id`, or `<out of range: id>`.

        Example:
          >>> from saikei.viz._arrays_api import TokenLookup
          >>> TokenLookup(lambda i: f"t{i}").text(3)
          't3'
        """
        token_id = int(token_id)
        try:
            return self._cache[token_id]
        except KeyError:
            pass
        if not self.in_range(token_id):
            return f"<out of range: {token_id}>"
        text = self._lookup(token_id)
        if len(self._cache) < 100_000:
            self._cache[token_id] = text
        return text

    def _lookup(self, token_id: int) -> str:
        tok = self.tokenizer
        if self._kind == "sequence":
            return str(tok[token_id])
        if self._kind == "callable":
            return str(tok(token_id))
        if self._kind == "sentencepiece":
            return str(tok.IdToPiece(token_id))
        if self._kind == "tokenizers":
            piece = tok.id_to_token(token_id)
        else:
            piece = tok.convert_ids_to_tokens(token_id)
        decoded = tok.decode([token_id], skip_special_tokens=False)
        if decoded and "\ufffd" not in decoded:
            return decoded
        return f"<unknown: {token_id}>" if piece is None else str(piece)

    def describe(self, token_id: int) -> str:
        """The text of `token_id` as a Python literal, for tooltips.

        Example:
          >>> from saikei.viz._arrays_api import TokenLookup
          >>> TokenLookup(["a", " b"]).describe(1)
          "' b'"
        """
        token_id = int(token_id)
        if not self.in_range(token_id):
            return f"<out of range: {token_id}>"
        return repr(self.text(token_id))


@dataclasses.dataclass
class ArrayAutovisualizer(treescope.ArrayAutovisualizer):
    """treescope's array autovisualizer, with a tokenizer-aware constructor.

    Use it with `treescope.active_autovisualizer.set_scoped(...)`, or through
    `basic_interactive_setup(autovisualize_arrays=True)`. NamedArrays are laid
    out by axis name (`prefers_row=["seq"]` puts `seq` on the rows).

    Example:
      >>> import treescope
      >>> from saikei import sk
      >>> from saikei.viz._arrays_api import ArrayAutovisualizer
      >>> viz = ArrayAutovisualizer.for_tokenizer(["<pad>", "hi", "there"])
      >>> viz.token_lookup_fn(2)
      "'there'"
      >>> with treescope.active_autovisualizer.set_scoped(viz):
      ...     html = treescope.render_to_html(sk.nx.wrap([1, 2, 0], "seq"))
    """

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, **kwargs: Any) -> ArrayAutovisualizer:
        """An autovisualizer whose integer arrays show token text on hover.

        Args:
          tokenizer: A Hugging Face `tokenizers.Tokenizer` or `transformers`
            tokenizer, a SentencePiece processor, a list of token strings, or a
            callable from id to string (see `TokenLookup`).
          **kwargs: Other `ArrayAutovisualizer` fields (e.g. `prefers_row`).

        Returns:
          An ArrayAutovisualizer with `token_lookup_fn` set.

        Example:
          >>> from saikei.viz._arrays_api import ArrayAutovisualizer
          >>> ArrayAutovisualizer.for_tokenizer(["a", "b"]).token_lookup_fn(9)
          '<out of range: 9>'
        """
        lookup = TokenLookup(tokenizer)
        return cls(token_lookup_fn=lookup.describe, **kwargs)


vocab_autovisualizer: Callable[..., ArrayAutovisualizer] = ArrayAutovisualizer.for_tokenizer
"""Alias of `ArrayAutovisualizer.for_tokenizer` (penzai's `pz.ts.vocab_autovisualizer`)."""
