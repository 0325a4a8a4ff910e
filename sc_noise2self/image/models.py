"""Deprecated: the networks moved to :mod:`sc_noise2self.image.cnn.models`.

Importing a name from here still works for one release, with a ``FutureWarning``.
"""

from __future__ import annotations

from .._compat import moved_names

_NAMES = ("MODEL_NAMES", "NORMS", "ConvBlock", "DnCNN", "UNet", "architecture", "build_model")

__getattr__ = moved_names(__name__, {name: f"sc_noise2self.image.cnn.models:{name}"
                                      for name in _NAMES})
