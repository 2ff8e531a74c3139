"""The layers each package's docstring declares hold in the code, and nothing imports in a
circle (the checker is :mod:`tests.layers`; it is shown to catch each kind of breach on a
synthetic tree)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.layers import check_layers, declared_layers, import_cycles

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("package", ["dic_connector", "mpc"])
def test_the_tree_keeps_its_declared_layers(package: str) -> None:
    assert check_layers(ROOT, package) == []


@pytest.mark.parametrize("package", ["dic_connector", "mpc"])
def test_no_import_cycle(package: str) -> None:
    assert import_cycles(ROOT, package) == []


def test_connector_client_and_node_are_one_layer_of_strangers() -> None:
    """The deployables never import each other: the root docstring says so, and the
    layering check enforces what it says."""
    doc = ast.get_docstring(ast.parse((ROOT / "dic_connector" / "__init__.py").read_text()),
                            clean=False) or ""
    layers = declared_layers(doc)
    assert sorted(["connector", "client", "node"]) in [sorted(layer) for layer in layers]
    order = [name for layer in layers for name in layer]
    assert order.index("sources") < order.index("connector")
    assert order.index("trust") < order.index("client")


def test_tests_mirror_the_packages() -> None:
    """Each folder of ``tests/<package>/`` is a package of the same path."""
    strays = [str(folder.relative_to(ROOT)) for base in ("dic_connector", "mpc")
              for folder in (ROOT / "tests" / base).rglob("*")
              if folder.is_dir() and folder.name != "__pycache__"
              and not (ROOT / folder.relative_to(ROOT / "tests") / "__init__.py").is_file()]
    assert strays == []


# -- the checker on a synthetic tree ---------------------------------------------------------

PACKAGE_DOC = '''"""A package.

Modules, in dependency order:

- ``low``     the bottom
- ``mid``     in between
- independent of each other:

  - ``left``  one side
  - ``right`` the other side

- ``high``    the top
"""
'''


def _tree(tmp_path: Path, files: dict[str, str | None]) -> Path:
    """A package ``pkg`` with PACKAGE_DOC's modules, changed by ``files`` (None: absent)."""
    sources = {"pkg/__init__.py": PACKAGE_DOC, "pkg/low.py": "", "pkg/mid.py": "",
               "pkg/left.py": "", "pkg/right.py": "", "pkg/high.py": "", **files}
    for name, text in sources.items():
        if text is None:
            continue
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_a_clean_synthetic_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/mid.py": "from pkg import low\n",
                            "pkg/left.py": "from pkg.mid import x\n",
                            "pkg/right.py": "import pkg.low\n",
                            "pkg/high.py": "from pkg import left, right\n"})
    assert check_layers(root, "pkg") == []
    assert import_cycles(root, "pkg") == []


def test_a_lower_layer_importing_a_higher_one_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/low.py": "from pkg.high import thing\n"})
    assert check_layers(root, "pkg") == [
        "pkg.low (line 1) imports pkg.high: in pkg, 'high' is above 'low'"]


def test_a_function_level_import_counts(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/mid.py": "def f():\n    from pkg import high\n"})
    assert check_layers(root, "pkg") == [
        "pkg.mid (line 2) imports pkg.high: in pkg, 'high' is above 'mid'"]


def test_independent_members_may_not_import_each_other(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/left.py": "from .right import x\n"})
    assert check_layers(root, "pkg") == [
        "pkg.left (line 1) imports pkg.right: in pkg, 'right' is the same layer as 'left'"]


def test_the_rule_applies_at_the_common_ancestor(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "pkg/low.py": None, "pkg/low/__init__.py": '"""Low.\n\nIn dependency order:\n\n'
                                                  '- ``a``\n- ``b``\n"""\n',
        "pkg/low/a.py": "import pkg.mid.deep\n", "pkg/low/b.py": "from pkg.low import a\n",
        "pkg/mid.py": None, "pkg/mid/__init__.py": '"""Mid.\n\nIn dependency order:\n\n'
                                                  '- ``deep``\n"""\n',
        "pkg/mid/deep.py": ""})
    assert check_layers(root, "pkg") == [
        "pkg.low.a (line 1) imports pkg.mid.deep: in pkg, 'mid' is above 'low'"]


def test_unlisted_and_unknown_members_are_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/extra.py": "", "pkg/mid.py": None,
                            "pkg/__main__.py": "from pkg import high\n"})
    assert check_layers(root, "pkg") == [
        "pkg: its docstring's dependency order does not list ['extra']",
        "pkg: its docstring lists ['mid'], which do not exist"]


def test_importing_ones_own_package_init_that_imports_modules_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/__init__.py": PACKAGE_DOC + "from pkg.high import thing\n",
                            "pkg/mid.py": "from pkg import thing\n"})
    assert check_layers(root, "pkg") == [
        "pkg.mid (line 1) imports pkg: its own package, whose __init__ imports the package's "
        "modules; import the module that defines the name instead"]


def test_a_cycle_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/low.py": "def f():\n    import pkg.mid\n",
                            "pkg/mid.py": "import pkg.low\n"})
    assert import_cycles(root, "pkg") == [["pkg.low", "pkg.mid"]]
