"""Sphinx configuration of the sc_noise2self documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (after ``pip install -e ".[docs]"``).
With ``SC_NOISE2SELF_DOCS_EXECUTE=1`` (and ``$SC_NOISE2SELF_DATA`` set) every tutorial is run
during the build and the site shows its figures; an error in any cell fails the build. CI
builds the site that way (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import sc_noise2self  # noqa: E402

project = "sc_noise2self"
author = "sc_noise2self developers"
copyright = "2026, sc_noise2self developers"
release = version = sc_noise2self.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# The notebooks live in ../tutorials (where CI runs them); Sphinx only reads files under
# this folder, so copy them in on every build (docs/tutorials/ is git-ignored).
_TUTORIALS = HERE / "tutorials"
shutil.rmtree(_TUTORIALS, ignore_errors=True)
_TUTORIALS.mkdir()
for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
    shutil.copy2(notebook, _TUTORIALS / notebook.name)
# The screenshots the napari tests take (tutorial 07 shows them).
if (ROOT / "tutorials" / "images").is_dir():
    shutil.copytree(ROOT / "tutorials" / "images", _TUTORIALS / "images")

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Run the notebooks during the build when asked (CI does, and so should a published site:
# the committed notebooks have no outputs). Off by default, so that a quick local build of the
# API pages needs neither the data nor the eight minutes. Executed outputs are cached by
# jupyter-cache, keyed by each notebook's code: a rebuild runs only the notebooks whose code
# changed (CI starts from a clean clone, so it runs them all). The cache does not see changes
# to the package: delete docs/_build/.jupyter_cache to run every notebook again. myst-nb runs
# each notebook in its own folder (docs/tutorials), where tutorial 07 finds its screenshots.
nb_execution_mode = "cache" if os.environ.get("SC_NOISE2SELF_DOCS_EXECUTE") == "1" else "off"
nb_execution_cache_path = str(ROOT / "docs" / "_build" / ".jupyter_cache")
nb_execution_in_temp = False
nb_execution_timeout = 900
nb_execution_raise_on_error = True
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_mock_imports: list[str] = []

# numpy-style docstrings. Our Returns sections are prose (what is written where, scanpy
# style), not "name : type" lists, so they render as a plain titled section.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True  # dataclass "Attributes" as fields, not duplicate attribute entries
napoleon_use_rtype = False
napoleon_custom_sections = ["Returns"]

html_theme = "sphinx_book_theme"
html_title = "sc_noise2self"
html_theme_options = {
    "repository_url": "https://github.com/sc-noise2self/sc_noise2self",
    "use_repository_button": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
