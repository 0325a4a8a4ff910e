"""The one-engine layout (issue 14), enforced: layers, no circles, no private imports, sizes.

The layer contracts live in pyproject.toml and run through import-linter; the other rules
are read from the source with ``ast``, so they need nothing but the files.
"""

from __future__ import annotations

import ast
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sc_noise2self"
ROOT = PACKAGE.parent
MAX_LINES = 600
# Heavy or optional libraries that may be imported inside a function, so that importing the
# package stays fast and works without them.
LAZY_LIBRARIES = {
    "torch", "dask", "distributed", "napari", "scanpy", "skimage", "matplotlib", "tqdm",
    "joblib", "pooch", "bm3d", "scvi", "tifffile", "zarr", "ome_zarr", "magic", "h5py",
    "sklearn", "scprep", "numba", "importlib", "pynndescent", "igraph", "bioimageio", "yaml",
}
# Our own modules that import torch at their top: reaching them lazily is reaching torch.
TORCH_MODULES = "sc_noise2self.image.cnn"
# Modules that import a heavy library at their top (numba, torch): imported inside functions.
HEAVY_MODULES = (TORCH_MODULES, "sc_noise2self._count_kernels", "sc_noise2self._sparse_kernels",
                 "sc_noise2self.denoisers.pca_torch")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path):
    """``(target module, imported names, inside a function)`` for each import statement."""
    name = module_name(path)
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], id(node) in inside
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, name, path.name == "__init__.py")
            yield target, [a.name for a in node.names], id(node) in inside


def own_targets(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The package's modules an import statement loads (``from . import tl`` loads tl)."""
    if not target.startswith("sc_noise2self"):
        return []
    found = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    return found or ([target] if target in known else [])


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {name: set() for name in known}
    for name, path in known.items():
        for target, names, _ in imports_of(path):
            graph[name].update(t for t in own_targets(target, names, known) if t != name)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first walk of ``graph`` meets, less packages importing their own."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    # A package's __init__ importing its own submodules is how packages work, not a circle.
    return [c for c in cycles if not any(b.startswith(a + ".") for a, b in itertools.pairwise(c))]


def test_no_import_circles():
    cycles = import_circles(import_graph())
    assert not cycles, f"import circles: {cycles}"


def test_the_circle_check_finds_a_circle():
    # The check itself, on graphs with a known answer (it asserted a dict it had just built).
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_circles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    assert import_circles({"p": {"p.x"}, "p.x": {"p"}}) == []  # a package and its module
    # The real graph, with one upward import added, has a circle.
    graph = import_graph()
    graph["sc_noise2self.splitting"] = {*graph["sc_noise2self.splitting"], "sc_noise2self.tl"}
    assert import_circles(graph)
    assert resolve(ast.parse("from ..x import y").body[0], "sc_noise2self.image.masking",
                   False) == "sc_noise2self.x"


def test_function_level_imports_are_only_for_heavy_optional_libraries():
    known = modules()
    offenders = []
    for name, path in known.items():
        for target, names, inside in imports_of(path):
            if not inside:
                continue
            if target.startswith("sc_noise2self"):
                if not all(t.startswith(HEAVY_MODULES) for t in own_targets(target, names, known)):
                    offenders.append(f"{name}: {target}")
            elif target.split(".")[0] not in LAZY_LIBRARIES:
                offenders.append(f"{name}: {target}")
    assert not offenders, offenders


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for name, path in modules().items():
        for target, names, _ in imports_of(path):
            if target.startswith("sc_noise2self"):
                offenders += [f"{name}: {target}.{n}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
    assert not offenders, offenders


def test_no_module_is_over_600_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_import_linter_contracts_hold():
    result = subprocess.run(["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, sc_noise2self; "
            "print(sorted(m for m in ('torch', 'scanpy', 'dask', 'sklearn', 'numba', 'scvi') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_a_missing_torch_names_the_extra(monkeypatch):
    # Issue 26: torch is an extra; a step that needs it says which, before any work.
    import importlib.util

    import sc_noise2self as n2s
    from sc_noise2self import _device

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install -e '\.\[torch\]'"):
        _device.resolve_device("cpu")
    adata = n2s.simulation.simulate_counts(60, 30, (1.0,), random_state=0)
    with pytest.raises(ImportError, match="needs PyTorch"):
        n2s.tl.calibrate_autoencoder(adata, max_epochs=1)


def twin_table_rows() -> list[list[str]]:
    """The rows of docs/architecture.md's "One algorithm, two backends" table, as cells."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## One algorithm, two backends", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def defined_functions(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef)}


def test_every_twin_in_the_backend_table_exists_and_has_its_equality_test():
    # Issue 26: kernels kept on two backends must be listed, and each pair tested equal.
    # Fails when a twin is renamed or its test removed without the table following.
    rows = twin_table_rows()
    assert len(rows) >= 5
    for algorithm, _, cpu, device, test in rows:
        for named in (cpu, device):
            module, function = named.strip("`").rsplit(".", 1)
            path = PACKAGE / (module.replace(".", "/") + ".py")
            assert function in defined_functions(path), f"{algorithm}: {named} is not defined"
        test_file, test_name = test.split(" ")[0].strip("`").split("::")
        assert test_name in defined_functions(ROOT / test_file), f"{algorithm}: {test} is gone"
