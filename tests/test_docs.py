"""Documentation checks: numpy docstrings on the public API, API pages, tutorial notebooks.

Every public function of ``pp``, ``tl``, ``pl``, ``image`` and ``datasets`` needs a docstring
with a Returns section and, when it takes parameters, a Parameters section naming each of
them; and it must be listed in an autosummary of ``docs/api.rst``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "docs" / "api.rst"
MODULES = ("pp", "tl", "pl", "image", "datasets", "diagnostics", "calibration")


def public_objects(module) -> dict[str, object]:
    """Functions and classes a user reaches as ``module.name``.

    With ``__all__`` that is the list (re-exports included); without it, the names not
    starting with ``_`` that the module defines itself (not what it imports).
    """
    exported = getattr(module, "__all__", None)
    names = exported if exported is not None else [n for n in vars(module) if n[0] != "_"]
    objects = {}
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # constants such as image.METHODS
        if exported is None and getattr(obj, "__module__", None) != module.__name__:
            continue
        objects[name] = obj
    return objects


def public_functions(module) -> dict[str, object]:
    """The functions among :func:`public_objects`."""
    return {n: o for n, o in public_objects(module).items() if inspect.isfunction(o)}


def docstring_sections(doc: str) -> dict[str, list[str]]:
    """numpy-style sections (a title underlined by dashes) and their lines."""
    lines = inspect.cleandoc(doc).splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for line, below in zip(lines, [*lines[1:], ""], strict=True):
        if re.fullmatch(r"-{3,}", line.strip()):
            continue
        if line.strip() and re.fullmatch(r"-{3,}", below.strip()):
            current = line.strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def documented_parameters(lines: list[str]) -> set[str]:
    """Names on the unindented lines of a Parameters section (``a, b : type`` allowed)."""
    names = set()
    for line in lines:
        if line and not line[0].isspace():
            names.update(part.strip().lstrip("*") for part in line.split(" : ")[0].split(","))
    return names


def docstring_problems(function) -> list[str]:
    """What is missing from ``function``'s numpy docstring; empty when it is complete."""
    doc = inspect.getdoc(function)
    if not doc:
        return ["no docstring"]
    sections = docstring_sections(doc)
    problems = [] if "Returns" in sections else ["no Returns section"]
    parameters = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    if parameters and "Parameters" not in sections:
        problems.append("no Parameters section")
    elif parameters:
        missing = sorted(set(parameters) - documented_parameters(sections["Parameters"]))
        if missing:
            problems.append(f"parameters not documented: {missing}")
    return problems


def api_page_entries(text: str) -> set[str]:
    """Fully qualified names listed in the autosummary blocks of an rst page."""
    entries, module, in_summary = set(), "", False
    for line in text.splitlines():
        if match := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = match.group(1)
        elif line.startswith(".. autosummary::"):
            in_summary = True
        elif in_summary and line and not line[0].isspace():
            in_summary = False
        elif in_summary and line.strip() and not line.strip().startswith(":"):
            entries.add(f"{module}.{line.strip().lstrip('~')}")
    return entries


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_parameters_and_returns(name):
    module = importlib.import_module(f"sc_noise2self.{name}")
    functions = public_functions(module)
    assert functions, f"no public functions found in sc_noise2self.{name}"
    problems = {f: p for f, function in functions.items() if (p := docstring_problems(function))}
    assert not problems, f"sc_noise2self.{name}: {problems}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_object_is_on_the_api_page(name):
    module = importlib.import_module(f"sc_noise2self.{name}")
    listed = api_page_entries(API_PAGE.read_text())
    missing = sorted(set(public_objects(module)) - {e.rsplit(".", 1)[1] for e in listed
                                                    if e.startswith(f"{module.__name__}.")})
    assert not missing, f"not in an autosummary of docs/api.rst: sc_noise2self.{name}.{missing}"


def test_every_api_page_entry_exists():
    for entry in api_page_entries(API_PAGE.read_text()):
        module_name, attribute = entry.rsplit(".", 1)
        assert hasattr(importlib.import_module(module_name), attribute), entry


def test_checks_catch_what_they_look_for():
    def undocumented(x, y=1):
        return x

    def no_returns(x, y=1):
        """Do something.

        Parameters
        ----------
        x
            A value.
        """

    def complete(adata, p, q, *, flag=False, **kwargs):
        """Do something.

        Parameters
        ----------
        adata
            Data.
        p, q : float
            Two numbers.
        flag
            A switch.
        **kwargs
            More.

        Returns
        -------
        Nothing.
        """

    assert docstring_problems(undocumented) == ["no docstring"]
    assert docstring_problems(no_returns) == [
        "no Returns section", "parameters not documented: ['y']"
    ]
    assert docstring_problems(complete) == []
    page = (".. currentmodule:: pkg.mod\n\n.. autosummary::\n   :toctree: generated\n\n"
            "   f\n   g\n\nText\n   h\n")
    assert api_page_entries(page) == {"pkg.mod.f", "pkg.mod.g"}


def test_tutorials_are_built_from_their_scripts_and_stripped():
    """The committed notebooks equal what build_notebooks.py makes of their jupytext scripts."""
    import nbformat

    result = subprocess.run([sys.executable, str(ROOT / "tutorials" / "build_notebooks.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    notebooks = sorted((ROOT / "tutorials").glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        assert notebook.cells[-1].cell_type == "markdown"
        assert "What you learned" in notebook.cells[-1].source, path.name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_every_module_is_in_the_architecture_page():
    # Issue 26: 13 modules were not mentioned. Fails when a module is added without a line.
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "sc_noise2self"
    missing = [path.relative_to(package).as_posix() for path in sorted(package.rglob("*.py"))
               if f"| `{path.relative_to(package).as_posix()}` |" not in page]
    assert not missing, f"add a line to docs/architecture.md's 'Every module' for {missing}"
