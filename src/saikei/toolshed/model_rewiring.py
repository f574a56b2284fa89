"""Layers that rewire, ablate or linearize activations, for causal analyses of models.

Insert them into a model with selectors (`sk.select(model)...insert_after(...)`):

* `KnockOutAttentionHeads` replaces the attention pattern of chosen heads by
  the fallback "attend only to the first real token" (usually `<BOS>`),
  wherever padding puts it.
* `RewireComputationPaths` mixes activations between parallel "worlds" (a
  batch axis of counterfactual runs), for activation and path patching in one
  batched forward pass.
* `LinearizeAndAdjust` replaces a layer by its first-order approximation
  around one adjusted input, evaluated at another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._struct import Struct, pytree_dataclass
from saikei.nn._layer import Layer

NamedArray = named_axes.NamedArray

__all__ = ["From", "KnockOutAttentionHeads", "LinearizeAndAdjust", "RewireComputationPaths"]


def _static(**kwargs: Any) -> Any:
    return dataclasses.field(metadata={"pytree_node": False}, **kwargs)


def _map_named(fn: Any, tree: Any, *rest: Any, is_pair: bool = False) -> Any:
    if is_pair:
        return jax.tree_util.tree_map(fn, tree, is_leaf=lambda x: type(x) is _Pair)
    return jax.tree_util.tree_map(fn, tree, *rest, is_leaf=named_axes.is_namedarray)


class _Pair(tuple):
    """Two values kept together as one leaf while mapping over a tree."""


def _broadcast_together(a: Any, b: Any) -> _Pair:
    """`a` and `b` broadcast to common shapes: by name for NamedArrays, else by position."""
    named_a = isinstance(a, named_axes.NamedArrayBase)
    named_b = isinstance(b, named_axes.NamedArrayBase)
    if named_a or named_b:
        a = a if named_a else named_axes.wrap(jnp.asarray(a))
        b = b if named_b else named_axes.wrap(jnp.asarray(b))
        names = {**a.named_shape, **b.named_shape}
        positional = jnp.broadcast_shapes(a.positional_shape, b.positional_shape)
        a = a.broadcast_to(positional, names)
        b = named_axes.order_like(b.broadcast_to(positional, names), a)
        return _Pair((a, b))
    a, b = jnp.broadcast_arrays(jnp.asarray(a), jnp.asarray(b))
    return _Pair((a, b))


@pytree_dataclass
class KnockOutAttentionHeads(Layer):
    """Redirects masked-out heads to attend only to the first real key position.

    Insert it right after the attention softmax. For each head,
    `head_mask * weights + (1 - head_mask) * fallback`, where the fallback
    puts all attention on the first real token of the sequence (the `<BOS>`
    token in most models), which is what many heads do when they have nothing
    to do. Which key is the first real one comes from the positions side input
    (`kv_token_positions` in a KV-caching model, else `token_positions`; -1
    marks padding), so a left-padded row is knocked out exactly like the same
    sequence alone. Without a positions side input, key index 0 is used.

    The mask broadcasts by name: axes of `head_mask` that the weights lack are
    added to the output (e.g. one knock-out pattern per entry of a sweep axis).

    Attributes:
      head_mask: NamedArray (e.g. over "heads"): 1 keeps a head, 0 knocks it
        out; values in between interpolate.
      kv_axis: Name of the key-position axis of the attention weights.
      seq_axis: Name of the sequence axis of the positions side inputs (it is
        the key axis of the weights).
      positions_input_names: Side inputs to read the key positions from, the
        first one present wins.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import model_rewiring
      >>> knock = model_rewiring.KnockOutAttentionHeads(
      ...     sk.nx.wrap(jnp.array([1.0, 0.0]), "heads"))
      >>> weights = sk.nx.full({"heads": 2, "seq": 1, "kv_seq": 3}, 0.25)
      >>> positions = sk.nx.wrap(jnp.array([-1, 0, 1]), "seq")  # one pad on the left
      >>> knock(weights, token_positions=positions).unwrap("heads", "seq", "kv_seq").tolist()
      [[[0.25, 0.25, 0.25]], [[0.0, 1.0, 0.0]]]
    """

    head_mask: NamedArray
    kv_axis: Hashable = _static(default="kv_seq")
    seq_axis: Hashable = _static(default="seq")
    positions_input_names: tuple[str, ...] = _static(
        default=("kv_token_positions", "token_positions")
    )

    def __call__(self, attn_weights: NamedArray, /, **side_inputs: Any) -> NamedArray:
        if not isinstance(attn_weights, named_axes.NamedArrayBase):
            raise TypeError(
                "KnockOutAttentionHeads: expected NamedArray attention weights, got"
                f" {type(attn_weights).__name__}."
            )
        shape = attn_weights.named_shape
        if self.kv_axis not in shape:
            raise ValueError(
                f"KnockOutAttentionHeads: the attention weights have no {self.kv_axis!r} axis"
                f" (named_shape {shape}). Insert this layer after the softmax over key"
                " positions, or set kv_axis to the name of the key axis."
            )
        dtype = attn_weights.dtype
        fallback = self._fallback(shape[self.kv_axis], side_inputs).astype(dtype)
        mask = self.head_mask.astype(dtype)
        return mask * attn_weights + (1 - mask) * fallback

    def _fallback(self, kv_size: int, side_inputs: dict[str, Any]) -> NamedArray:
        """One-hot over the key axis at the first real token (index 0 without positions)."""
        name = next((n for n in self.positions_input_names if n in side_inputs), None)
        if name is None or side_inputs[name] is None:
            return named_axes.arange(self.kv_axis, kv_size) == 0
        positions = side_inputs[name]
        if not isinstance(positions, named_axes.NamedArrayBase) or (
            self.seq_axis not in positions.named_shape and self.kv_axis not in positions.named_shape
        ):
            raise ValueError(
                f"KnockOutAttentionHeads: the side input {name!r} must be a NamedArray of"
                f" positions with a {self.seq_axis!r} (or {self.kv_axis!r}) axis, got"
                f" {getattr(positions, 'named_shape', type(positions).__name__)}."
            )
        if self.kv_axis not in positions.named_shape:
            positions = positions.untag(self.seq_axis).tag(self.kv_axis)
        if positions.named_shape[self.kv_axis] != kv_size:
            raise ValueError(
                f"KnockOutAttentionHeads: the positions in {name!r} cover"
                f" {positions.named_shape[self.kv_axis]} keys but the attention weights have"
                f" {kv_size} along {self.kv_axis!r}; pass the positions of the keys, or name"
                " the right side input in positions_input_names."
            )
        real = positions >= 0
        never = jnp.iinfo(positions.dtype).max
        first = named_axes.nmap(jnp.min)(
            named_axes.nmap(jnp.where)(real, positions, never).untag(self.kv_axis)
        )
        return real & (positions == first)


@pytree_dataclass
class From(Struct):
    """One weighted connection from a source world, for `RewireComputationPaths`.

    Attributes:
      source: Name of the world to read from.
      weight: A float, or a NamedArray with no positional axes whose named
        axes give one weight per position (e.g. one per head).

    Example:
      >>> from saikei.toolshed import model_rewiring
      >>> model_rewiring.From("clean", weight=0.5).source
      'clean'
    """

    source: Hashable = _static()
    weight: Any = 1.0


def _as_froms(dest: Hashable, taking: Any) -> tuple[From, ...]:
    froms = (taking,) if isinstance(taking, From) else taking
    if not isinstance(froms, tuple) or not all(isinstance(f, From) for f in froms):
        raise TypeError(
            f"RewireComputationPaths: taking[{dest!r}] must be a From or a tuple of From"
            f" (an empty tuple zeroes the world), got {taking!r}."
        )
    return froms


@pytree_dataclass
class RewireComputationPaths(Layer):
    """Mixes activations between parallel worlds stacked along `worlds_axis`.

    The input's `worlds_axis` indexes counterfactual runs (e.g. clean and
    corrupted inputs) in `world_ordering`. World `w`'s output is
    `sum(f.weight * input[f.source] for f in taking[w])`: `From(w)` alone is
    a no-op for `w`, `From(other)` patches in the other world's activation,
    and `()` zeroes it.

    Attributes:
      worlds_axis: Name of the worlds axis (not otherwise used by the model).
      world_ordering: World names, in the order of the worlds axis.
      taking: For every world name, a `From` or a tuple of `From`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import model_rewiring as mr
      >>> swap = mr.RewireComputationPaths("worlds", ("a", "b"),
      ...     {"a": mr.From("b"), "b": mr.From("a")})
      >>> x = sk.nx.wrap(jnp.array([[1.0, 2.0], [3.0, 4.0]]), "worlds", "x")
      >>> swap(x).unwrap("worlds", "x").tolist()
      [[3.0, 4.0], [1.0, 2.0]]
    """

    worlds_axis: Hashable = _static()
    world_ordering: tuple[Hashable, ...] = _static()
    taking: Mapping[Hashable, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        worlds = tuple(self.world_ordering)
        if len(set(worlds)) != len(worlds):
            raise ValueError(f"RewireComputationPaths: world_ordering {worlds!r} has duplicates.")
        if set(self.taking) != set(worlds):
            raise ValueError(
                f"RewireComputationPaths: the keys of taking {sorted(map(str, self.taking))}"
                f" must be exactly the worlds {list(worlds)!r}; give one entry per world"
                " (From(world) for a no-op)."
            )
        for dest, taking in self.taking.items():
            for source in _as_froms(dest, taking):
                if source.source not in worlds:
                    raise ValueError(
                        f"RewireComputationPaths: taking[{dest!r}] reads from"
                        f" {source.source!r}, which is not a world of {list(worlds)!r}."
                    )

    def path_matrix(self) -> NamedArray:
        """The mixing matrix, positional `[destination, source]` over the worlds.

        Entry `[i, j]` is the weight with which world `i` reads world `j`;
        NamedArray weights add their named axes to the matrix.

        Returns:
          A NamedArray with positional shape `(n_worlds, n_worlds)`.

        Example:
          >>> from saikei.toolshed import model_rewiring as mr
          >>> mr.RewireComputationPaths("worlds", ("a", "b"),
          ...     {"a": mr.From("a"), "b": (mr.From("a", 0.5), mr.From("b", 0.5))}
          ... ).path_matrix().unwrap().tolist()
          [[1.0, 0.0], [0.5, 0.5]]
        """
        worlds = tuple(self.world_ordering)
        n = len(worlds)
        matrix: Any = named_axes.wrap(jnp.zeros((n, n), jnp.float32))
        for i, dest in enumerate(worlds):
            for source in _as_froms(dest, self.taking[dest]):
                unit = np.zeros((n, n), np.float32)
                unit[i, worlds.index(source.source)] = 1.0
                matrix = matrix + named_axes.wrap(jnp.asarray(unit)) * source.weight
        return matrix

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        worlds = tuple(self.world_ordering)
        tmp = _Fresh()
        matrix = self.path_matrix().tag(self.worlds_axis, tmp)

        def rewire(x: Any) -> Any:
            if not isinstance(x, named_axes.NamedArrayBase):
                raise TypeError(
                    "RewireComputationPaths: every array in the input must be a NamedArray with"
                    f" the {self.worlds_axis!r} axis; got {type(x).__name__}."
                )
            size = x.named_shape.get(self.worlds_axis)
            if size != len(worlds):
                raise ValueError(
                    f"RewireComputationPaths: the input's {self.worlds_axis!r} axis has size"
                    f" {size} (named_shape {x.named_shape}), expected {len(worlds)} for the"
                    f" worlds {list(worlds)!r}."
                )
            sources = x.untag(self.worlds_axis).tag(tmp)
            mixed = (matrix.astype(x.dtype) * sources).untag(tmp).sum()
            if set(mixed.named_shape) != set(x.named_shape):
                return mixed  # a weight added axes (e.g. a sweep over patch choices)
            return named_axes.order_like(mixed, x)

        return _map_named(rewire, value)


@dataclasses.dataclass(frozen=True)
class _Fresh:
    """An axis name that cannot clash with any user axis."""


@pytree_dataclass
class LinearizeAndAdjust(Layer):
    """Runs the first-order approximation of `target` around one adjusted input.

    Computes `p = linearize_around(x)` and `e = evaluate_at(x)`, then
    returns `target(p) + J_target(p) @ (e - p)`. When both adjustments give
    the same value this equals `target(x)` exactly. `target` must not update
    StateVariables (it is run under `jax.jvp`).

    Attributes:
      linearize_around: Layer giving the linearization point (e.g. a
        `RewireComputationPaths` that copies one world into all).
      evaluate_at: Layer giving the evaluation point (often `sk.nn.Identity()`).
      target: The layer to linearize.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> from saikei.toolshed import model_rewiring as mr
      >>> layer = mr.LinearizeAndAdjust(
      ...     linearize_around=sk.nn.Elementwise(lambda x: x * 0 + 1.0),
      ...     evaluate_at=sk.nn.Identity(),
      ...     target=sk.nn.Elementwise(jnp.square))
      >>> float(layer(sk.nx.wrap(3.0)).unwrap())  # 1 + 2 * (3 - 1)
      5.0
    """

    linearize_around: Any
    evaluate_at: Any
    target: Any

    def __call__(self, value: Any, /, **side_inputs: Any) -> Any:
        primal = self.linearize_around(value, **side_inputs)
        point = self.evaluate_at(value, **side_inputs)
        pairs = _map_named(_broadcast_together, primal, point)
        primal = _map_named(lambda pair: pair[0], pairs, is_pair=True)
        point = _map_named(lambda pair: pair[1], pairs, is_pair=True)
        tangent = jax.tree_util.tree_map(lambda e, p: e - p, point, primal)
        out, out_tangent = jax.jvp(lambda v: self.target(v, **side_inputs), (primal,), (tangent,))
        return jax.tree_util.tree_map(lambda o, t: o + t, out, out_tangent)
