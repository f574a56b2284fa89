"""The documentation site: it builds with warnings as errors, every tutorial runs, and
the API reference lists every public name.

The build test runs Sphinx once (every tutorial notebook executed exactly once, in a
kernel running this interpreter) and then checks the built site; it is the slowest
test of the suite (a few minutes on two cores). The other tests are fast checks of
the pieces it relies on.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import saikei_apidoc  # noqa: E402  (docs/_ext is not a package)

# The namespaces the issue names; each must be among the documented modules.
REQUIRED_NAMESPACES = [
    "saikei.sk",
    "saikei.nn",
    "saikei.core.named_axes",  # sk.nx
    "saikei.core.shapecheck",  # sk.chk
    "saikei.viz",  # sk.ts
    "saikei.models.transformer",
    "saikei.models.simple_mlp",
    "saikei.toolshed",
    "saikei.interp",
]


def _runtime_public_names(module_name: str) -> set[str]:
    """Public names found by looking at the imported module, independently of the AST rule.

    For a package (a facade such as `saikei.nn`), every attribute without a leading
    underscore that is not a module; for a plain module, every such attribute defined
    in it (`__module__` is the module) plus `__all__`.
    """
    module = importlib.import_module(module_name)
    names = set(getattr(module, "__all__", ()))
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if name == "annotations":  # `from __future__ import annotations`
            continue
        is_facade = hasattr(module, "__path__") and not hasattr(module, "__all__")
        if is_facade or getattr(value, "__module__", None) == module_name:
            names.add(name)
    return names


def test_documented_modules_cover_the_required_namespaces_and_every_toolshed_module():
    documented = saikei_apidoc.api_modules()
    missing = [name for name in REQUIRED_NAMESPACES if name not in documented]
    assert not missing, f"API_MODULES in docs/_ext/saikei_apidoc.py lacks {missing}"
    toolshed = sorted(
        p.stem for p in (ROOT / "src/saikei/toolshed").glob("*.py") if not p.stem.startswith("_")
    )
    missing_tools = [t for t in toolshed if f"saikei.toolshed.{t}" not in documented]
    assert not missing_tools, f"toolshed modules missing from the API reference: {missing_tools}"


def test_public_names_rule_reads_exports_not_plain_imports():
    names = saikei_apidoc.public_names("saikei.models.transformer.variants.llamalike")
    assert "build_llamalike_transformer" in names
    assert "LlamalikeTransformerConfig" in names
    # Plain imports of that module are not its exports.
    assert not {"jax", "jnp", "dataclasses", "Any", "nn", "annotations"} & set(names)
    # A facade re-exports with `import x as x` (and sk with aliases such as `viz as ts`).
    sk_names = saikei_apidoc.public_names("saikei.sk")
    assert {"Struct", "select", "nx", "chk", "ts", "nn"} <= set(sk_names)


def test_markdown_code_spans_become_rst_literals():
    lines = [
        "Unbinds `Parameter`s from a tree.",
        "",
        "Returns:",
        "  `{axis: size}` for each stack;",
        "  see `jax.tree_util",
        "  .tree_map`.",
        "",
        "  >>> x = '`kept`'",
        "  '`kept`'",
        "",
        "A role :py:func:`f` and a link `text <https://example.org>`_ stay.",
    ]
    out = saikei_apidoc.markdown_code_spans_to_rst(lines)
    assert out[0] == r"Unbinds ``Parameter``\ s from a tree."
    assert out[3] == "  ``{axis: size}`` for each stack;"
    assert "``jax.tree_util .tree_map``" in "\n".join(out)
    assert "  >>> x = '`kept`'" in out and "  '`kept`'" in out
    assert out[-1] == lines[-1]


def test_markdown_code_spans_keep_simple_table_columns():
    table = [
        "  ========== =====",
        "  name       value",
        "  ========== =====",
        "  `embed`    token",
        "  ========== =====",
    ]
    out = saikei_apidoc.markdown_code_spans_to_rst(table)
    assert out[3] == "  ``embed``  token"
    assert len(out[3]) == len(table[3])


def test_constants_do_not_show_their_types_docstring():
    lines = dict.__doc__.splitlines()
    saikei_apidoc._process_docstring(None, "data", "PRESETS", {"a": 1}, {}, lines)
    assert lines == []
    own = ["Presets by name: `small`, `large`."]
    saikei_apidoc._process_docstring(None, "data", "PRESETS", {"a": 1}, {}, own)
    assert own == ["Presets by name: ``small``, ``large``."]

    class Slotted:  # `type(obj).__doc__` is a descriptor here, not a string
        __slots__ = ("__doc__",)

    other = ["Text."]
    saikei_apidoc._process_docstring(None, "attribute", "x", Slotted(), {}, other)
    assert other == ["Text."]


def test_kernel_python3_resolves_to_this_interpreter(monkeypatch):
    """conf.py puts this prefix's kernelspec first; its `python` becomes sys.executable."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv(
        "JUPYTER_PATH",
        os.pathsep.join(
            [str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")]
        ),
    )
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir).is_relative_to(Path(sys.prefix)), spec.resource_dir
    command = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert os.path.realpath(command[0]) == os.path.realpath(sys.executable), command


def _notebook_times(log: str) -> dict[str, float]:
    """`{docname: seconds}` from myst-nb's "Executed notebook in ..." log lines."""
    times, current = {}, None
    for line in log.splitlines():
        reading = re.search(r"reading sources\.\.\. \[\s*\d+%\] (\S+)", line)
        if reading:
            current = reading.group(1)
        executed = re.search(r"Executed notebook in ([\d.]+) seconds", line)
        if executed and current:
            times[current] = float(executed.group(1))
    return times


def _inventory(path: Path) -> dict[str, set[str]]:
    from sphinx.util.inventory import InventoryFile

    with open(path, "rb") as f:
        inventory = InventoryFile.load(f, "", os.path.join)
    data = getattr(inventory, "data", inventory)  # Sphinx < 9 wraps the dict
    return {role: set(entries) for role, entries in data.items()}


@pytest.mark.slow
def test_docs_build_runs_every_tutorial_and_lists_every_public_name(tmp_path):
    out = tmp_path / "html"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="")
    env.pop("XLA_FLAGS", None)  # the sharding tutorial sets its own device count
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going",
            "-D", "nb_execution_mode=force",  # every tutorial runs, once
            "-D", f"nb_execution_cache_path={tmp_path / 'jupyter_cache'}",
            "-d", str(tmp_path / "doctrees"),
            str(DOCS), str(out),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"sphinx-build failed after {elapsed:.0f} s:\n{log[-8000:]}"
    print(f"docs build with execution: {elapsed:.0f} s")
    for name, seconds in _notebook_times(log).items():
        print(f"  {name}: executed in {seconds:.1f} s")

    # Every tutorial was executed and rendered with its outputs.
    tutorials = sorted(p.stem for p in (DOCS / "tutorials").glob("*.md"))
    assert len(tutorials) >= 8, tutorials
    for name in tutorials:
        page = (out / "tutorials" / f"{name}.html").read_text(encoding="utf-8")
        assert 'class="cell_output' in page, f"tutorial {name} has no executed output"
        assert "Traceback (most recent call last)" not in page, f"tutorial {name} shows a traceback"

    # Every public name appears as an object of the API reference.
    inventory = _inventory(out / "objects.inv")
    modules = inventory.get("py:module", set())
    objects = set().union(*(v for k, v in inventory.items() if k.startswith("py:")))
    missing = []
    for module_name in saikei_apidoc.api_modules():
        assert module_name in modules, f"module {module_name} is not documented"
        module = importlib.import_module(module_name)
        names = set(saikei_apidoc.public_names(module_name)) | _runtime_public_names(module_name)
        for name in sorted(names):
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                if value.__name__ not in modules:
                    missing.append(f"{module_name}.{name} (module {value.__name__})")
            elif f"{module_name}.{name}" not in objects:
                missing.append(f"{module_name}.{name}")
    assert not missing, "public names missing from the API reference:\n" + "\n".join(missing)


def test_every_tutorial_is_a_myst_notebook_listed_in_the_index():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for path in sorted((DOCS / "tutorials").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert re.match(r"---\njupytext:", text), f"{path.name} lacks the jupytext front matter"
        assert "```{code-cell} ipython3" in text, f"{path.name} has no code cells"
        assert f"tutorials/{path.stem}\n" in index, f"{path.name} is not in the index toctree"


def test_api_reference_is_generated_from_docstrings_not_listed_by_hand():
    # A new public name needs no docs edit: every page delegates to the directive.
    for page in (DOCS / "api").glob("*.rst"):
        if page.stem == "index":
            continue
        text = page.read_text(encoding="utf-8")
        assert ".. saikei-api::" in text, page
        assert ".. autoclass::" not in text and ".. autofunction::" not in text, page
    assert inspect.isfunction(saikei_apidoc.public_names)
