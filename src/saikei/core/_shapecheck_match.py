"""`check_structure`: match a value tree against a pattern, solving dimension variables.

The solver walks the pattern leaves once, binding each variable the first time
it is seen and checking every later use against that binding. A shape with two
or more unknown `*var`/`**var` collections cannot be split yet, so it waits
until another leaf (or `known_vars`) has bound all but one of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core import named_axes
from saikei.core._shapecheck import (
    ArraySpec,
    DimVar,
    KnownDim,
    MultiDimVar,
    StructureAnnotation,
    Wildcard,
    _show_var_name,
)
from saikei.core._struct import StructStaticMetadata
from saikei.core._tree_util import pretty_keystr, tree_flatten_exactly_one_level

_KNOWN_VARS = "from known_vars"
_NO_NAMES: dict[Any, int] = {}


class StructureMismatchError(Exception):
    """Raised by `check_structure` when a value does not match its pattern.

    The message has one line per mismatching keypath. `problems` holds the
    same lines as a tuple, for programs that want to inspect them.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> try:
      ...     sk.chk.check_structure(jnp.zeros((2, 3)), sk.chk.ArraySpec(shape=(2, 4)))
      ... except sk.chk.StructureMismatchError as e:
      ...     print(e)
      Structure mismatch at 1 keypath:
        root: expected generic(2, 4), found float32(2, 3): dim 1 is 3, expected 4
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems

    def __reduce__(self) -> Any:
        return (type(self), (self.args[0], self.problems))


class MatchResult(Mapping[str, Any]):
    """The values `check_structure` solved for each dimension variable.

    A read-only mapping from variable name to value: an int for `var(n)`, a
    tuple for `*var(n)`, a dict for `**var(n)` or for element variables
    (`var(n)[k]`, `vars_for_axes`). Read it as `r["n"]`, `r.n`,
    `r["n", "m"]` (a tuple) or `dict(r)`.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> r = sk.chk.check_structure(
      ...     jnp.zeros((2, 3)), sk.chk.ArraySpec(shape=(sk.chk.var("a"), sk.chk.var("b")))
      ... )
      >>> r["a"], r.b, r["a", "b"]
      (2, 3, (2, 3))
    """

    __slots__ = ("_bindings",)

    def __init__(self, bindings: Mapping[str, Any]):
        self._bindings = dict(bindings)

    def __getitem__(self, key: Any) -> Any:
        if type(key) is tuple:
            return tuple(self[k] for k in key)
        try:
            return self._bindings[key]
        except KeyError:
            raise KeyError(
                f"No dimension variable {key!r} in this match result; it has"
                f" {sorted(map(str, self._bindings))}."
            ) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._bindings[name]
        except KeyError:
            raise AttributeError(
                f"No dimension variable {name!r} in this match result; it has"
                f" {sorted(map(str, self._bindings))}."
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self._bindings

    def __iter__(self) -> Iterator[str]:
        return iter(self._bindings)

    def __len__(self) -> int:
        return len(self._bindings)

    def __repr__(self) -> str:
        return f"MatchResult({self._bindings!r})"


def _is_pattern_leaf(x: Any) -> bool:
    return isinstance(x, ArraySpec | Wildcard)


def _show_dim(dim: Any) -> str:
    if type(dim) is int:
        return str(dim)
    if isinstance(dim, DimVar):
        return _show_var_name(dim.name)
    if isinstance(dim, MultiDimVar):
        return f"*{dim.name}"
    if isinstance(dim, KnownDim):
        return f"{_show_var_name(dim.name)}={dim.size}"
    return repr(dim)


def _show_axis(name: Any) -> str:
    return name if isinstance(name, str) else repr(name)


def _show_dtype(dtype: Any) -> str:
    if dtype is np.generic:
        return "generic"
    if isinstance(dtype, type):
        return dtype.__name__
    return str(dtype)


def _show_shapes(dtype: Any, positional: Any, named: Mapping[Any, Any]) -> str:
    text = ", ".join(_show_dim(d) for d in positional)
    if named:
        parts = [
            f"**{k.name}" if isinstance(k, MultiDimVar) else f"{_show_axis(k)}:{_show_dim(d)}"
            for k, d in named.items()
        ]
        text = f"{text} | {', '.join(parts)}" if text else f"| {', '.join(parts)}"
    return f"{_show_dtype(dtype)}({text})"


def _show_spec(spec: ArraySpec) -> str:
    return _show_shapes(spec.dtype, spec.shape, spec.named_shape)


def _show_leaf(value: Any) -> str:
    if type(value) in _PYTHON_SCALARS:
        return f"{type(value).__name__} {value!r}"
    info = _array_info(value)
    if isinstance(info, tuple):
        return _show_shapes(info[2], info[0], info[1])
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _show_collection(name: str, values: Any) -> str:
    return f"*{name} = {values!r}" if isinstance(values, tuple) else f"**{name} = {values!r}"


_plain_array_types: set[type] = set()
_PYTHON_SCALARS = frozenset({bool, int, float, complex})


_is_namedarray = named_axes.is_namedarray
_NamedArray = named_axes.NamedArray


def _array_info(value: Any) -> tuple[tuple[int, ...], Mapping[Any, int], Any] | str:
    """(positional shape, named shape, dtype) of an array-like value, or why not."""
    value_type = type(value)
    if value_type in _plain_array_types:
        return value.shape, _NO_NAMES, value.dtype
    if value_type is _NamedArray:
        return value.positional_shape, value.named_shape, value.dtype
    if value_type in _PYTHON_SCALARS:
        # Exact types: numpy scalars subclass float/int but carry their own dtype.
        return (), _NO_NAMES, jax.dtypes.canonicalize_dtype(np.dtype(value_type))
    if _is_namedarray(value):
        return value.positional_shape, value.named_shape, value.dtype
    if isinstance(value, jax.Array | np.ndarray):
        _plain_array_types.add(value_type)
        return value.shape, _NO_NAMES, value.dtype
    if isinstance(value, ArraySpec):
        dims = [*value.shape, *value.named_shape.values()]
        if all(type(d) is int or isinstance(d, KnownDim) for d in dims):
            return (
                tuple(d if type(d) is int else d.size for d in value.shape),
                {k: d if type(d) is int else d.size for k, d in value.named_shape.items()},
                value.dtype,
            )
        return "an ArraySpec with dimension variables is not a concrete array"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:
        return shape, _NO_NAMES, dtype
    return "not an array"


class _Solver:
    """Variable bindings for one `check_structure` call, and the problems found."""

    def __init__(self, pattern: Any, specs: list[Any], values: list[Any]):
        self.pattern = pattern
        self.specs = specs
        self.values = values
        # name -> (value, source); a source is a leaf index or a text like "from known_vars".
        self.sizes: dict[Any, tuple[int, Any]] = {}
        self.seqs: dict[str, tuple[tuple[int, ...], Any]] = {}
        self.maps: dict[str, tuple[dict[Any, int], Any]] = {}
        # Collection name -> keys of element variables bound before the collection was.
        self.elements: dict[str, list[Any]] = {}
        self.problems: dict[int, list[str]] = {}
        self._paths: list[str] | None = None

    # -- reporting ---------------------------------------------------------

    def path(self, index: int) -> str:
        if self._paths is None:
            with_path, _ = jax.tree_util.tree_flatten_with_path(
                self.pattern, is_leaf=_is_pattern_leaf
            )
            self._paths = [pretty_keystr(p, self.pattern) or "root" for p, _ in with_path]
        return self._paths[index]

    def origin(self, source: Any) -> str:
        if type(source) is int:
            return f"solved at {self.path(source)}"
        return source

    def problem(self, index: int, text: str) -> None:
        self.problems.setdefault(index, []).append(text)

    # -- binding -----------------------------------------------------------

    def bind_size(self, name: Any, size: int, source: Any, what: str) -> str | None:
        bound = self.sizes.get(name)
        if bound is not None:
            if bound[0] == size:
                return None
            return (
                f"{what} is {size} but {_show_var_name(name)} = {bound[0]}"
                f" ({self.origin(bound[1])})"
            )
        if type(name) is tuple:
            parent, key = name
            if parent in self.sizes:
                value, where = self.sizes[parent]
                return (
                    f"{what} is {size}, bound to the element {_show_var_name(name)}, but"
                    f" {parent} = {value} ({self.origin(where)}) is a single dim, not a collection"
                )
            collection = self.seqs.get(parent) or self.maps.get(parent)
            if collection is not None:
                values, where = collection
                in_range = (
                    key in values
                    if isinstance(values, dict)
                    else (type(key) is int and 0 <= key < len(values))
                )
                if not in_range:
                    return (
                        f"{what} is {size}, bound to {_show_var_name(name)}, but"
                        f" {_show_collection(parent, values)} ({self.origin(where)}) has no"
                        f" element {key!r}"
                    )
                if values[key] != size:
                    return (
                        f"{what} is {size} but {_show_var_name(name)} = {values[key]} from"
                        f" {_show_collection(parent, values)} ({self.origin(where)})"
                    )
                return None
            self.elements.setdefault(parent, []).append(key)
        else:
            clash = self._kind_clash(name, "size")
            if clash:
                return f"{what} is {size}, bound to the single dim {name}, but {clash}"
        self.sizes[name] = (size, source)
        return None

    def _kind_clash(self, name: str, kind: str) -> str | None:
        """Why `name` cannot be a variable of `kind` ("size", "seq" or "map"), if it cannot."""
        if name in self.sizes:
            value, where = self.sizes[name]
            return f"{name} = {value} ({self.origin(where)}) is a single dim"
        for table, table_kind in ((self.seqs, "seq"), (self.maps, "map")):
            if name in table and kind != table_kind:
                values, where = table[name]
                return f"{_show_collection(name, values)} ({self.origin(where)})"
        if kind == "size" and name in self.elements:
            key = self.elements[name][0]
            value, where = self.sizes[(name, key)]
            return (
                f"{_show_var_name((name, key))} = {value} ({self.origin(where)})"
                " makes it a collection"
            )
        return None

    def bind_collection(self, name: str, values: Any, source: Any, what: str) -> str | None:
        """Binds `*name` (a tuple of sizes) or `**name` (a dict of axis sizes)."""
        is_seq = isinstance(values, tuple)
        table: dict[str, Any] = self.seqs if is_seq else self.maps
        new = _show_collection(name, values)
        bound = table.get(name)
        if bound is not None:
            if bound[0] == values:
                return None
            return f"{what} give {new} but {_show_collection(name, bound[0])} ({self.origin(bound[1])})"
        clash = self._kind_clash(name, "seq" if is_seq else "map")
        if clash:
            return f"{what} give {new}, but {clash}"
        for key in self.elements.pop(name, ()):
            size, where = self.sizes.pop((name, key))
            in_range = key in values if not is_seq else type(key) is int and 0 <= key < len(values)
            if not in_range or values[key] != size:
                found = values[key] if in_range else "nothing"
                return (
                    f"{what} give {new}, so {_show_var_name((name, key))} = {found}, but"
                    f" {_show_var_name((name, key))} = {size} ({self.origin(where)})"
                )
        table[name] = (values, source)
        return None

    # -- matching ----------------------------------------------------------

    def match_dim(self, index: int, pattern_dim: Any, size: int, what: str) -> None:
        kind = type(pattern_dim)
        if kind is int:
            if pattern_dim != size:
                self.problem(index, f"{what} is {size}, expected {pattern_dim}")
            return
        if kind is DimVar or isinstance(pattern_dim, DimVar):
            message = self.bind_size(pattern_dim.name, size, index, what)
        elif isinstance(pattern_dim, KnownDim):
            if pattern_dim.size != size:
                known_from = f" ({pattern_dim.from_keypath})" if pattern_dim.from_keypath else ""
                self.problem(
                    index,
                    f"{what} is {size}, expected {_show_var_name(pattern_dim.name)} ="
                    f" {pattern_dim.size}{known_from}",
                )
                return
            message = self.bind_size(
                pattern_dim.name, size, pattern_dim.from_keypath or index, what
            )
        else:
            message = f"{what}: the pattern dim {pattern_dim!r} is not an int or a variable"
        if message:
            self.problem(index, message)

    def match_positional(
        self, index: int, pattern: tuple[Any, ...], shape: tuple[int, ...]
    ) -> bool:
        """Matches one positional shape; False if it must wait for more bindings."""
        for dim in pattern:
            if type(dim) is MultiDimVar:
                break
        else:
            if len(pattern) != len(shape):
                self.problem(index, f"has {_dims(len(shape))}, expected {len(pattern)}")
                return True
            for i, (dim, size) in enumerate(zip(pattern, shape)):
                if type(dim) is int:
                    if dim != size:
                        self.problem(index, f"dim {i} is {size}, expected {dim}")
                else:
                    self.match_dim(index, dim, size, f"dim {i}")
            return True

        expanded: list[Any] = []
        unknown: dict[str, int] = {}
        for dim in pattern:
            if type(dim) is not MultiDimVar:
                expanded.append(dim)
            elif dim.name in self.seqs:
                expanded.extend(DimVar((dim.name, i)) for i in range(len(self.seqs[dim.name][0])))
            else:
                clash = self._kind_clash(dim.name, "seq")
                if clash:
                    self.problem(index, f"*{dim.name} is used for positional dims, but {clash}")
                    return True
                expanded.append(dim)
                unknown[dim.name] = unknown.get(dim.name, 0) + 1
        if len(unknown) > 1:
            return False
        if not unknown:
            if len(expanded) != len(shape):
                self.problem(
                    index,
                    f"has {_dims(len(shape))}, expected {len(expanded)}"
                    f" ({self._inlined_note(pattern)})",
                )
                return True
            for i, (dim, size) in enumerate(zip(expanded, shape)):
                self.match_dim(index, dim, size, f"dim {i}")
            return True

        [(name, count)] = unknown.items()
        fixed = len(expanded) - count
        spare = len(shape) - fixed
        if spare < 0 or spare % count:
            at_least = f"at least {fixed}" if count == 1 else f"{fixed} plus a multiple of {count}"
            self.problem(index, f"has {_dims(len(shape))}, expected {at_least}")
            return True
        run = spare // count
        captured: tuple[int, ...] | None = None
        position = 0
        for dim in expanded:
            if type(dim) is MultiDimVar:
                chunk = tuple(shape[position : position + run])
                if captured is None:
                    captured = chunk
                elif chunk != captured:
                    self.problem(
                        index,
                        f"dims {position}..{position + run - 1} are {chunk} but *{name} ="
                        f" {captured} earlier in this shape",
                    )
                position += run
            else:
                self.match_dim(index, dim, shape[position], f"dim {position}")
                position += 1
        message = self.bind_collection(name, captured, index, f"dims of *{name}")
        if message:
            self.problem(index, message)
        return True

    def _inlined_note(self, pattern: tuple[Any, ...]) -> str:
        names = dict.fromkeys(d.name for d in pattern if type(d) is MultiDimVar)
        return ", ".join(
            f"{_show_collection(n, self.seqs[n][0])} {self.origin(self.seqs[n][1])}" for n in names
        )

    def match_named(self, index: int, pattern: Mapping[Any, Any], named: Mapping[Any, int]) -> bool:
        """Matches one named shape; False if it must wait for more bindings."""
        explicit: dict[Any, Any] = {}
        unknown: list[str] = []
        for axis, dim in pattern.items():
            if type(axis) is not MultiDimVar:
                explicit[axis] = dim
                continue
            bound = self.maps.get(axis.name)
            if bound is None:
                clash = self._kind_clash(axis.name, "map")
                if clash:
                    self.problem(index, f"**{axis.name} is used for named axes, but {clash}")
                    return True
                unknown.append(axis.name)
                continue
            for inlined in bound[0]:
                if inlined in pattern or inlined in explicit:
                    self.problem(
                        index,
                        f"axis {inlined!r} is named explicitly and also comes from"
                        f" {_show_collection(axis.name, bound[0])} ({self.origin(bound[1])})",
                    )
                    return True
                explicit[inlined] = DimVar((axis.name, inlined))
        if len(unknown) > 1:
            return False
        missing = [axis for axis in explicit if axis not in named]
        for axis, dim in explicit.items():
            if axis in named:
                self.match_dim(index, dim, named[axis], f"axis {_show_axis(axis)}")
        rest = {axis: size for axis, size in named.items() if axis not in explicit}
        if missing:
            self.problem(index, f"missing named axes {[_show_axis(a) for a in missing]}")
        if unknown:
            if not missing:
                message = self.bind_collection(unknown[0], rest, index, f"axes of **{unknown[0]}")
                if message:
                    self.problem(index, message)
        elif rest:
            self.problem(index, f"unexpected named axes {[_show_axis(a) for a in rest]}")
        return True

    def bind_known_vars(self, known_vars: Mapping[str, Any]) -> None:
        for name, value in known_vars.items():
            what = f"known_vars[{name!r}]"
            if _is_size(value):
                message = self.bind_size(name, int(value), _KNOWN_VARS, what)
            elif isinstance(value, tuple | list) and all(map(_is_size, value)):
                message = self.bind_collection(name, tuple(map(int, value)), _KNOWN_VARS, what)
            elif isinstance(value, Mapping) and all(map(_is_size, value.values())):
                message = self.bind_collection(
                    name, {k: int(v) for k, v in value.items()}, _KNOWN_VARS, what
                )
            else:
                raise TypeError(
                    f"known_vars[{name!r}] = {value!r} is not a size: give an int for var(name),"
                    " a tuple of ints for *var(name), or a dict of axis sizes for **var(name)."
                )
            if message:
                raise ValueError(f"known_vars are inconsistent: {message}.")

    def result(self) -> MatchResult:
        out: dict[Any, Any] = {}
        for name, (size, _) in self.sizes.items():
            if type(name) is tuple:
                out.setdefault(name[0], {})[name[1]] = size
            else:
                out[name] = size
        for name, (values, _) in self.seqs.items():
            out[name] = values
        for name, (values, _) in self.maps.items():
            out[name] = dict(values)
        return MatchResult(out)


def _dims(count: int) -> str:
    return f"{count} positional dim" + ("" if count == 1 else "s")


def _is_size(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _dtype_matches(dtype: Any, expected: Any) -> bool:
    if expected is np.generic:
        return True
    if isinstance(expected, np.dtype):
        return dtype == expected
    if isinstance(dtype, type):  # An abstract dtype, from an ArraySpec value.
        return issubclass(dtype, expected)
    return bool(jnp.issubdtype(dtype, expected))


def _constant_matches(value: Any, constant: Any) -> bool | str:
    value_shape = getattr(value, "shape", None)
    constant_shape = getattr(constant, "shape", None)
    if (value_shape is not None or constant_shape is not None) and (
        tuple(np.shape(value)) != tuple(np.shape(constant))
    ):
        # Broadcasting would let e.g. [3, 3] equal the constant 3.
        return (
            f"its shape {tuple(np.shape(value))} differs from the shape"
            f" {tuple(np.shape(constant))} of the pattern's constant {constant!r}"
        )
    try:
        equal = value == constant
    except Exception as error:  # Any failure to compare is a mismatch, reported as such.
        return f"comparing it with the constant {constant!r} raised {error!r}"
    if isinstance(equal, bool | np.bool_):
        return bool(equal)
    if isinstance(equal, np.ndarray | jax.Array) and not isinstance(equal, jax.core.Tracer):
        # Arrays (numpy or jax) equal to an array constant: every element must match.
        return bool(np.all(np.asarray(equal)))
    if isinstance(equal, jax.core.Tracer):
        return (
            f"it is a traced value, which cannot be compared with the constant"
            f" {constant!r} while tracing; use an ArraySpec for traced arrays"
        )
    return (
        f"comparing it with the constant {constant!r} gave a {type(equal).__name__}, not a"
        " bool; use an ArraySpec or a Wildcard for arrays"
    )


def check_structure(
    value: Any,
    pattern: StructureAnnotation,
    known_vars: Mapping[str, Any] | None = None,
    error_prefix: str = "",
) -> MatchResult:
    """Checks that a tree of values matches a pattern, solving dimension variables.

    The pattern is a pytree with the same structure as `value` down to its
    leaves, which are `ArraySpec`s (matched against arrays or NamedArrays),
    `Wildcard`s (match any subtree) or other values (compared with `==`).
    Every use of a dimension variable, anywhere in the tree, must agree.

    Args:
      value: The tree to check.
      pattern: The expected structure.
      known_vars: Values some variables must have, e.g. an earlier
        `MatchResult`: an int for `var(n)`, a tuple for `*var(n)`, a dict for
        `**var(n)`. They are included in the result.
      error_prefix: Text put before the error message, to say what was
        being checked.

    Returns:
      A `MatchResult` with the value of every variable.

    Raises:
      StructureMismatchError: if anything does not match, with one line per
        mismatching keypath naming the expected spec, what was found and the
        variable values that conflicted.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> n = sk.chk.var("n")
      >>> result = sk.chk.check_structure(
      ...     {"x": jnp.zeros((4, 3)), "y": jnp.zeros((4,))},
      ...     {"x": sk.chk.ArraySpec(shape=(n, 3)), "y": sk.chk.ArraySpec(shape=(n,))},
      ... )
      >>> result.n
      4
    """
    specs, treedef = jax.tree_util.tree_flatten(pattern, is_leaf=_is_pattern_leaf)
    try:
        values = treedef.flatten_up_to(value)
    except (ValueError, TypeError) as error:
        failure = error
    else:
        failure = None
    if failure is not None:
        _raise_structure_error(value, pattern, failure, error_prefix)

    solver = _Solver(pattern, specs, values)
    if known_vars:
        solver.bind_known_vars(known_vars)
    pending: list[tuple[bool, int, Any, Any]] = []
    for index, (spec, leaf) in enumerate(zip(specs, values)):
        if type(spec) is ArraySpec or isinstance(spec, ArraySpec):
            info = _array_info(leaf)
            if type(info) is str:
                solver.problem(index, info)
                continue
            shape, named, dtype = info
            if not _dtype_matches(dtype, spec.dtype):
                solver.problem(index, f"dtype is {dtype}, expected {_show_dtype(spec.dtype)}")
            if not solver.match_positional(index, spec.shape, shape):
                pending.append((True, index, spec.shape, shape))
            if (spec.named_shape or named) and not solver.match_named(
                index, spec.named_shape, named
            ):
                pending.append((False, index, spec.named_shape, named))
        elif not isinstance(spec, Wildcard):
            outcome = _constant_matches(leaf, spec)
            if outcome is not True:
                solver.problem(index, outcome or "not equal to the pattern's constant")

    while pending:
        waiting = []
        for positional, index, spec_shape, shape in pending:
            done = (solver.match_positional if positional else solver.match_named)(
                index, spec_shape, shape
            )
            if not done:
                waiting.append((positional, index, spec_shape, shape))
        if len(waiting) == len(pending):
            for positional, index, spec_shape, _ in waiting:
                names = [
                    ("*" if positional else "**") + d.name
                    for d in spec_shape
                    if type(d) is MultiDimVar
                    and d.name not in solver.seqs
                    and d.name not in solver.maps
                ]
                solver.problem(
                    index,
                    f"cannot tell how to split the {'positional dims' if positional else 'named axes'}"
                    f" between {' and '.join(dict.fromkeys(names))}; bind all but one of them"
                    " elsewhere (another leaf or known_vars)",
                )
            break
        pending = waiting

    if solver.problems:
        lines = []
        for index in sorted(solver.problems):
            spec = specs[index]
            expected = _show_spec(spec) if isinstance(spec, ArraySpec) else repr(spec)
            lines.append(
                f"{solver.path(index)}: expected {expected}, found {_show_leaf(values[index])}:"
                f" {'; '.join(solver.problems[index])}"
            )
        _raise(lines, error_prefix)
    return solver.result()


def _raise(lines: list[str], error_prefix: str) -> None:
    count = f"{len(lines)} keypath" + ("s" if len(lines) != 1 else "")
    body = "\n".join(f"  {line}" for line in lines)
    raise StructureMismatchError(
        f"{error_prefix}Structure mismatch at {count}:\n{body}", tuple(lines)
    )


def _key_label(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return repr(getattr(key, attribute))
    return str(key)


def _describe_node(node: Any, keys: list[Any]) -> str:
    if node is None:
        return "None"
    kind = type(node).__name__
    if isinstance(node, list | tuple):
        return f"{kind} of length {len(keys)}"
    if not keys:
        return f"{kind} with no children"
    noun = "keys" if isinstance(node, Mapping) else "children"
    return f"{kind} with {noun} [{', '.join(_key_label(k) for k in keys)}]"


def _show_metadata(aux: Any) -> str:
    if isinstance(aux, StructStaticMetadata):
        return ", ".join(f"{name}={value!r}" for name, value in aux.static_fields)
    return f"metadata {aux!r}"


def _structure_problems(value: Any, pattern: Any, path: tuple[Any, ...], out: list) -> None:
    if _is_pattern_leaf(pattern):
        return
    pattern_level = tree_flatten_exactly_one_level(pattern)
    if pattern_level is None:
        return
    value_level = tree_flatten_exactly_one_level(value)
    pattern_items, pattern_def = pattern_level
    pattern_keys = [key for key, _ in pattern_items]
    if value_level is None or type(value) is not type(pattern):
        out.append(
            (path, f"expected a {_describe_node(pattern, pattern_keys)}, found {_show_leaf(value)}")
        )
        return
    value_items, value_def = value_level
    value_keys = [key for key, _ in value_items]
    if pattern_keys != value_keys:
        message = (
            f"expected a {_describe_node(pattern, pattern_keys)}, found a"
            f" {_describe_node(value, value_keys)}"
        )
        if not isinstance(pattern, list | tuple):
            missing = [_key_label(k) for k in pattern_keys if k not in value_keys]
            extra = [_key_label(k) for k in value_keys if k not in pattern_keys]
            if missing:
                message += f"; missing {', '.join(missing)}"
            if extra:
                message += f"; unexpected {', '.join(extra)}"
        out.append((path, message))
    elif pattern_def.node_data() != value_def.node_data():
        out.append(
            (
                path,
                f"expected a {type(pattern).__name__} with"
                f" {_show_metadata(pattern_def.node_data()[1])}, found"
                f" {_show_metadata(value_def.node_data()[1])}",
            )
        )
        return
    value_children = dict(value_items)
    for key, child in pattern_items:
        if key in value_children:
            _structure_problems(value_children[key], child, (*path, key), out)


def _raise_structure_error(value: Any, pattern: Any, error: Exception, error_prefix: str) -> None:
    found: list[tuple[tuple[Any, ...], str]] = []
    _structure_problems(value, pattern, (), found)
    if not found:
        found.append(((), f"the tree structure does not match the pattern: {error}"))
    lines = [f"{pretty_keystr(path, pattern) or 'root'}: {message}" for path, message in found]
    _raise(lines, error_prefix)
