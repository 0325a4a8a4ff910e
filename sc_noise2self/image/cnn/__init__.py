"""Masked CNNs (needs torch): a UNet or DnCNN trained on the noisy images alone.

One module per part: :mod:`.models` (the networks), :mod:`.data` (checks, normalisation,
patches), :mod:`.masker` (hiding pixels, the masked loss), :mod:`.config` (the settings of
a run), :mod:`.training` (the loop, :func:`train`, :func:`denoise_cnn`), :mod:`.predict`
(padding, tiling, test-time augmentation), :mod:`.model` (:class:`Noise2SelfModel`) and
:mod:`.io` (the file format). ``sc_noise2self.image`` loads this package on first use.
"""

from .config import TrainConfig
from .masker import Masker
from .model import Noise2SelfModel
from .models import DnCNN, UNet, build_model
from .training import denoise_cnn, train

__all__ = [
    "DnCNN",
    "Masker",
    "Noise2SelfModel",
    "TrainConfig",
    "UNet",
    "build_model",
    "denoise_cnn",
    "train",
]
