"""saikei.core imports nothing from the layers above it, not even lazily."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import saikei.core

CORE = pathlib.Path(saikei.core.__file__).parent
ABOVE = ("nn", "viz", "models", "toolshed", "interp", "distributed", "cli", "sk")


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):  # every import, including those inside functions
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "saikei":
                found += [(node.lineno, f"saikei.{alias.name}") for alias in node.names]
    return found


def test_core_never_imports_an_upper_layer():
    offending = []
    for path in sorted(CORE.rglob("*.py")):
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            parts = module.split(".")
            if parts[0] == "saikei" and len(parts) > 1 and parts[1] in ABOVE:
                offending.append(f"{path.relative_to(CORE.parent)}:{line} imports {module}")
    assert not offending, "\n".join(offending)


_SCRIPT = textwrap.dedent(
    """
    import sys
    import treescope
    import saikei.core as core

    assert "saikei.viz" not in sys.modules, "importing saikei.core loaded saikei.viz"

    @core.pytree_dataclass
    class Pair(core.Struct):
        left: int
        right: int

    # Without saikei.viz, treescope's generic rendering still works.
    plain = treescope.render_to_text(Pair(1, 2))
    assert "left=1" in plain, plain
    try:
        core.select([1, 2]).at(lambda t: t[0]).show_selection()
    except RuntimeError as error:
        assert "import saikei.viz" in str(error), error
    else:
        raise AssertionError("show_selection worked without saikei.viz")

    import saikei.viz  # registers saikei's renderers

    assert treescope.render_to_text(core.named_axes.ones({"a": 2})).startswith("<NamedArray")
    assert "DimVar" in treescope.render_to_text(core.shapecheck.var("n"))
    print("OK")
    """
)


def test_core_works_alone_and_renders_once_viz_is_imported():
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr
