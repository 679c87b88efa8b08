"""The package's shape: no import cycles between files, no private names across modules, layers kept.

grimp (import-linter's graph library) reads every import statement, including the ones inside
functions, so a lazy import that points upward or closes a cycle is found here too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import mnist_cnn
from mnist_cnn.cli.options import DATASETS

SRC = Path(mnist_cnn.__file__).parent


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("mnist_cnn", cache_dir=None)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in edges[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                comp.append(n)
                if n == m:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in modules:
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles_between_files():
    graph = _graph()
    # package __init__ files that re-export their own submodules are not part of the layering
    graph.remove_module("mnist_cnn")
    cycles = _cycles(graph)
    assert cycles == [], f"import cycles (function-local imports included): {cycles}"


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a graph with a known cycle is reported."""
    graph = grimp.ImportGraph()
    for m in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(m)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.z")
    graph.add_import(importer="a.z", imported="a.x")
    assert _cycles(graph) == [["a.x", "a.y", "a.z"]]


def _private_imports() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_cnn"):
                bad += [
                    f"{path.relative_to(SRC)}:{node.lineno} {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    return bad


def test_no_private_name_is_imported_across_modules():
    assert _private_imports() == []


def test_layers_contract_holds():
    """import-linter's contracts in pyproject.toml (layers, serve never reaches training, acyclic siblings)."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("lint-imports (import-linter) is not installed: pip install -e '.[dev]'")
    root = SRC.parent.parent
    r = subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout


def test_every_subpackage_says_what_it_owns():
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 25, f"{init.relative_to(SRC)} needs a docstring saying what it owns"


def test_cli_dataset_names_match_the_data_specs():
    from mnist_cnn.data.datasets import DATASETS as SPECS

    assert DATASETS == list(SPECS)


def test_errors_live_in_errors_py():
    """Every exception class of the package is defined in errors.py."""
    elsewhere = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases
            ):
                elsewhere.append(f"{path.relative_to(SRC)}:{node.name}")
    assert elsewhere == []


ROOM_LINES = 400  # a module longer than this holds several jobs: split it into rooms


def _files_over(folder: Path, limit: int = ROOM_LINES) -> list[str]:
    """``name: N lines`` for every .py file under ``folder`` longer than ``limit`` lines."""
    long = []
    for path in sorted(folder.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            long.append(f"{path.relative_to(folder)}: {n} lines")
    return long


@pytest.mark.parametrize("package", ["serving", "search", "training", "inference/preprocessing"])
def test_no_file_is_over_400_lines(package):
    assert _files_over(SRC / package) == [], f"split these into rooms of at most {ROOM_LINES} lines"


def test_the_length_check_finds_a_long_file(tmp_path):
    """The check above can fail: a 401-line file is reported, a 400-line one is not."""
    (tmp_path / "ok.py").write_text("x = 1\n" * ROOM_LINES, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (ROOM_LINES + 1), encoding="utf-8")
    assert _files_over(tmp_path) == [f"{Path('sub', 'long.py')}: 401 lines"]
