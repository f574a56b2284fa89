"""Small pytree helpers shared by the core modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any
KeyPath = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class CustomGetAttrKey:
    """A keypath entry for an attribute that may render differently from `.name`.

    Subclass it to attach extra information to a keypath entry while keeping
    `jax.tree_util.keystr` output readable (it prints as `.name`).

    Example:
      >>> import jax
      >>> jax.tree_util.keystr((CustomGetAttrKey("body"),))
      '.body'
    """

    name: str

    def __str__(self) -> str:
        return f".{self.name}"


def _key_text(key: Any) -> str:
    if isinstance(key, jax.tree_util.GetAttrKey | CustomGetAttrKey):
        return f".{key.name}"
    return jax.tree_util.keystr((key,))


def pretty_keystr(keypath: KeyPath, tree: PyTree) -> str:
    """Renders a keypath with the type of each Struct it passes through.

    Where `jax.tree_util.keystr` prints `.sublayers[0].weights`, this prints
    `MLP.sublayers[0]/Linear.weights`: every attribute access is prefixed with
    the name of the type it is read from, which is what you need to understand
    a path through a deep model.

    Args:
      keypath: A keypath into `tree`, as produced by
        `jax.tree_util.tree_flatten_with_path`.
      tree: The tree the keypath indexes into.

    Returns:
      A readable string for the path.

    Example:
      >>> import jax
      >>> from saikei import sk
      >>> @sk.pytree_dataclass
      ... class Box(sk.Struct):
      ...   inner: object
      >>> tree = {"a": [Box(inner=1)]}
      >>> path, _ = jax.tree_util.tree_flatten_with_path(tree)[0][0]
      >>> sk.pretty_keystr(path, tree)
      "['a'][0]/Box.inner"
    """
    parts: list[str] = []
    node = tree
    for key in keypath:
        if isinstance(key, jax.tree_util.GetAttrKey | CustomGetAttrKey):
            prefix = "/" if parts else ""
            parts.append(f"{prefix}{type(node).__name__}.{key.name}")
        else:
            parts.append(_key_text(key))
        node = _child_at_key(node, key)
    return "".join(parts)


def _child_at_key(node: Any, key: Any) -> Any:
    children, _ = tree_flatten_exactly_one_level(node)
    for child_key, child in children:
        if child_key == key:
            return child
    raise KeyError(f"Key {key!r} is not a child of {type(node).__name__}.")


def tree_flatten_exactly_one_level(
    tree: PyTree,
) -> tuple[list[tuple[Any, PyTree]], jax.tree_util.PyTreeDef] | None:
    """Flattens one level of a pytree.

    Args:
      tree: Any pytree.

    Returns:
      None if `tree` is a leaf. Otherwise `(children, treedef)`, where
      `children` is a list of `(key, child)` pairs and
      `treedef.unflatten([child, ...])` rebuilds the node from new children.

    Example:
      >>> children, treedef = tree_flatten_exactly_one_level({"a": 1, "b": [2]})
      >>> [(str(k), v) for k, v in children]
      [("['a']", 1), ("['b']", [2])]
      >>> treedef.unflatten([10, 20])
      {'a': 10, 'b': 20}
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is not tree)
    if len(with_path) == 1 and not with_path[0][0] and with_path[0][1] is tree:
        return None
    return [(path[0], child) for path, child in with_path], treedef


class SliceLike:
    """The type of `sk.slice`: `sk.slice[a:b]` builds `slice(a, b)`, for dict indexing.

    Example:
      >>> from saikei import sk
      >>> sk.slice[1:3]
      slice(1, 3, None)
    """

    def __getitem__(self, key: Any) -> Any:
        return key

    def __repr__(self) -> str:
        return "sk.slice"


slice = SliceLike()  # noqa: A001 - the public name mirrors penzai's `pz.slice`.

IsLeafFn = Callable[[Any], bool]
