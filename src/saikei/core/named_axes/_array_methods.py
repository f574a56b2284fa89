"""Operators and array methods of NamedArray, lifted over named axes.

Operators broadcast by name (axes with the same name are matched, missing
names are broadcast) and positional axes broadcast numpy-style; scalars and
plain arrays count as positional. Array methods such as `sum` or `reshape` act
on the positional axes only, once per position of the named axes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from saikei.core.named_axes import _index_ops, _nmap
from saikei.core.named_axes import _named_array as _na

if TYPE_CHECKING:
    from saikei.core.named_axes._named_array import NamedArray

_OPERAND_TYPES = (bool, int, float, complex, jax.Array, np.ndarray, np.generic)


def _binary(fun: Callable[..., Any], reflected: bool = False) -> Callable[..., Any]:
    elementwise = _nmap._elementwise_arity(fun) == 2
    mapped = _nmap.nmap(fun)

    def method(self: NamedArray, other: Any) -> Any:
        if not isinstance(other, _OPERAND_TYPES) and not isinstance(other, type(self)):
            return NotImplemented
        args = (other, self) if reflected else (self, other)
        if elementwise:
            if isinstance(other, type(self)):
                if other.axis_names == self.axis_names and (
                    other.data_array.shape == self.data_array.shape
                ):
                    data = (other.data_array, self.data_array)
                    if not reflected:
                        data = data[::-1]
                    return _new(fun(*data), self.axis_names)
            elif type(other) in (bool, int, float, complex) or np.ndim(other) == 0:
                data = (other, self.data_array) if reflected else (self.data_array, other)
                return _new(fun(*data), self.axis_names)
            result = _nmap._elementwise_call(fun, args)
            if result is not None:
                return result
        return mapped(*args)

    method.__name__ = getattr(fun, "__name__", "op")
    return method


def _unary(fun: Callable[[Any], Any]) -> Callable[..., Any]:
    def method(self: NamedArray) -> NamedArray:
        return _new(fun(self.data_array), self.axis_names)

    return method


def _new(data: Any, names: tuple[Any, ...]) -> NamedArray:
    return _na._new(data, names)


def _lifted(name: str) -> Callable[..., Any]:
    def call_method(x: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(x, name)(*args, **kwargs)

    call_method.__name__ = name
    call_method.__saikei_pure__ = True  # type: ignore[attr-defined]
    mapped = _nmap.nmap(call_method)

    def method(self: NamedArray, *args: Any, **kwargs: Any) -> NamedArray:
        return mapped(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = (
        f"`jax.Array.{name}` applied to the positional axes, once per position of the"
        " named axes (see the `ArrayMethods` example)."
    )
    return method


def _lifted_property(name: str) -> property:
    def get_attr(x: Any) -> Any:
        return getattr(x, name)

    get_attr.__name__ = name
    get_attr.__saikei_pure__ = True  # type: ignore[attr-defined]
    mapped = _nmap.nmap(get_attr)

    def getter(self: NamedArray) -> NamedArray:
        return mapped(self)

    getter.__doc__ = f"`jax.Array.{name}` of the positional axes, vectorized over named axes."
    return property(getter)


class ArrayMethods:
    """Operators and lifted `jax.Array` methods shared by every NamedArray.

    Example:
      >>> import jax.numpy as jnp
      >>> from saikei import sk
      >>> x = sk.nx.wrap(jnp.arange(6.0).reshape(2, 3), "a", "b")
      >>> (x + sk.nx.ones({"b": 3})).named_shape
      {'a': 2, 'b': 3}
      >>> x.untag("b").sum().unwrap("a").tolist()
      [3.0, 12.0]
    """

    __slots__ = ()
    # Makes numpy defer to our reflected operators (`np_array + named_array`).
    __array_ufunc__ = None

    __add__ = _binary(jnp.add)
    __radd__ = _binary(jnp.add, reflected=True)
    __sub__ = _binary(jnp.subtract)
    __rsub__ = _binary(jnp.subtract, reflected=True)
    __mul__ = _binary(jnp.multiply)
    __rmul__ = _binary(jnp.multiply, reflected=True)
    __truediv__ = _binary(jnp.true_divide)
    __rtruediv__ = _binary(jnp.true_divide, reflected=True)
    __floordiv__ = _binary(jnp.floor_divide)
    __rfloordiv__ = _binary(jnp.floor_divide, reflected=True)
    __mod__ = _binary(jnp.remainder)
    __rmod__ = _binary(jnp.remainder, reflected=True)
    __divmod__ = _binary(jnp.divmod)
    __rdivmod__ = _binary(jnp.divmod, reflected=True)
    __pow__ = _binary(jnp.power)
    __rpow__ = _binary(jnp.power, reflected=True)
    __matmul__ = _binary(jnp.matmul)
    __rmatmul__ = _binary(jnp.matmul, reflected=True)
    __and__ = _binary(jnp.bitwise_and)
    __rand__ = _binary(jnp.bitwise_and, reflected=True)
    __or__ = _binary(jnp.bitwise_or)
    __ror__ = _binary(jnp.bitwise_or, reflected=True)
    __xor__ = _binary(jnp.bitwise_xor)
    __rxor__ = _binary(jnp.bitwise_xor, reflected=True)
    __lshift__ = _binary(jnp.left_shift)
    __rlshift__ = _binary(jnp.left_shift, reflected=True)
    __rshift__ = _binary(jnp.right_shift)
    __rrshift__ = _binary(jnp.right_shift, reflected=True)
    __lt__ = _binary(jnp.less)
    __le__ = _binary(jnp.less_equal)
    __gt__ = _binary(jnp.greater)
    __ge__ = _binary(jnp.greater_equal)
    __eq__ = _binary(jnp.equal)  # type: ignore[assignment]
    __ne__ = _binary(jnp.not_equal)  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]

    __neg__ = _unary(jnp.negative)
    __pos__ = _unary(jnp.positive)
    __abs__ = _unary(jnp.abs)
    __invert__ = _unary(jnp.invert)

    all = _lifted("all")
    any = _lifted("any")
    argmax = _lifted("argmax")
    argmin = _lifted("argmin")
    argpartition = _lifted("argpartition")
    argsort = _lifted("argsort")
    choose = _lifted("choose")
    clip = _lifted("clip")
    compress = _lifted("compress")
    conj = _lifted("conj")
    conjugate = _lifted("conjugate")
    cumprod = _lifted("cumprod")
    cumsum = _lifted("cumsum")
    diagonal = _lifted("diagonal")
    dot = _lifted("dot")
    flatten = _lifted("flatten")
    max = _lifted("max")
    mean = _lifted("mean")
    min = _lifted("min")
    nonzero = _lifted("nonzero")
    prod = _lifted("prod")
    ptp = _lifted("ptp")
    ravel = _lifted("ravel")
    repeat = _lifted("repeat")
    reshape = _lifted("reshape")
    round = _lifted("round")
    searchsorted = _lifted("searchsorted")
    sort = _lifted("sort")
    squeeze = _lifted("squeeze")
    std = _lifted("std")
    sum = _lifted("sum")
    swapaxes = _lifted("swapaxes")
    take = _lifted("take")
    trace = _lifted("trace")
    transpose = _lifted("transpose")
    var = _lifted("var")
    view = _lifted("view")
    T = _lifted_property("T")
    mT = _lifted_property("mT")
    real = _lifted_property("real")
    imag = _lifted_property("imag")

    def astype(self: NamedArray, dtype: Any) -> NamedArray:  # type: ignore[misc]
        """Converts the data to `dtype`.

        Example:
          >>> import jax.numpy as jnp
          >>> from saikei import sk
          >>> sk.nx.ones({"a": 2}).astype(jnp.int32).dtype
          dtype('int32')
        """
        return _new(self.data_array.astype(dtype), self.axis_names)

    def item(self: NamedArray, *args: Any) -> Any:  # type: ignore[misc]
        """The Python scalar of an array without named axes (as `jax.Array.item`).

        Example:
          >>> from saikei import sk
          >>> sk.nx.wrap(3.0).item()
          3.0
        """
        if self.named_shape:
            raise ValueError(
                f"item(): the array has named axes {self.named_shape}; index them away"
                " (e.g. `x[{'name': 0}]`) or `unwrap` first."
            )
        return self.data_array.item(*args)

    def __getitem__(self: NamedArray, index: Any) -> NamedArray:  # type: ignore[misc]
        return _index_ops.getitem(self, index)

    @property
    def at(self: NamedArray) -> _index_ops.IndexUpdateHelper:  # type: ignore[misc]
        """Functional updates: `x.at[index].set(values)` (also add, multiply, ...).

        Example:
          >>> from saikei import sk
          >>> sk.nx.zeros({"a": 3}).at[{"a": 0}].add(2.0).unwrap("a").tolist()
          [2.0, 0.0, 0.0]
        """
        return _index_ops.IndexUpdateHelper(self)

    def __iter__(self: NamedArray) -> Iterator[NamedArray]:  # type: ignore[misc]
        pos = self.positional_shape
        if not pos:
            raise TypeError(
                f"Cannot iterate over a NamedArray with no positional axes (named_shape"
                f" {self.named_shape}). Untag an axis first, e.g. `x.untag(name)`."
            )
        for i in range(pos[0]):
            yield self[i]

    def __array__(self: NamedArray, dtype: Any = None, copy: Any = None) -> Any:  # type: ignore[misc]
        # Without this numpy would silently build an object array.
        raise TypeError(
            f"A NamedArray ({self._summary()}) cannot be converted to a numpy array"
            " implicitly, because its axes have names and no fixed order. Use"
            " `x.unwrap(*names)` to choose the order of the named axes."
        )

    def _scalar(self: NamedArray, convert: Callable[[Any], Any]) -> Any:  # type: ignore[misc]
        data = self.data_array
        if data.ndim:
            raise TypeError(
                f"Only NamedArrays without any axes can be converted with"
                f" {convert.__name__}(); this one has named_shape {self.named_shape} and"
                f" positional_shape {self.positional_shape}."
            )
        return convert(data)

    def __bool__(self) -> bool:
        return self._scalar(bool)  # type: ignore[attr-defined]

    def __int__(self) -> int:
        return self._scalar(int)  # type: ignore[attr-defined]

    def __float__(self) -> float:
        return self._scalar(float)  # type: ignore[attr-defined]

    def __complex__(self) -> complex:
        return self._scalar(complex)  # type: ignore[attr-defined]

    def __index__(self) -> int:
        import operator

        return self._scalar(operator.index)  # type: ignore[attr-defined]
