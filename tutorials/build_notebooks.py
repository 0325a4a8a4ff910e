"""Write the tutorial notebooks from their jupytext sources (outputs stripped).

Each tutorial is written as a Python script in jupytext's percent format,
``tutorials/NN_name.py``: ``# %%`` starts a code cell, ``# %% [markdown]`` a text cell.
Edit, lint and run it like any script; the notebooks are generated from it:

    python tutorials/build_notebooks.py            # rewrite tutorials/NN_name.ipynb
    python tutorials/build_notebooks.py --check    # exit 1 if a committed notebook differs

``tests/test_docs.py`` runs the check, so a notebook edited by hand (or committed with
outputs) fails the tests. The documentation build executes the notebooks (``.ci/run``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent


def sources() -> list[Path]:
    """The tutorial scripts, in reading order."""
    return sorted(HERE.glob("[0-9][0-9]_*.py"))


def build(source: Path) -> nbformat.NotebookNode:
    """The notebook of one script, with deterministic cell ids so rebuilding changes nothing."""
    notebook = jupytext.read(source, fmt="py:percent")
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"
        cell["metadata"] = {}
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed notebooks instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for source in sources():
        path = source.with_suffix(".ipynb")
        text = nbformat.writes(build(source)) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    orphans = sorted({p.stem for p in HERE.glob("*.ipynb")} - {s.stem for s in sources()})
    if orphans:
        print(f"Notebooks without a source script (delete them): {', '.join(orphans)}")
        return 1
    if stale:
        print(f"Out of date (run python tutorials/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
