"""Sphinx extension: API pages that list every public name of a saikei module.

A page writes

    ```{saikei-api} saikei.nn
    ```

and gets the module's docstring followed by one autodoc entry per public name
(classes with their documented methods, functions, constants), so a name added
to a module appears in the reference without anyone editing the docs.

Which names are public (`public_names`) follows the conventions of STYLE.md:

- a module with `__all__` exports exactly `__all__`;
- otherwise its public names are the top-level names without a leading
  underscore that the module itself binds with `def`, `class` or an
  assignment, plus explicit re-exports (`from m import x as x`, and in a
  package `__init__` any `import ... as name`, e.g. `sk`'s `viz as ts`).
  Plain imports (`import jax`, `from typing import Any`) are not exports.

tests/docs/test_docs.py imports `public_names` to check that the built
reference lists every one of them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import types
from typing import ClassVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _bound_names(source: str, is_package: bool) -> list[str]:
    """Top-level names a module exports, in source order (see the module docstring)."""
    names: list[str] = []
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(stmt.name)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    names.append(target.id)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.append(stmt.target.id)
        elif type(stmt).__name__ == "TypeAlias":  # `type X = ...` (Python 3.12+)
            names.append(stmt.name.id)
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                if alias.asname is None:
                    continue
                if is_package or alias.asname == alias.name.rsplit(".", 1)[-1]:
                    names.append(alias.asname)
    return names


def public_names(module_name: str) -> list[str]:
    """The public names of a module, in the order its source defines them."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    source = inspect.getsource(module)
    is_package = hasattr(module, "__path__")
    seen: dict[str, None] = {}
    for name in _bound_names(source, is_package):
        if not name.startswith("_") and hasattr(module, name):
            seen.setdefault(name, None)
    return list(seen)


# The documented modules, in the order of the reference's pages. A class or
# function exported by several of them is documented in full under the first
# (its home, e.g. `saikei.sk.Struct`); the others list it with a link there.
API_MODULES = [
    "saikei.sk",
    "saikei.nn",
    "saikei.core.named_axes",
    "saikei.core.shapecheck",
    "saikei.viz",
    "saikei.models.simple_mlp",
    "saikei.models.transformer",
    "saikei.models.transformer.model_parts",
    "saikei.models.transformer.sampling",
    "saikei.models.transformer.loading",
    "saikei.models.transformer.variants",
    "saikei.models.transformer.variants.*",
    "saikei.toolshed",
    "saikei.toolshed.*",
    "saikei.interp",
    "saikei.interp.*",
    "saikei.distributed",
    "saikei",
]


def api_modules() -> list[str]:
    """`API_MODULES` with `package.*` expanded to the package's public submodules."""
    out: list[str] = []
    for name in API_MODULES:
        if name.endswith(".*"):
            out += public_submodules(name[:-2])
        else:
            out.append(name)
    return out


_HOMES: dict[int, str] | None = None


def home_of(obj: object) -> str | None:
    """Dotted path where a class or function is documented in full."""
    global _HOMES
    if _HOMES is None:
        _HOMES = {}
        for module_name in api_modules():
            module = importlib.import_module(module_name)
            for name in public_names(module_name):
                value = getattr(module, name)
                if inspect.isclass(value) or inspect.isroutine(value):
                    _HOMES.setdefault(id(value), f"{module_name}.{name}")
    return _HOMES.get(id(obj))


def _entry(module_name: str, name: str, obj: object) -> list[str]:
    """reST lines documenting `module_name.name`."""
    full = f"{module_name}.{name}"
    if isinstance(obj, types.ModuleType):
        return [
            f".. py:data:: {name}",
            f"   :module: {module_name}",
            "   :no-index:",
            "",
            f"   The module :py:mod:`{obj.__name__}` (documented on its own page).",
            "",
        ]
    home = home_of(obj)
    if home is not None and home != full:
        kind, role = ("class", "class") if inspect.isclass(obj) else ("function", "func")
        return [
            f".. py:{kind}:: {name}",
            f"   :module: {module_name}",
            "",
            f"   The same object as :py:{role}:`{home}`.",
            "",
        ]
    is_alias = getattr(obj, "__name__", name) != name
    if inspect.isclass(obj) and not is_alias:
        return [f".. autoclass:: {full}", "   :members:", "   :show-inheritance:", ""]
    if (inspect.isfunction(obj) or inspect.ismethod(obj)) and not is_alias:
        return [f".. autofunction:: {full}", ""]
    if callable(obj) and not inspect.isclass(obj) and not is_alias:
        return [f".. autofunction:: {full}", ""]
    return [f".. autodata:: {full}", "   :no-value:", ""]


def public_submodules(package_name: str) -> list[str]:
    """The package's submodules whose names do not start with an underscore."""
    package = importlib.import_module(package_name)
    return [
        f"{package_name}.{info.name}"
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]


def _module_lines(module_name: str, env) -> list[str]:
    module = importlib.import_module(module_name)
    env.note_dependency(inspect.getsourcefile(module))
    lines = [f".. automodule:: {module_name}", ""]
    for name in public_names(module_name):
        lines += _entry(module_name, name, getattr(module, name))
    return lines


class SaikeiApiDirective(SphinxDirective):
    """`saikei-api MODULE`: the module docstring and every public name.

    With `:submodules:` (optionally followed by the underline character of the
    sections, "-" by default), a section follows for each public submodule.
    """

    required_arguments = 1
    has_content = False
    # `:submodules:` takes the underline character of the submodule sections
    # ("-" when empty), so the sections nest under the page's own headings.
    option_spec: ClassVar = {"submodules": lambda arg: (arg or "-").strip()}

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        lines = _module_lines(module_name, self.env)
        if "submodules" in self.options:
            for sub in public_submodules(module_name):
                title = f"``{sub.rsplit('.', 1)[-1]}``"
                underline = self.options["submodules"] * len(title)
                lines += [title, underline, "", *_module_lines(sub, self.env)]
        content = StringList(lines, source=f"<saikei-api {module_name}>")
        container = nodes.container()
        nested_parse_with_titles(self.state, content, container)
        return container.children


# Roles (:py:func:`x`), links (`text <url>`_) and literals (``x``) are matched
# first and kept; any other `span` is Markdown-style code.
_CODE_SPAN = re.compile(
    r"(?P<keep>:[\w:.+-]+:`[^`]*`|``[^`]+``|`[^`]+`__?)"
    r"|(?<![`\\])`(?P<code>[^`\n]+(?:\n[^`\n]+)?)`(?!`)"
)
_TABLE_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")
_TABLE_SPAN = re.compile(r"(?<![`:\\])`([^`]+)`(?:  |$)")


def _code_span(match: re.Match) -> str:
    if match.group("keep"):
        return match.group("keep")
    text = " ".join(match.group("code").split())
    before = match.string[match.start() - 1] if match.start() else " "
    after = match.string[match.end()] if match.end() < len(match.string) else " "
    return (
        ("\\ " if before.isalnum() else "")
        + f"``{text}``"
        + ("\\ " if after.isalnum() or after in "'(" else "")
    )


def markdown_code_spans_to_rst(lines: list[str]) -> list[str]:
    """Turn the docstrings' `code` (Markdown style) into reST inline literals.

    saikei's docstrings mark code with single backticks, which reST would read as
    interpreted text (and chokes on in `Parameter`s). Doctest lines and their
    output are left alone; in simple tables each span keeps its cell's width.
    """
    out: list[str] = []
    prose: list[str] = []
    in_doctest = False
    in_table = False

    def flush():
        if prose:
            out.extend(_CODE_SPAN.sub(_code_span, "\n".join(prose)).split("\n"))
            prose.clear()

    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(">>>"):
            in_doctest = True
        elif not stripped:
            in_doctest = False
        if _TABLE_BORDER.match(line):
            flush()
            out.append(line)
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            in_table = not (in_table and not following)
        elif in_table:
            out.append(_TABLE_SPAN.sub(lambda m: f"``{m.group(1)}``", line))
        elif in_doctest or not stripped:
            flush()
            out.append(line)
        else:
            prose.append(line)
    flush()
    return _indented_code_to_literal_blocks(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indented_code_to_literal_blocks(lines: list[str]) -> list[str]:
    """Mark Markdown-style indented code after a paragraph as a reST literal block.

    "can be written<blank><indented code>" is a block quote to reST (and a warning
    when the code's own indentation varies); "written::" makes it code.
    """
    out = list(lines)
    for i in range(len(out) - 2):
        text, blank, code = out[i], out[i + 1], out[i + 2]
        if not text.strip() or blank.strip() or not code.strip():
            continue
        ends_prose = text.rstrip()[-1].isalnum() or text.rstrip()[-1] in ").`'\""
        code_start = code.lstrip()[:3]
        if (
            ends_prose
            and _indent(code) > _indent(text)
            and code_start != ">>>"
            and code_start[:1] not in "-*"
            and not _TABLE_BORDER.match(code)
            and (i == 0 or not out[i - 1].strip() or _indent(out[i - 1]) <= _indent(text))
        ):
            out[i] = text.rstrip() + "::"
    return out


def _process_docstring(app, what, name, obj, options, lines):
    type_doc = getattr(type(obj), "__doc__", None)
    if (
        what in ("data", "attribute")
        and isinstance(type_doc, str)
        and " ".join(lines).split() == type_doc.split()
    ):
        # A constant without a doc comment of its own shows its type's docstring
        # (`dict`'s, say), which says nothing about the constant.
        lines[:] = []
        return
    lines[:] = markdown_code_spans_to_rst(lines)


def setup(app):
    app.add_directive("saikei-api", SaikeiApiDirective)
    # Before napoleon (priority 500) reads "Returns: `{a: b}`" as "type: text".
    app.connect("autodoc-process-docstring", _process_docstring, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
