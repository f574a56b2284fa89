"""Low-rank adaptation (LoRA): add a trainable low-rank update beside a Linear layer.

`LowRankAdapter` wraps a pretrained `sk.nn.Linear` and adds the product of
two new, small Linear layers, `A` (input axes -> a low-rank axis) and `B`
(low-rank axis -> output axes). `B` starts at zero, so a freshly adapted
model computes exactly what the original did. To fine-tune only the
adapters, unbind the parameters whose metadata says `"lora": True`.

Linear layers inside a `sk.nn.LayerStack` are adapted per layer: their
weights carry the stack axis (it is a parallel axis of the stacked weight),
so the adapter weights get it too and the stack slices them like any other
stacked parameter.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax

from saikei.core import named_axes
from saikei.core._selectors import Selection
from saikei.core._struct import pytree_dataclass
from saikei.core._tree_util import pretty_keystr
from saikei.core._variables import Parameter
from saikei.nn._combinators import BranchAndAddTogether
from saikei.nn._grouping import NamedGroup, Sequential
from saikei.nn._initializers import xavier_normal_initializer, zero_initializer
from saikei.nn._linear import Linear
from saikei.nn._parameters import make_parameter

__all__ = ["LowRankAdapter", "is_lora_parameter", "loraify_linears_in_selection"]

LORA_METADATA_KEY = "lora"


def is_lora_parameter(param: Any) -> bool:
    """True for a Parameter created by `LowRankAdapter.from_linear`.

    Useful as the predicate of `sk.unbind_params` to train only the adapters.

    Example:
      >>> from saikei import sk
      >>> from saikei.toolshed import lora
      >>> lora.is_lora_parameter(sk.Parameter(label="w", value=0.0, metadata={"lora": True}))
      True
      >>> lora.is_lora_parameter(sk.Parameter(label="w", value=0.0))
      False
    """
    return isinstance(param, Parameter) and bool(param.metadata.get(LORA_METADATA_KEY, False))


def _adapter_linear(
    label_prefix: str,
    init_base_rng: jax.Array | None,
    initializer: Any,
    input_axes: dict[Hashable, int],
    output_axes: dict[Hashable, int],
    parallel_axes: dict[Hashable, int],
    dtype: Any,
) -> Linear:
    weights = make_parameter(
        f"{label_prefix}.weights",
        init_base_rng,
        initializer,
        input_axes=input_axes,
        output_axes=output_axes,
        parallel_axes=parallel_axes,
        convolution_spatial_axes={},
        dtype=dtype,
        metadata={LORA_METADATA_KEY: True},
    )
    return Linear(
        weights=weights, in_axis_names=tuple(input_axes), out_axis_names=tuple(output_axes)
    )


@pytree_dataclass(has_implicitly_inherited_fields=True)
class LowRankAdapter(Sequential):
    """A Linear layer plus a low-rank update: `original(x) + B(A(x))`.

    The structure is penzai's: one `BranchAndAddTogether` whose branches are
    `NamedGroup("Pretrained", [original])` and `NamedGroup("Update", [A, B])`,
    so selectors and renderings show the pretrained path and the update path
    apart. The properties below name the three Linear layers.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.toolshed import lora
      >>> linear = sk.nn.Linear.from_config(name="proj", init_base_rng=jax.random.key(0),
      ...     input_axes={"embedding": 4}, output_axes={"neurons": 8})
      >>> adapted = lora.LowRankAdapter.from_linear(
      ...     linear, name="proj", init_base_rng=jax.random.key(1), rank=2)
      >>> [group.name for group in adapted.sublayers[0].branches]
      ['Pretrained', 'Update']
      >>> x = sk.nx.ones({"batch": 3, "embedding": 4})
      >>> bool(jax.numpy.allclose(adapted(x).unwrap("batch", "neurons"),
      ...                         linear(x).unwrap("batch", "neurons")))
      True
    """

    def _group(self, name: str) -> NamedGroup:
        branches = getattr(self.sublayers[0], "branches", ()) if self.sublayers else ()
        for branch in branches:
            if isinstance(branch, NamedGroup) and branch.name == name:
                return branch
        raise ValueError(
            f"This LowRankAdapter has no NamedGroup {name!r} in its first sublayer's branches;"
            " it was edited into another shape (build adapters with"
            " `LowRankAdapter.from_linear`)."
        )

    @property
    def original_linear(self) -> Any:
        """The adapted (pretrained) layer: the only layer of the "Pretrained" group."""
        return self._group("Pretrained").sublayers[0]

    @property
    def input_to_bottleneck(self) -> Any:
        """`A`, from the original's input axes to the low-rank axis."""
        return self._group("Update").sublayers[0]

    @property
    def bottleneck_to_output(self) -> Any:
        """`B`, from the low-rank axis to the original's output axes (zero at init)."""
        return self._group("Update").sublayers[1]

    @classmethod
    def from_linear(
        cls,
        linear: Linear,
        name: str,
        init_base_rng: jax.Array | None,
        rank: int,
        lowrank_axis: Hashable = "lowrank",
    ) -> LowRankAdapter:
        """Wraps `linear` in a LowRankAdapter whose output equals `linear`'s.

        The adapter weights are labeled `f"{name}/LoRA_A.weights"` and
        `f"{name}/LoRA_B.weights"` and carry the metadata `{"lora": True}`.
        Every axis of `linear`'s weight that is neither an input nor an output
        axis (heads, or the stack axis inside a LayerStack) is a parallel axis
        of both adapter weights.

        Args:
          linear: The Linear layer to adapt; its weights must be bound (their
            value gives the axis sizes).
          name: Prefix of the new parameters' labels; must be unique in the
            model (`loraify_linears_in_selection` uses the keypath).
          init_base_rng: Base key to initialize `A` (`B` is zero), or None to
            leave `ParameterSlot`s.
          rank: Size of the low-rank axis, a positive int.
          lowrank_axis: Name of the low-rank axis; must not be an axis of
            `linear`'s weight.

        Returns:
          A `LowRankAdapter` that computes the same outputs as `linear`.

        Example:
          >>> import jax
          >>> from saikei import sk
          >>> from saikei.toolshed import lora
          >>> linear = sk.nn.Linear.from_config(name="p", init_base_rng=jax.random.key(0),
          ...     input_axes={"a": 4}, output_axes={"b": 3})
          >>> adapted = lora.LowRankAdapter.from_linear(linear, "p", jax.random.key(1), rank=2)
          >>> adapted.input_to_bottleneck.weights.value.named_shape
          {'a': 4, 'lowrank': 2}
          >>> adapted.bottleneck_to_output.weights.label
          'p/LoRA_B.weights'
        """
        if not isinstance(linear, Linear):
            raise TypeError(
                f"LowRankAdapter.from_linear({name!r}): expected an sk.nn.Linear, got"
                f" {type(linear).__name__}. Select the Linear layers themselves (e.g."
                " `.at_instances_of(sk.nn.Linear)`)."
            )
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(
                f"LowRankAdapter.from_linear({name!r}): rank must be a positive int, got {rank!r}."
            )
        weights = linear.weights
        if not hasattr(weights, "value") or not isinstance(
            getattr(weights, "value", None), named_axes.NamedArray
        ):
            raise ValueError(
                f"LowRankAdapter.from_linear({name!r}): the Linear's weights"
                f" ({getattr(weights, 'label', weights)!r}) have no NamedArray value, so the"
                " adapter's axis sizes are unknown. Bind the weights first"
                " (`sk.bind_variables(model, params)`)."
            )
        weight_shape = weights.value.named_shape
        if lowrank_axis in weight_shape:
            raise ValueError(
                f"LowRankAdapter.from_linear({name!r}): lowrank_axis {lowrank_axis!r} is already"
                f" an axis of the Linear's weight (named_shape {weight_shape}). Pass another"
                " lowrank_axis."
            )
        dtype = weights.value.dtype
        parallel = linear.parallel_axes
        a = _adapter_linear(
            f"{name}/LoRA_A",
            init_base_rng,
            xavier_normal_initializer,
            linear.input_axes,
            {lowrank_axis: rank},
            parallel,
            dtype,
        )
        b = _adapter_linear(
            f"{name}/LoRA_B",
            init_base_rng,
            zero_initializer,
            {lowrank_axis: rank},
            linear.output_axes,
            parallel,
            dtype,
        )
        return cls(
            sublayers=[
                BranchAndAddTogether(
                    [NamedGroup("Pretrained", [linear]), NamedGroup("Update", [a, b])]
                )
            ]
        )


def loraify_linears_in_selection(
    selection: Selection,
    rank: int,
    init_base_rng: jax.Array | None,
    lowrank_axis: Hashable = "lowrank",
) -> Any:
    """Replaces every Linear layer in the selected subtrees with a `LowRankAdapter`.

    Each adapter is named `"LoRA:" + keypath` after the Linear it replaces
    (labels `LoRA:{keypath}/LoRA_A.weights` and `.../LoRA_B.weights`), so the
    labels are unique and stable. Linear layers inside a `sk.nn.LayerStack`
    get one independent adapter per layer.

    Args:
      selection: A selection of subtrees, e.g. `sk.select(model).at_instances_of(
        sk.nn.Attention)`; every `sk.nn.Linear` in them (a selected Linear
        included) is adapted and everything else is left as it is, as in penzai.
      rank: Size of the low-rank axis.
      init_base_rng: Base key for the adapters' `A` weights, or None for slots.
      lowrank_axis: Name of the low-rank axis.

    Returns:
      The whole tree with the selected layers adapted; its outputs equal the
      original model's until the adapters are trained.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> from saikei.toolshed import lora
      >>> model = sk.nn.Sequential([sk.nn.Linear.from_config(name="p",
      ...     init_base_rng=jax.random.key(0), input_axes={"a": 4}, output_axes={"b": 3})])
      >>> adapted = lora.loraify_linears_in_selection(
      ...     sk.select(model).at_instances_of(sk.nn.Linear), rank=2,
      ...     init_base_rng=jax.random.key(1))
      >>> type(adapted.sublayers[0]).__name__
      'LowRankAdapter'
    """

    def adapt(keypath: tuple[Any, ...], linear: Linear) -> LowRankAdapter:
        name = "LoRA:" + (pretty_keystr(keypath, root) or "root")
        return LowRankAdapter.from_linear(
            linear, name=name, init_base_rng=init_base_rng, rank=rank, lowrank_axis=lowrank_axis
        )

    root = selection.deselect()
    return selection.at_instances_of(Linear).apply(adapt, with_keypath=True)
