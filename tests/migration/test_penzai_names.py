"""Every public V2 name of penzai 0.2.5 has a saikei counterpart or a migration-table entry.

`penzai_v2_public_names.txt` lists penzai 0.2.5's public V2 names, one dotted
name per line (written once by listing the installed package's modules;
`pz.*` are the alias namespaces). Each must exist in saikei under the mapped
module (`_saikei_path`), be named in a table of docs/migration.md, or be in
`missing_names.txt`, the shrinking list of known gaps. That list must stay
accurate: a name that exists or is documented must leave it.
"""

from __future__ import annotations

import functools
import importlib
import pathlib
import re

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
_MODULE_MAP = [
    # (penzai prefix, saikei module), most specific first.
    ("pz.nn.", "saikei.sk.nn"),
    ("pz.nx.", "saikei.sk.nx"),
    ("pz.chk.", "saikei.sk.chk"),
    ("pz.ts.", "saikei.sk.ts"),
    ("pz.", "saikei.sk"),
    ("penzai.core.named_axes.", "saikei.core.named_axes"),
    ("penzai.core.shapecheck.", "saikei.core.shapecheck"),
    ("penzai.core.", "saikei.core"),  # penzai.core.<module>.X -> saikei.core.X
    ("penzai.nn.", "saikei.nn"),  # penzai.nn.<module>.X -> saikei.nn.X
]


def _lines(name: str) -> list[str]:
    text = (HERE / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


PENZAI_NAMES = _lines("penzai_v2_public_names.txt")
KNOWN_MISSING = set(_lines("missing_names.txt"))


def _saikei_path(penzai_name: str) -> tuple[str, str]:
    """(saikei module, attribute) for a penzai name."""
    attribute = penzai_name.rsplit(".", 1)[1]
    for prefix, module in _MODULE_MAP:
        if penzai_name.startswith(prefix):
            if prefix in ("pz.nn.", "pz.nx.", "pz.chk.", "pz.ts.", "pz."):
                return module, attribute
            rest = penzai_name[len(prefix) :]
            if "." in rest and prefix in ("penzai.core.", "penzai.nn."):
                return module, attribute  # flat namespaces in saikei
            return module, attribute
    # penzai.models..., penzai.toolshed...: the same path under saikei.
    return "saikei." + penzai_name.split(".", 1)[1].rsplit(".", 1)[0], attribute


def _exists(penzai_name: str) -> bool:
    module_name, attribute = _saikei_path(penzai_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        parent, _, child = module_name.rpartition(".")
        try:
            module = getattr(importlib.import_module(parent), child)
        except (ImportError, AttributeError):
            return False
    return hasattr(module, attribute)


@functools.cache
def _documented() -> frozenset[str]:
    """Names written in backticks in the first column of a docs/migration.md table."""
    text = (ROOT / "docs" / "migration.md").read_text(encoding="utf-8")
    names = set()
    for line in text.splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([^`]+)`", first_cell))
    return frozenset(names)


def test_the_fixture_lists_penzai_names():
    assert len(PENZAI_NAMES) == len(set(PENZAI_NAMES)) > 300
    assert "pz.select" in PENZAI_NAMES and "pz.nx.nmap" in PENZAI_NAMES
    assert "penzai.models.transformer.variants.llamalike_common.build_llamalike_transformer" in (
        PENZAI_NAMES
    )


@pytest.mark.parametrize("name", PENZAI_NAMES)
def test_penzai_name_has_a_counterpart_or_a_table_entry(name):
    if name in KNOWN_MISSING:
        pytest.skip("known gap, listed in tests/migration/missing_names.txt")
    module, attribute = _saikei_path(name)
    assert _exists(name) or name in _documented(), (
        f"penzai's {name} has no counterpart {module}.{attribute} and is not in a table of"
        " docs/migration.md"
    )


def test_known_missing_names_are_really_missing():
    stale = sorted(n for n in KNOWN_MISSING if _exists(n) or n in _documented())
    assert not stale, f"remove these from tests/migration/missing_names.txt: {stale}"
    unknown = sorted(KNOWN_MISSING - set(PENZAI_NAMES))
    assert not unknown, f"not penzai names: {unknown}"


def test_coverage_count(capsys):
    covered = sum(_exists(n) or n in _documented() for n in PENZAI_NAMES)
    with capsys.disabled():
        print(f"\npenzai 0.2.5 public V2 names covered: {covered} / {len(PENZAI_NAMES)}")
    assert covered + len(KNOWN_MISSING) == len(PENZAI_NAMES)
