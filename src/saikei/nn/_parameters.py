"""Creating parameters: name-derived keys, `make_parameter`, slot checks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import jax

from saikei.core._tree_util import pretty_keystr
from saikei.core._variables import Parameter, ParameterSlot

T = TypeVar("T", covariant=True)


@runtime_checkable
class ParameterLike(Protocol[T]):
    """Anything with a `.value`: a `Parameter`, a `ParameterValue`, or a slot.

    Layers annotate their weights as `ParameterLike[...]` so that a model can
    hold live parameters, frozen values or unbound slots in the same place.

    Example:
      >>> from saikei import sk
      >>> isinstance(sk.Parameter(label="w", value=1.0), sk.nn.ParameterLike)
      True
    """

    @property
    def value(self) -> T: ...


def derive_param_key(base_rng: jax.Array, name: str) -> jax.Array:
    """Derives a parameter's PRNG key from a base key and the parameter's name.

    The key depends only on the name (through a stable hash), so initializing
    a model is reproducible and does not depend on the order in which layers
    are built. The hash is penzai's: the first four bytes of the SHA-1 digest
    of the UTF-8 name, read big-endian, folded into the base key. So a model
    built with `from_config` from the same key starts from the same weights as
    penzai's.

    Args:
      base_rng: The model's base key (`jax.random.key(seed)`).
      name: The parameter's full name, e.g. `"mlp/Affine_0/Linear.weights"`.

    Returns:
      A new key.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> base = jax.random.key(0)
      >>> a = sk.nn.derive_param_key(base, "w")
      >>> bool((jax.random.key_data(a) == jax.random.key_data(sk.nn.derive_param_key(base, "w"))).all())
      True
    """
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return jax.random.fold_in(base_rng, int.from_bytes(digest[:4], "big"))


def make_parameter(
    name: str,
    init_base_rng: jax.Array | None,
    initializer: Callable[..., Any],
    *init_args: Any,
    metadata: dict[Any, Any] | None = None,
    **init_kwargs: Any,
) -> Parameter | ParameterSlot:
    """Creates an initialized Parameter, or a slot when no key is given.

    Args:
      name: The parameter's label; also the source of its initialization key.
      init_base_rng: The base key, or None to build an unbound
        `ParameterSlot(name)` (for loading weights later).
      initializer: Called as `initializer(key, *init_args, **init_kwargs)`.
      *init_args: Positional arguments for the initializer.
      metadata: Metadata for the Parameter (e.g. `{"trainable": False}`).
      **init_kwargs: Keyword arguments for the initializer.

    Returns:
      A `Parameter` labeled `name`, or a `ParameterSlot(name)`.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> p = sk.nn.make_parameter("w", jax.random.key(0), lambda k: sk.nx.zeros({"a": 2}))
      >>> p.label, p.value.named_shape
      ('w', {'a': 2})
      >>> sk.nn.make_parameter("w", None, lambda k: 0)
      ParameterSlot(label='w')
    """
    if init_base_rng is None:
        return ParameterSlot(name)
    value = initializer(derive_param_key(init_base_rng, name), *init_args, **init_kwargs)
    return Parameter(label=name, value=value, metadata=dict(metadata or {}))


def assert_no_parameter_slots(model: Any) -> None:
    """Raises if `model` still holds unbound `ParameterSlot`s.

    Args:
      model: Any pytree.

    Raises:
      ValueError: naming every slot's label and where it sits in the tree.

    Example:
      >>> from saikei import sk
      >>> sk.nn.assert_no_parameter_slots({"w": sk.Parameter(label="w", value=1.0)})
    """
    found = [
        (path, leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            model, is_leaf=lambda x: isinstance(x, ParameterSlot)
        )[0]
        if isinstance(leaf, ParameterSlot)
    ]
    if found:
        lines = "\n".join(
            f"  {leaf.label!r} at {pretty_keystr(path, model)}" for path, leaf in found
        )
        raise ValueError(
            f"The model has {len(found)} unbound parameter slot(s):\n{lines}\n"
            "Bind values with `sk.bind_variables(model, params)` (or `model.bind_variables`), or"
            " build the model with an `init_base_rng` to initialize them."
        )
