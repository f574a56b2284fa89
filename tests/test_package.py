"""Tests for the package surface: the `sk` namespace, import cost, single import."""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

import saikei
from saikei import sk

# Optional heavy dependencies that must only load inside the functions that
# need them (DESIGN.md section 1), never at `import saikei`.
_HEAVY_MODULES = ("torch", "transformers", "optax", "orbax", "flax", "gguf", "safetensors")

_NAMESPACES = {"sk": sk, "sk.nx": sk.nx, "sk.chk": sk.chk, "sk.nn": sk.nn}


def _public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in module.__dir__() if not name.startswith("_")]
    public = []
    for name in names:
        value = getattr(module, name, None)
        # A facade may import third-party modules (jax, numpy) for its own use;
        # those are not part of saikei's surface.
        if isinstance(value, types.ModuleType) and not value.__name__.startswith("saikei"):
            continue
        public.append(name)
    return sorted(public)


_SURFACE = [(ns, name) for ns, module in _NAMESPACES.items() for name in _public_names(module)]


def _defined_in_saikei(value: object) -> bool:
    module = getattr(value, "__module__", None)
    if not isinstance(value, type | types.FunctionType | types.ModuleType):
        module = type(value).__module__
    if isinstance(value, types.ModuleType):
        module = value.__name__
    return isinstance(module, str) and module.startswith("saikei")


def _own_docstring(value: object) -> str | None:
    """The docstring a user would read for `value`, not one inherited from a base class."""
    if isinstance(value, type | types.FunctionType | types.ModuleType):
        return value.__doc__
    # An instance of a saikei type (e.g. the `slice` sugar object) is
    # documented by its type.
    return type(value).__doc__


def test_sk_is_importable_from_the_package():
    assert sk.__name__ == "saikei.sk"
    assert saikei.__version__


def test_nx_and_chk_are_the_core_modules():
    assert isinstance(sk.nx, types.ModuleType)
    assert isinstance(sk.chk, types.ModuleType)
    assert sk.nx.__name__ == "saikei.core.named_axes"
    assert sk.chk.__name__ == "saikei.core.shapecheck"


def test_sk_exports_the_core_names():
    expected = {"Struct", "pytree_dataclass", "select", "Parameter", "StateVariable", "nx", "chk"}
    missing = expected - set(sk.__dir__())
    assert not missing, f"sk is missing {sorted(missing)}"


@pytest.mark.parametrize(("namespace", "name"), _SURFACE, ids=[f"{ns}.{n}" for ns, n in _SURFACE])
def test_public_name_is_defined(namespace, name):
    value = getattr(_NAMESPACES[namespace], name)
    assert value is not None, (
        f"{namespace}.{name} is None: the module defining it is still a placeholder "
        "or re-exports a name it does not define."
    )


@pytest.mark.parametrize(("namespace", "name"), _SURFACE, ids=[f"{ns}.{n}" for ns, n in _SURFACE])
def test_public_name_has_a_docstring(namespace, name):
    value = getattr(_NAMESPACES[namespace], name)
    if value is None:
        pytest.fail(f"{namespace}.{name} is None, so it cannot be documented")
    if not _defined_in_saikei(value):
        # A re-exported alias of a foreign object (e.g. `Hashable`) is
        # documented where it is defined.
        return
    doc = _own_docstring(value)
    assert doc and doc.strip(), (
        f"{namespace}.{name} ({value!r}) has no docstring of its own; every public name "
        "needs one (STYLE.md)."
    )


def test_importing_saikei_does_not_import_heavy_optional_dependencies():
    code = (
        "import json, sys\n"
        "import saikei\n"
        "from saikei import sk\n"
        f"heavy = {_HEAVY_MODULES!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps(loaded))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`import saikei` imported optional dependencies: {loaded}"


def test_no_saikei_module_is_imported_twice():
    # Doctest collection and the tests both import saikei modules; if pytest's
    # import mode loaded a file under two names, pytree registrations and
    # isinstance checks would silently split in two.
    names_by_file: dict[str, list[str]] = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and os.sep + "saikei" + os.sep in path:
            names_by_file.setdefault(os.path.realpath(path), []).append(name)
    assert names_by_file, "expected saikei modules in sys.modules"
    duplicated = {path: names for path, names in names_by_file.items() if len(names) > 1}
    assert not duplicated, f"modules imported under several names: {duplicated}"


_README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _readme_blocks(language: str, section: str | None = None) -> list[str]:
    text = _README.read_text(encoding="utf-8")
    if section is not None:
        start = text.index(f"## {section}\n")
        end = text.find("\n## ", start + 1)
        text = text[start : end if end != -1 else None]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_quickstart_is_exactly_two_commands_that_exist():
    (block,) = _readme_blocks("bash", section="Quickstart")
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (_README.parent / command.split()[1]).is_file(), f"{command} names a missing file"


def test_readme_python_examples_run():
    examples = _readme_blocks("python")
    assert examples, "README.md should show Python examples"
    for example in examples:
        exec(compile(example, str(_README), "exec"), {"__name__": "readme_example"})
