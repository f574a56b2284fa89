"""`Struct` and `pytree_dataclass`: frozen dataclasses that are JAX pytrees."""

from __future__ import annotations

import abc
import dataclasses
import inspect
import operator
import threading
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax

from saikei.core import _viz_hooks

T = TypeVar("T")

_INFO_ATTR = "__saikei_pytree_dataclass_info__"


class PyTreeDataclassSafetyError(TypeError):
    """Raised when `@pytree_dataclass` refuses a class definition."""


class StructStaticMetadata(NamedTuple):
    """The pytree auxiliary data of a Struct: child field names and static fields.

    Two Structs of one type have the same tree structure exactly when their
    static fields are equal.
    """

    child_field_names: tuple[str, ...]
    static_fields: tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class _DataclassInfo:
    child_names: tuple[str, ...]
    static_names: tuple[str, ...]
    has_implicitly_inherited_fields: bool
    child_getter: Callable[[Any], tuple[Any, ...]]
    static_getter: Callable[[Any], tuple[Any, ...]]
    default_keys: tuple[jax.tree_util.GetAttrKey, ...]


def is_pytree_node_field(field: dataclasses.Field) -> bool:
    """Whether a dataclass field holds a pytree child (not a static value).

    Fields are children unless their metadata says `{"pytree_node": False}`.

    Example:
      >>> import dataclasses
      >>> is_pytree_node_field(dataclasses.field(metadata={"pytree_node": False}))
      False
    """
    return field.metadata.get("pytree_node", True)


def is_pytree_dataclass_type(cls: type) -> bool:
    """Whether `cls` itself was decorated with `@pytree_dataclass`."""
    return isinstance(cls, type) and _INFO_ATTR in cls.__dict__


# Objects whose user-written `__init__` is running, mapped to a nesting depth.
# While an object is here, its fields may be assigned with `self.x = ...`.
_constructing = threading.local()


def _constructing_depths() -> dict[int, int]:
    depths = getattr(_constructing, "depths", None)
    if depths is None:
        depths = _constructing.depths = {}
    return depths


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    if id(self) in _constructing_depths():
        object.__setattr__(self, name, value)
        return
    raise dataclasses.FrozenInstanceError(
        f"Cannot assign to field {name!r} of {type(self).__name__}: Structs are"
        " immutable. Build a modified copy instead, e.g."
        f" `dataclasses.replace(obj, {name}=...)` or"
        f" `obj.select().at(lambda s: s.{name}).set(...)`."
    )


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(
        f"Cannot delete field {name!r} of {type(self).__name__}: Structs are immutable."
    )


def _wrap_user_init(cls: type, user_init: Callable[..., None]) -> Callable[..., None]:
    field_names = [f.name for f in dataclasses.fields(cls)]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        depths = _constructing_depths()
        key = id(self)
        depths[key] = depths.get(key, 0) + 1
        try:
            user_init(self, *args, **kwargs)
        finally:
            depths[key] -= 1
            if not depths[key]:
                del depths[key]
        if key not in depths:
            missing = [n for n in field_names if n not in self.__dict__]
            if missing:
                raise PyTreeDataclassSafetyError(
                    f"{type(self).__name__}.__init__ finished without setting the"
                    f" field(s) {missing}. A custom __init__ must assign every"
                    " dataclass field (`self.name = value`)."
                )

    __init__.__saikei_wrapped_init__ = user_init  # type: ignore[attr-defined]
    functools_update = ("__module__", "__name__", "__qualname__", "__doc__")
    for attr in functools_update:
        setattr(__init__, attr, getattr(user_init, attr, None))
    __init__.__wrapped__ = user_init  # type: ignore[attr-defined]
    return __init__


def _generated_init_marker(fn: Any) -> bool:
    return getattr(fn, "__saikei_generated_init__", False)


def _own_annotation_names(cls: type) -> list[str]:
    names = []
    for name, annotation in inspect.get_annotations(cls).items():
        text = annotation if isinstance(annotation, str) else repr(annotation)
        if (
            typing.get_origin(annotation) is typing.ClassVar
            or text.startswith(("ClassVar", "typing.ClassVar"))
            or isinstance(annotation, dataclasses.InitVar)
            or text.startswith(("InitVar", "dataclasses.InitVar"))
        ):
            continue
        names.append(name)
    return names


def _custom_parent_init(cls: type) -> type | None:
    """The nearest parent that defines a hand-written `__init__`, if any."""
    for parent in cls.__mro__[1:]:
        if parent is Struct or parent is object:
            return None
        init = parent.__dict__.get("__init__")
        if init is None:
            continue
        if _generated_init_marker(init):
            return None
        return parent
    return None


@typing.overload
def pytree_dataclass(cls: type[T], /) -> type[T]: ...


@typing.overload
def pytree_dataclass(
    cls: None = None,
    /,
    *,
    has_implicitly_inherited_fields: bool = False,
    use_mutable_proxy_in_init: bool = True,
    overwrite_parent_init: bool = False,
    init: bool = True,
    eq: bool = True,
    order: bool = False,
    kw_only: bool = False,
) -> Callable[[type[T]], type[T]]: ...


def pytree_dataclass(
    cls: type[T] | None = None,
    /,
    *,
    has_implicitly_inherited_fields: bool = False,
    use_mutable_proxy_in_init: bool = True,
    overwrite_parent_init: bool = False,
    init: bool = True,
    eq: bool = True,
    order: bool = False,
    kw_only: bool = False,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Makes a `Struct` subclass a frozen dataclass registered as a JAX pytree.

    Fields are pytree children unless declared static with
    `dataclasses.field(metadata={"pytree_node": False})`; static values become
    part of the tree structure and must be hashable.

    The decorator refuses definitions that are likely mistakes:

    * the annotations written in the class body must be exactly the dataclass
      fields, in order. Fields inherited from a parent dataclass must be
      acknowledged with `has_implicitly_inherited_fields=True`.
    * it will not silently replace a hand-written `__init__` of a parent class
      with a generated one; pass `overwrite_parent_init=True` (or `init=False`)
      to say that is intended.

    A hand-written `__init__` may assign fields with `self.x = value`; every
    field must be assigned by the time it returns. (penzai runs such an
    `__init__` on a mutable proxy subclass; saikei runs it on the object
    itself and unlocks assignment only while it runs, so `type(self)` is the
    real class.)

    Args:
      cls: The class to transform (when used without arguments).
      has_implicitly_inherited_fields: Allow fields inherited from parents that
        are not re-declared in this class body.
      use_mutable_proxy_in_init: Whether a hand-written `__init__` may assign
        fields with `self.x = value` (and must assign all of them). With
        False, `__init__` runs on the frozen object, so it must use
        `object.__setattr__(self, "x", value)`, and nothing is checked.
      overwrite_parent_init: Allow replacing a parent's hand-written
        `__init__` with a generated one.
      init: Generate `__init__` (ignored when the class defines its own).
      eq: Generate `__eq__` (and `__hash__`, from the fields).
      order: Generate ordering methods.
      kw_only: Make every field keyword-only in the generated `__init__`.

    Returns:
      The decorated class, or a decorator when called with keyword arguments.

    Example:
      >>> import dataclasses, jax
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class Scaled(sk.Struct):
      ...   value: jax.Array
      ...   name: str = dataclasses.field(metadata={"pytree_node": False})
      >>> jax.tree_util.tree_leaves(Scaled(value=1.0, name="a"))
      [1.0]
    """

    def decorate(cls: type[T]) -> type[T]:
        return _make_pytree_dataclass(
            cls,
            has_implicitly_inherited_fields=has_implicitly_inherited_fields,
            use_mutable_proxy_in_init=use_mutable_proxy_in_init,
            overwrite_parent_init=overwrite_parent_init,
            init=init,
            eq=eq,
            order=order,
            kw_only=kw_only,
        )

    if cls is None:
        return decorate
    return decorate(cls)


def _make_pytree_dataclass(
    cls: type[T],
    *,
    has_implicitly_inherited_fields: bool,
    use_mutable_proxy_in_init: bool,
    overwrite_parent_init: bool,
    init: bool,
    eq: bool,
    order: bool,
    kw_only: bool,
) -> type[T]:
    name = cls.__name__
    if not isinstance(cls, type):
        raise TypeError(f"@pytree_dataclass decorates classes, got {cls!r}.")
    if _INFO_ATTR in cls.__dict__:
        raise PyTreeDataclassSafetyError(
            f"{name} is already a pytree_dataclass; apply @pytree_dataclass once."
        )
    for method in ("tree_flatten_with_keys", "tree_unflatten"):
        if not callable(getattr(cls, method, None)):
            raise PyTreeDataclassSafetyError(
                f"{name} has no {method} method. Subclass sk.Struct (which provides"
                " the pytree methods), or define both `tree_flatten_with_keys` and"
                " the classmethod `tree_unflatten` yourself."
            )
    own_init = cls.__dict__.get("__init__")
    if init and own_init is None and not overwrite_parent_init:
        parent = _custom_parent_init(cls)
        if parent is not None:
            raise PyTreeDataclassSafetyError(
                f"{name} would replace the hand-written __init__ of its parent"
                f" {parent.__name__} with a generated one. Pass"
                " `overwrite_parent_init=True` if that is what you want, or"
                " `init=False` to keep the parent's __init__."
            )

    own_fields = _own_annotation_names(cls)
    for field_name in own_fields:
        default = cls.__dict__.get(field_name, dataclasses.MISSING)
        if isinstance(default, dataclasses.Field) and default.metadata.get(
            "pytree_node", True
        ) not in (True, False):
            raise PyTreeDataclassSafetyError(
                f"{name}.{field_name}: metadata 'pytree_node' must be True or False."
            )

    # Structs print through their own __repr__; other classes get the dataclass one.
    data_cls = dataclasses.dataclass(
        cls,
        init=init,
        repr=not issubclass(cls, Struct),
        eq=eq,
        order=order,
        frozen=True,
        kw_only=kw_only,
    )
    fields = dataclasses.fields(data_cls)
    inferred = [f.name for f in fields]
    if has_implicitly_inherited_fields:
        # Re-declaring an inherited field (e.g. to change its default) keeps
        # its inherited position, so only "nothing is inherited" is refused.
        if set(inferred) == set(own_fields):
            raise PyTreeDataclassSafetyError(
                f"{name} was declared with has_implicitly_inherited_fields=True"
                f" but declares all of its fields {inferred} itself: it inherits no"
                " fields implicitly; drop the flag."
            )
    elif inferred != own_fields:
        missing = [f for f in inferred if f not in own_fields]
        problem = (
            f"field(s) {missing} inherited from parent dataclasses are not declared"
            " in its class body"
            if missing
            else "its fields are declared in a different order than the dataclass order"
        )
        raise PyTreeDataclassSafetyError(
            f"{name}: {problem}. The field annotations in the class body are"
            f" {own_fields}, its dataclass fields are {inferred}. Either re-declare"
            " every field, in that order, in the class body, or pass"
            " `@pytree_dataclass(has_implicitly_inherited_fields=True)`."
        )

    child_names = tuple(f.name for f in fields if is_pytree_node_field(f))
    static_names = tuple(f.name for f in fields if not is_pytree_node_field(f))
    info = _DataclassInfo(
        child_names=child_names,
        static_names=static_names,
        has_implicitly_inherited_fields=has_implicitly_inherited_fields,
        child_getter=_tuple_getter(child_names),
        static_getter=_tuple_getter(static_names),
        default_keys=tuple(jax.tree_util.GetAttrKey(n) for n in child_names),
    )
    setattr(data_cls, _INFO_ATTR, info)
    data_cls.__setattr__ = _frozen_setattr  # type: ignore[method-assign]
    data_cls.__delattr__ = _frozen_delattr  # type: ignore[method-assign]

    if own_init is not None and use_mutable_proxy_in_init:
        data_cls.__init__ = _wrap_user_init(data_cls, own_init)  # type: ignore[misc]
    elif "__init__" in data_cls.__dict__:
        data_cls.__init__.__saikei_generated_init__ = True  # type: ignore[misc]

    # A class that is not a Struct may bring only the two required methods;
    # JAX then derives plain flattening from `tree_flatten_with_keys`.
    jax.tree_util.register_pytree_with_keys(
        data_cls,
        flatten_with_keys=data_cls.tree_flatten_with_keys,
        unflatten_func=data_cls.tree_unflatten,
        flatten_func=getattr(data_cls, "tree_flatten", None),
    )
    return data_cls


def _tuple_getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda _: ()
    if len(names) == 1:
        single = operator.attrgetter(names[0])
        return lambda obj: (single(obj),)
    return operator.attrgetter(*names)


def _dataclass_info(cls: type) -> _DataclassInfo:
    try:
        return cls.__dict__[_INFO_ATTR]
    except KeyError:
        raise TypeError(
            f"{cls.__name__} is not a pytree_dataclass; decorate it with @sk.pytree_dataclass."
        ) from None


class AbstractStructMetaclass(abc.ABCMeta):
    """Metaclass of `Struct`: refuses to instantiate subclasses that were never decorated.

    Undecorated `Struct` subclasses thus act as abstract base classes.

    Example:
      >>> from saikei import sk
      >>> type(sk.Struct).__name__
      'AbstractStructMetaclass'
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if _INFO_ATTR not in cls.__dict__:
            raise TypeError(
                f"Cannot instantiate {cls.__name__}: it is an abstract Struct"
                " subclass. Decorate concrete subclasses with @sk.pytree_dataclass."
            )
        return super().__call__(*args, **kwargs)


class Struct(metaclass=AbstractStructMetaclass):
    """Base class for saikei's frozen, pytree-registered dataclasses.

    Subclasses become concrete when decorated with `@sk.pytree_dataclass`;
    undecorated subclasses act as abstract bases. A Struct is immutable,
    compares by value, flattens into its child fields with readable keypaths,
    and can be edited functionally with selectors (`struct.select()`).

    Example:
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class Pair(sk.Struct):
      ...   left: int
      ...   right: int
      >>> Pair(1, 2).select().at(lambda p: p.right).set(5)
      Pair(left=1, right=5)
    """

    @classmethod
    def from_attributes(cls: type[T], **field_values: Any) -> T:
        """Builds an instance from its fields, bypassing any custom `__init__`.

        Args:
          **field_values: A value for every dataclass field, and nothing else.

        Returns:
          A new instance.

        Example:
          >>> from saikei import sk
          >>> @sk.pytree_dataclass
          ... class Pair(sk.Struct):
          ...   left: int
          ...   right: int
          >>> Pair.from_attributes(left=1, right=2)
          Pair(left=1, right=2)
        """
        expected = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        given = set(field_values)
        if given != expected:
            problems = []
            if expected - given:
                problems.append(f"missing {sorted(expected - given)}")
            if given - expected:
                problems.append(f"unexpected {sorted(given - expected)}")
            raise ValueError(
                f"{cls.__name__}.from_attributes needs exactly the fields"
                f" {sorted(expected)}; {' and '.join(problems)}."
            )
        obj = object.__new__(cls)
        for name, value in field_values.items():
            object.__setattr__(obj, name, value)
        return obj

    def attributes_dict(self) -> dict[str, Any]:
        """The fields of this Struct as a dict (no recursion into children).

        Example:
          >>> from saikei import sk
          >>> @sk.pytree_dataclass
          ... class Pair(sk.Struct):
          ...   left: int
          ...   right: int
          >>> Pair(1, 2).attributes_dict()
          {'left': 1, 'right': 2}
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def select(self) -> Any:
        """Starts a selection rooted at this Struct; same as `sk.select(self)`."""
        from saikei.core._selectors import select

        return select(self)

    def key_for_field(self, field_name: str) -> Any:
        """The keypath entry used for a child field. Override to customize."""
        return jax.tree_util.GetAttrKey(field_name)

    def tree_flatten(self) -> tuple[tuple[Any, ...], StructStaticMetadata]:
        info = _dataclass_info(type(self))
        return info.child_getter(self), StructStaticMetadata(
            info.child_names, tuple(zip(info.static_names, info.static_getter(self)))
        )

    def tree_flatten_with_keys(
        self,
    ) -> tuple[list[tuple[Any, Any]], StructStaticMetadata]:
        children, aux = self.tree_flatten()
        key_for_field = self.key_for_field
        return [(key_for_field(n), c) for n, c in zip(aux.child_field_names, children)], aux

    @classmethod
    def tree_unflatten(cls, aux: StructStaticMetadata, children: Any) -> Any:
        obj = object.__new__(cls)
        for name, value in zip(aux.child_field_names, children):
            object.__setattr__(obj, name, value)
        for name, value in aux.static_fields:
            object.__setattr__(obj, name, value)
        return obj

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name, '<unset>')!r}"
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        )
        return f"{type(self).__name__}({fields})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("..." if cycle else repr(self))

    def treescope_color(self) -> str | tuple[str, str] | None:
        """The background colour treescope draws this Struct with (None: none).

        Override to return a CSS colour, or a `(border, fill)` pair for a
        patterned background. `sk.nn.Layer` returns a colour derived from
        the type name.

        Example:
          >>> from saikei import sk
          >>> @sk.pytree_dataclass
          ... class Pair(sk.Struct):
          ...   left: int
          ...   right: int
          >>> Pair(1, 2).treescope_color() is None
          True
        """
        return None

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        # the viz layer registers the renderer (core never imports it).
        return _viz_hooks.render("struct", self, path, subtree_renderer)
