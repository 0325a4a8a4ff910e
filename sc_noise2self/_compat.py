"""Leaf: deprecated aliases for names that moved in the one-engine redesign (issue 14).

A module lists what moved and where; reading an old name returns the object from its new
home with a ``FutureWarning`` that names the new import. The target is imported by name at
the moment of use, so an alias never makes a lower layer import a higher one at load time.
They will be removed in the release after the next.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def moved_names(module: str, moves: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that serves ``moves`` (old name -> ``"new.module:new_name"``).

    Parameters
    ----------
    module
        The module that used to define the names (its ``__name__``).
    moves
        Each old name and where it lives now, as ``"package.module:name"``.

    Returns
    -------
    The ``__getattr__`` function to assign in that module.
    """

    def __getattr__(name: str):
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new_module, _, new_name = moves[name].partition(":")
        warnings.warn(
            f"{module}.{name} moved: import it as `from {new_module} import {new_name}`. The "
            "old name will be removed in the next release.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_module), new_name)

    return __getattr__
