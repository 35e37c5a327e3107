"""The layout's rules, checked against the code: what importing loads (each ``--help``:
tests/test_cli_help.py), module and function sizes, and docs/architecture.md naming every
module (in its import-linter layer) and every import-linter contract."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "diffbench"
ARCHITECTURE = REPO / "docs" / "architecture.md"
HEAVY = ("torch", "torchvision", "mlflow", "pydantic")

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60  # decorators and docstring included
STILL_OVER: dict[str, str] = {
    # Modules over a limit while they are being split; their sizes when this list was made.
    # An entry that fits again fails the test below: remove it then.
}


def loaded_after(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running ``code``."""
    probe = (f"import sys\n{code}\n"
             f"import json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_leaf_module_imports_no_torch_nor_the_harness():
    assert loaded_after("import diffbench.core.errors") == []


def test_the_public_names_load_on_first_use():
    import diffbench

    assert set(diffbench.__all__) <= set(dir(diffbench))
    for name in diffbench.__all__:
        assert getattr(diffbench, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        diffbench.no_such_name  # noqa: B018


def modules() -> dict[str, Path]:
    """Each module of the package by its path under diffbench/ (``sampling/base.py``)."""
    return {path.relative_to(PACKAGE).as_posix(): path for path in sorted(PACKAGE.rglob("*.py"))}


def oversized(path: Path) -> list[str]:
    """What in ``path`` is over a limit: the module, and each function by qualified name."""
    text = path.read_text(encoding="utf-8")
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{len(text.splitlines())} lines")

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{getattr(child, 'name', '')}"
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                length = child.end_lineno - first + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{name} {length} lines")
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, f"{name}.")

    visit(ast.parse(text), "")
    return found


def test_no_module_over_300_lines_nor_function_over_60():
    over = {name: oversized(path) for name, path in modules().items()}
    assert {name: found for name, found in over.items()
            if found and name not in STILL_OVER} == {}
    assert [name for name in STILL_OVER if not over.get(name)] == [], \
        "these fit now: remove them from STILL_OVER"


def layer_table() -> list[tuple[str, set[str]]]:
    """(layer, the names in its row) of the table in docs/architecture.md, top row first."""
    rows = []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and cells[0] not in ("layer", "---"):
            rows.append((cells[0], set(re.findall(r"`([\w/]+(?:\.py|/))`", cells[1]))))
    return rows


def documented_name(module: str) -> str:
    """How the table names ``module``: a package by its folder (``sampling/``)."""
    if module.endswith("/__init__.py"):
        return module.removesuffix("__init__.py")
    return module


def importlinter() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "importlinter"]


def test_every_module_is_in_the_layer_table():
    named = set().union(*(names for _, names in layer_table()))
    assert {documented_name(m) for m in modules()} - named == set()
    assert named - {documented_name(m) for m in modules()} == set(), "named but not there"


def test_the_layer_table_agrees_with_the_layer_contract():
    """Each module sits in the table's row of the import-linter layer that holds it (the table
    lists the layers bottom up, the contract top down)."""
    (contract,) = [c for c in importlinter()["contracts"]
                   if c["name"].startswith("diffbench layers:")]
    layers = [[m.strip() for m in layer.split(":")] for layer in reversed(contract["layers"])]
    table = layer_table()
    assert len(table) == len(layers)
    misplaced = []
    for (row, names), layer in zip(table, layers):
        for name in names - {"__init__.py"}:  # the root package is no layer's
            dotted = "diffbench." + name.removesuffix(".py").rstrip("/").replace("/", ".")
            if name.endswith("/") and not any(dotted in other for other in layers) and (
                    "import" not in (PACKAGE / name / "__init__.py").read_text()):
                continue  # a folder of modules of several layers, its __init__ a docstring
            if not any(dotted == m or dotted.startswith(m + ".") for m in layer):
                misplaced.append(f"{name} (table: {row})")
    assert misplaced == []


def test_every_contract_is_named_in_the_architecture_page():
    text = " ".join(ARCHITECTURE.read_text(encoding="utf-8").split())
    assert [c["name"] for c in importlinter()["contracts"] if c["name"] not in text] == []


def test_the_sampling_contract_orders_every_module_of_the_sampler_core():
    (contract,) = [c for c in importlinter()["contracts"]
                   if c["name"].startswith("diffbench sampling:")]
    ordered = {name.strip() for layer in contract["layers"]
               for name in layer.replace("|", ":").split(":")}
    core = {"diffbench." + m.removesuffix(".py").replace("/", ".") for m in modules()
            if m.startswith("sampling/") and not m.endswith("__init__.py")}
    assert ordered == core


def test_every_harness_module_is_in_one_group_of_the_harness_contracts():
    """The harness's forbidden-import contracts name each of its modules as the source of
    exactly one group."""
    contracts = importlinter()["contracts"]
    (layers,) = [c for c in contracts if c["name"].startswith("diffbench layers:")]
    harness = {m.strip() for m in layers["layers"][2].split(":")}
    groups = [c["source_modules"] for c in contracts
              if c["name"].startswith("diffbench harness:")]
    grouped = [module for group in groups for module in group]
    assert sorted(grouped) == sorted(harness)
