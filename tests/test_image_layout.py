"""The image package's layout: lazy torch, deprecated old paths, and its import rules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[1] / "sc_noise2self" / "image"
#: What the image package may import from the rest of sc_noise2self: the leaves (the shared
#: record among them), never the single-cell modules. Circles, private names, lazy imports
#: and module sizes are checked for the whole package in test_architecture.py.
ALLOWED_OUTSIDE = {"_validation", "_rng", "_device", "_progress", "_cores", "results", "io"}


def modules() -> dict[str, tuple[ast.Module, bool]]:
    """Every module of the image package by dotted name below ``image``: its tree, and
    whether it is a package's ``__init__``."""
    found = {}
    for path in sorted(IMAGE.rglob("*.py")):
        parts = path.relative_to(IMAGE).with_suffix("").parts
        name = ".".join(part for part in parts if part != "__init__")
        found[name] = (ast.parse(path.read_text(), filename=str(path)), path.stem == "__init__")
    return found


def imports(module: str, tree: ast.Module, is_package: bool):
    """``(target, names, at_top)`` for every relative import of a module; ``target`` is
    dotted below ``sc_noise2self`` (``"image.masking"``, ``"_validation"``)."""
    own = ["image", *module.split(".")] if module else ["image"]
    package = own if is_package else own[:-1]
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, node.module] if node.module else base)
            yield target, [a.name for a in node.names], id(node) in top


def all_imports():
    """``(module, target, names, at_top)`` over the whole image package."""
    for module, (tree, is_package) in modules().items():
        for target, names, at_top in imports(module, tree, is_package):
            yield module, target, names, at_top


def test_importing_the_image_package_does_not_import_torch():
    code = "import sc_noise2self.image, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cnn_names_load_lazily_from_the_new_package():
    torch = pytest.importorskip("torch")
    from sc_noise2self import image
    from sc_noise2self.image import cnn

    assert torch.nn.Module in image.UNet.__mro__
    for name in ("train", "denoise_cnn", "Noise2SelfModel", "UNet", "DnCNN"):
        assert getattr(image, name) is getattr(cnn, name)


def test_only_the_leaves_and_the_engine_are_imported_from_outside():
    outside = {target.split(".")[0] for _, target, _, _ in all_imports()
               if target.split(".")[0] != "image"}  # fmt: skip
    assert outside <= ALLOWED_OUTSIDE, outside - ALLOWED_OUTSIDE
