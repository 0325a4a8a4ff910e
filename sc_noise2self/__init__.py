"""Noise2Self for scverse: calibrate denoisers of single-cell counts and images without clean data.

Submodules ``pp``, ``tl``, ``pl``, ``image`` and ``datasets`` load on first use, so that
``import sc_noise2self`` stays fast.
"""

from __future__ import annotations

import importlib

from ._version import __version__

_SUBMODULES = ("pp", "tl", "pl", "image", "datasets", "diagnostics", "simulation")

__all__ = ["__version__", "split_counts", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    if name == "split_counts":  # the front in pp, which resolves overdispersion="estimate"
        value = importlib.import_module(".pp", __name__).split_counts
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
