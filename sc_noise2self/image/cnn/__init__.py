"""Masked CNNs (needs torch): a UNet or DnCNN trained on the noisy images alone.

One module per part: :mod:`.models` (the networks), :mod:`.data` (checks, normalisation,
patches), :mod:`.masker` (hiding pixels, the masked loss), :mod:`.config` (the settings of
a run), :mod:`.training` (the loop, :func:`train`, :func:`denoise_cnn`), :mod:`.predict`
(padding, tiling, test-time augmentation), :mod:`.model` (:class:`Noise2SelfModel`) and
:mod:`.io` (the file format). ``sc_noise2self.image`` loads this package on first use.
"""

from ..._device import require_torch

# Named before any submodule imports torch: without it, a clear message, not "No module".
require_torch("The masked CNNs (image.train, image.denoise with 'unet' or 'dncnn', "
              "saved models, 'sc-noise2self image train' and 'predict')")

from .config import TrainConfig  # noqa: E402
from .masker import Masker  # noqa: E402
from .model import Noise2SelfModel  # noqa: E402
from .models import build_model  # noqa: E402
from .networks import DnCNN, UNet  # noqa: E402
from .training import denoise_cnn, train  # noqa: E402

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
