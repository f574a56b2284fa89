"""`nmap`: runs a positional function once per position of every named axis."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import _tree_util
from saikei.core.named_axes import _named_array as _na

_MAX_CACHE = 4096


class _Plan(NamedTuple):
    """How to vmap one call signature (cached by axis names and shapes)."""

    # Output names, in order of first appearance. The first is vmapped
    # outermost, so with `out_axes=0` the outputs come back with the names as
    # a prefix, in this order (vmap's natural placement: no output transpose).
    names: tuple[Any, ...]
    # For each vmap level (outermost first), the data dimension mapped in each
    # mapped argument, or None.
    level_in_axes: tuple[tuple[int | None, ...], ...]
    # Which NamedArray arguments have named axes (the others are closed over).
    mapped: tuple[bool, ...]


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _fun_name(fun: Callable[..., Any]) -> str:
    return getattr(fun, "__name__", None) or repr(fun)


def _describe_path(path: tuple[Any, ...], args: Any, kwargs: Any) -> str:
    if not path:
        return "argument"
    root = "args" if path[0] == jax.tree_util.SequenceKey(0) else "kwargs"
    tree = args if root == "args" else kwargs
    return root + _tree_util.pretty_keystr(path[1:], tree)


def _raise_size_mismatch(fun: Callable[..., Any], args: Any, kwargs: Any, bad: list[Any]) -> None:
    flat, _ = jax.tree_util.tree_flatten_with_path((args, kwargs), is_leaf=_na.is_namedarray)
    lines = []
    for path, leaf in flat:
        if isinstance(leaf, _na.NamedArray):
            lines.append(
                f"  {_describe_path(path, args, kwargs)}: named_shape {leaf.named_shape},"
                f" positional_shape {leaf.positional_shape}"
            )
    raise ValueError(
        f"nmap({_fun_name(fun)}): named axes {bad} have different sizes in different"
        " arguments. Axes with the same name are vectorized together, so they must"
        " have the same size. The named arguments were:\n" + "\n".join(lines)
    )


def _collect_names(keys: list[tuple[tuple[Any, ...], tuple[int, ...]]]) -> tuple[dict, list]:
    sizes: dict[Any, int] = {}
    bad: list[Any] = []
    for names, shape in keys:
        if not names:
            continue
        if len(names) > len(shape):
            raise _na._rank_error(names, shape)
        for name, size in zip(names, shape[len(shape) - len(names) :]):
            if name is None:
                continue
            known = sizes.setdefault(name, size)
            if known != size and name not in bad:
                bad.append(name)
    return sizes, bad


def _build_plan(keys: list[tuple[tuple[Any, ...], tuple[int, ...]]]) -> tuple[_Plan | None, list]:
    sizes, bad = _collect_names(keys)
    if bad:
        return None, bad
    names = tuple(sizes)
    mapped = tuple(any(n is not None for n in arg_names) for arg_names, _ in keys)
    remaining = [
        list((None,) * (len(shape) - len(arg_names)) + arg_names)
        for (arg_names, shape), m in zip(keys, mapped)
        if m
    ]
    levels = []
    # The outermost vmap sees whole arrays; each level sees the arrays with the
    # dimensions of the enclosing levels removed.
    for name in names:
        axes = []
        for dims in remaining:
            if name in dims:
                axis = dims.index(name)
                del dims[axis]
                axes.append(axis)
            else:
                axes.append(None)
        levels.append(tuple(axes))
    return _Plan(names, tuple(levels), mapped), []


def _wrap_output(value: Any, names: tuple[Any, ...]) -> _na.NamedArray:
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        value = jnp.asarray(value)
    return _na._new(value, names)


_OUTPUT_NAMES: dict[tuple[tuple[Any, ...], int], tuple[Any, ...]] = {}


def _wrap_mapped_output(value: Any, names: tuple[Any, ...]) -> _na.NamedArray:
    """Labels an output of the vmapped function: `names` lead, positional axes trail."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        value = jnp.asarray(value)
    key = (names, value.ndim)
    full = _OUTPUT_NAMES.get(key)
    if full is None:
        if len(_OUTPUT_NAMES) > _MAX_CACHE:
            _OUTPUT_NAMES.clear()
        full = _OUTPUT_NAMES[key] = names + (None,) * (value.ndim - len(names))
    return _na._new(value, full)


def _check_output_leaf(fun: Callable[..., Any], leaf: Any) -> None:
    if isinstance(leaf, _na.NamedArray):
        raise TypeError(
            f"nmap({_fun_name(fun)}): the function returned a NamedArray"
            f" ({leaf._summary()}). Inside nmap, functions see and must return plain"
            " positional arrays; nmap names the outputs. Return `x.unwrap(...)` instead,"
            " or call the function without nmap."
        )


def _nmap_call(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=_na.is_namedarray)
    na_index = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _na.NamedArray)]
    keys = [(leaves[i].axis_names, tuple(leaves[i].data_array.shape)) for i in na_index]
    cache_key = tuple(keys)
    plan = _PLANS.get(cache_key)
    if plan is None:
        plan, bad = _build_plan(keys)
        if plan is None:
            _raise_size_mismatch(fun, args, kwargs, bad)
        if len(_PLANS) > _MAX_CACHE:
            _PLANS.clear()
        _PLANS[cache_key] = plan

    mapped_index = []
    mapped_data = []
    for i, is_mapped in zip(na_index, plan.mapped):
        data = leaves[i].data_array
        leaves[i] = data
        if is_mapped:
            mapped_index.append(i)
            mapped_data.append(data)

    if not plan.names:
        out = fun(*args, **kwargs) if not na_index else _call(fun, treedef, leaves)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out, is_leaf=_na.is_namedarray)
        for leaf in out_leaves:
            _check_output_leaf(fun, leaf)
        return out_tree.unflatten([_wrap_output(x, ()) for x in out_leaves])

    out_tree_box = []

    def flat_fun(*mapped: Any) -> list[Any]:
        new_leaves = list(leaves)
        for i, value in zip(mapped_index, mapped):
            new_leaves[i] = value
        out = _call(fun, treedef, new_leaves)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out, is_leaf=_na.is_namedarray)
        for leaf in out_leaves:
            _check_output_leaf(fun, leaf)
        out_tree_box.append(out_tree)
        return out_leaves

    vectorized = flat_fun
    # Wrapped innermost first, so that the first name ends up outermost.
    for name, in_axes in zip(reversed(plan.names), reversed(plan.level_in_axes)):
        vectorized = jax.vmap(vectorized, in_axes=in_axes, out_axes=0, axis_name=name)
    out_leaves = vectorized(*mapped_data)
    names = plan.names
    return out_tree_box[-1].unflatten([_wrap_mapped_output(x, names) for x in out_leaves])


def _call(fun: Callable[..., Any], treedef: Any, leaves: list[Any]) -> Any:
    call_args, call_kwargs = treedef.unflatten(leaves)
    return fun(*call_args, **call_kwargs)


# ---------------------------------------------------------------- elementwise
#
# For elementwise functions, vmapping over every name gives the same values as
# broadcasting the data directly once the named axes are aligned. Doing that
# skips the per-name `jax.vmap` (about 100us per name for an eager call) and
# usually needs no data movement at all: the result takes the layout of the
# largest argument (names it lacks are added in front), so only the smaller
# operands (biases, scales, masks) are ever transposed or reshaped.

_ELEMENTWISE_PLANS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


class _ArgPlan(NamedTuple):
    """How to bring one NamedArray argument into the target layout."""

    perm: tuple[int, ...] | None
    shape: tuple[int, ...] | None


_SCALAR_TYPES = (bool, int, float, complex)


def _full_layout(key: tuple[Any, ...]) -> tuple[Any, ...]:
    names, shape = key
    return (None,) * (len(shape) - len(names)) + names


def _target_layout(keys: tuple[Any, ...], order: tuple[Any, ...]) -> tuple[Any, ...]:
    """The result's layout (a name or None per data dim), from the largest argument."""
    best = None
    best_rank: tuple[int, int] = (-1, -1)
    positional = 0
    for key in keys:
        if key is None:
            continue
        if key[0] == "array":
            positional = max(positional, key[1])
            continue
        full = _full_layout(key)
        positional = max(positional, full.count(None))
        rank = (int(np.prod(key[1], dtype=np.int64)), len(key[1]))
        if rank > best_rank:
            best, best_rank = full, rank
    assert best is not None
    present = set(best)
    missing = tuple(n for n in order if n not in present)
    # Positional axes broadcast numpy-style (aligned from the right), so extra
    # positional axes of other arguments lead.
    return (None,) * (positional - best.count(None)) + missing + best


def _elementwise_plan(keys: tuple[Any, ...]) -> tuple[Any, ...] | list[Any]:
    named_keys = [k for k in keys if type(k) is tuple and len(k) == 2 and k[0] != "array"]
    sizes, bad = _collect_names(named_keys)
    if bad:
        return bad
    target = _target_layout(keys, tuple(sizes))
    slots = [i for i, n in enumerate(target) if n is None]
    arg_plans: list[Any] = []
    for key in keys:
        if key is None:
            arg_plans.append(None)
        elif key[0] == "array":
            ndim = key[1]
            used = slots[len(slots) - ndim :] if ndim else []
            # New size-1 axes between the array's own (numpy would only add
            # leading ones).
            expand = (
                tuple(i - used[0] for i in range(used[0], len(target)) if i not in used)
                if used
                else ()
            )
            arg_plans.append(("expand", expand) if expand else None)
        else:
            shape = key[1]
            full = _full_layout(key)
            slot_of = {}
            pos_dims = [d for d, n in enumerate(full) if n is None]
            for slot, d in zip(slots[len(slots) - len(pos_dims) :], pos_dims):
                slot_of[slot] = d
            for d, n in enumerate(full):
                if n is not None:
                    slot_of[target.index(n)] = d
            used = sorted(slot_of)
            perm = tuple(slot_of[i] for i in used)
            if perm == tuple(range(len(perm))):
                perm = None
            new_shape = None
            if used:
                # Size-1 axes where the argument lacks a target axis; missing
                # leading axes are left to broadcasting.
                aligned = tuple(
                    shape[slot_of[i]] if i in slot_of else 1 for i in range(used[0], len(target))
                )
                if len(aligned) != len(shape):
                    new_shape = aligned
            arg_plans.append(_ArgPlan(perm, new_shape))
    return (_na._strip_leading_none(target), tuple(arg_plans))


def _elementwise_call(fun: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Applies an elementwise `fun` by aligning named axes; None if not applicable."""
    keys = []
    has_named = False
    for arg in args:
        if isinstance(arg, _na.NamedArray):
            keys.append((arg.axis_names, tuple(arg.data_array.shape)))
            has_named = True
        elif isinstance(arg, _SCALAR_TYPES):
            keys.append(None)
        elif isinstance(arg, jax.Array | np.ndarray | np.generic):
            keys.append(("array", arg.ndim))
        else:
            return None
    if not has_named:
        return None
    cache_key = tuple(keys)
    plan = _ELEMENTWISE_PLANS.get(cache_key)
    if plan is None:
        plan = _elementwise_plan(cache_key)
        if isinstance(plan, list):
            _raise_size_mismatch(fun, args, {}, plan)
        if len(_ELEMENTWISE_PLANS) > _MAX_CACHE:
            _ELEMENTWISE_PLANS.clear()
        _ELEMENTWISE_PLANS[cache_key] = plan
    names, arg_plans = plan
    call_args = []
    for arg, arg_plan in zip(args, arg_plans):
        if arg_plan is None:
            call_args.append(arg.data_array if isinstance(arg, _na.NamedArray) else arg)
        elif type(arg_plan) is tuple:
            call_args.append(jax.lax.expand_dims(arg, arg_plan[1]))
        else:
            data = arg.data_array
            if arg_plan.perm is not None:
                data = jax.lax.transpose(data, arg_plan.perm)
            if arg_plan.shape is not None:
                data = jax.lax.reshape(data, arg_plan.shape)
            call_args.append(data)
    return _na._new(fun(*call_args), names)


def _known_elementwise() -> dict[Any, int]:
    arity: dict[Any, int] = {jnp.where: 3}
    unary = [
        "abs", "absolute", "arccos", "arccosh", "arcsin", "arcsinh", "arctan", "arctanh",
        "cbrt", "ceil", "conj", "conjugate", "cos", "cosh", "deg2rad", "degrees", "exp",
        "exp2", "expm1", "fabs", "floor", "imag", "isfinite", "isinf", "isnan", "log",
        "log10", "log1p", "log2", "logical_not", "negative", "positive", "rad2deg",
        "radians", "real", "reciprocal", "rint", "round", "sign", "signbit", "sin", "sinc",
        "sinh", "sqrt", "square", "tan", "tanh", "trunc",
    ]  # fmt: skip
    for name in unary:
        fn = getattr(jnp, name, None)
        if fn is not None and not isinstance(fn, jnp.ufunc):
            arity[fn] = 1
    activations = [
        "relu", "relu6", "sigmoid", "silu", "swish", "softplus", "soft_sign", "log_sigmoid",
        "elu", "celu", "selu",
    ]  # fmt: skip
    for name in activations:
        fn = getattr(jax.nn, name, None)
        if fn is not None:
            arity[fn] = 1
    for fn in (jax.lax.exp, jax.lax.log, jax.lax.tanh, jax.lax.neg, jax.lax.abs, jax.lax.rsqrt):
        arity[fn] = 1
    return arity


_ELEMENTWISE_ARITY = _known_elementwise()


def _elementwise_arity(fun: Any) -> int | None:
    if isinstance(fun, jnp.ufunc):
        return fun.nin
    try:
        return _ELEMENTWISE_ARITY.get(fun)
    except TypeError:  # unhashable callables are never in the table
        return None


# ------------------------------------------------------------ compiled calls
#
# An eager call of a vmapped function pays JAX's tracing machinery for every
# primitive and every named axis (hundreds of microseconds). For functions
# that are known to be pure (JAX's own API and saikei's lifted methods) the
# whole nmapped call is traced once per signature and cached with `jax.jit`,
# as penzai does for indexing. Non-array arguments are static; Python floats
# are passed as (weakly typed) values so that changing them does not retrace.
# A function that needs concrete values (e.g. `jnp.repeat` with an array of
# repeats) or keeps being retraced with new static arguments falls back to
# the eager path for good.

_NOT_COMPILED = object()
_EAGER_ONLY: set[Any] = set()
_STATIC_VARIANTS: dict[Any, set[Any]] = {}
_MAX_STATIC_VARIANTS = 16
_CONCRETENESS_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.NonConcreteBooleanIndexError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


class _Dynamic:
    """Marks a dynamic argument's position among static arguments."""


_DYNAMIC = _Dynamic()


def _is_pure(fun: Any) -> bool:
    if getattr(fun, "__saikei_pure__", False):
        return True
    module = getattr(fun, "__module__", None) or ""
    if not (module == "jax" or module.startswith("jax.")):
        return False
    try:
        hash(fun)
    except TypeError:
        return False
    return True


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jitted_call(fun: Any, treedef: Any, statics: tuple[Any, ...], dynamic: list[Any]) -> Any:
    values = iter(dynamic)
    leaves = [next(values) if s is _DYNAMIC else s for s in statics]
    args, kwargs = treedef.unflatten(leaves)
    return _nmap_call(fun, args, kwargs)


def _compiled_call(fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=_na.is_namedarray)
    statics = []
    dynamic = []
    has_named = False
    for leaf in leaves:
        if isinstance(leaf, _na.NamedArray):
            if isinstance(leaf.data_array, jax.core.Tracer):
                return _NOT_COMPILED  # already inside a transformation
            has_named = True
        elif isinstance(leaf, jax.Array | np.ndarray):
            if isinstance(leaf, jax.core.Tracer):
                return _NOT_COMPILED
        elif not isinstance(leaf, float | complex | np.inexact):
            statics.append(leaf)
            continue
        statics.append(_DYNAMIC)
        dynamic.append(leaf)
    if not has_named:
        return _NOT_COMPILED
    key = (treedef, tuple(statics))
    try:
        hash(key)
    except TypeError:
        return _NOT_COMPILED
    variants = _STATIC_VARIANTS.setdefault(fun, set())
    if key not in variants:
        if len(variants) >= _MAX_STATIC_VARIANTS:
            _EAGER_ONLY.add(fun)
            return _NOT_COMPILED
        variants.add(key)
    try:
        return _jitted_call(fun, treedef, key[1], dynamic)
    except _CONCRETENESS_ERRORS:
        _EAGER_ONLY.add(fun)
        return _NOT_COMPILED


def nmap(fun: Callable[..., Any]) -> Callable[..., Any]:
    """Vectorizes a positional function over the named axes of its arguments.

    Every NamedArray found in the arguments (at any depth of their pytrees) is
    sliced along all of its named axes, and `fun` is called with the
    positional parts only: plain arrays of shape `positional_shape`. Axes with
    the same name in different arguments are iterated together (they must have
    the same size); an argument without some name is broadcast along it. Every
    array leaf of the result becomes a NamedArray carrying all the names, with
    the positional axes `fun` produced. Arguments that are not NamedArrays are
    passed through unchanged.

    Layout of the result: the named axes are ordered by first appearance
    (arguments in order, each argument's names in data order) and lead the
    data, followed by the positional axes; this is where `jax.vmap` puts
    mapped axes by itself, so no data is moved, and a following call that
    maps over the same names needs no transpose either. `axis_names` records
    the layout (e.g. `("batch", None)`), and `tag`, `untag` and `unwrap` only
    relabel it. Known elementwise functions (see below) instead keep the
    layout of their largest argument, adding missing names in front, so the
    big operand is never transposed. Use `with_positional_prefix()` or
    `order_as(...)` when a specific data layout is needed.

    Each named axis is vmapped with `axis_name` set to the name, so collectives
    such as `jax.lax.psum(x, "batch")` work inside `fun`.

    `nmap` composes with an enclosing `jax.vmap` (the question of penzai issue
    131): `jax.vmap` maps over the leading data dimension of each NamedArray,
    which must be a positional axis (use `with_positional_prefix()` first if
    needed). Inside the vmapped function that axis is simply absent, and
    `nmap` vectorizes over the named axes as usual. Mapping a named axis with
    `jax.vmap` is an error; use `nmap` for named axes.

    Two shortcuts keep eager calls fast without changing results: known
    elementwise functions (jnp ufuncs such as `jnp.add`, `jnp.where`,
    `jnp.exp`, ...) are applied directly to the aligned data, and calls of
    JAX's own (pure) functions outside any transformation are compiled once
    per signature and cached, with non-array arguments treated as static.

    Args:
      fun: A function of positional arrays, returning a pytree of arrays.

    Returns:
      A function taking the same arguments, where NamedArrays are allowed, and
      returning the same pytree structure with NamedArray leaves.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "batch", "features")
      >>> total = sk.nx.nmap(jnp.sum)(x.untag("features"))
      >>> total.named_shape, total.unwrap("batch").tolist()
      ({'batch': 2}, [3.0, 12.0])
    """
    arity = _elementwise_arity(fun)
    pure = _is_pure(fun)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if arity is not None and not kwargs and len(args) == arity:
            result = _elementwise_call(fun, args)
            if result is not None:
                return result
        if pure and fun not in _EAGER_ONLY:
            result = _compiled_call(fun, args, kwargs)
            if result is not _NOT_COMPILED:
                return result
        return _nmap_call(fun, args, kwargs)

    with contextlib.suppress(AttributeError, TypeError):
        functools.update_wrapper(wrapped, fun)
    return wrapped
