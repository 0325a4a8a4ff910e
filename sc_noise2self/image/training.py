"""Deprecated: the masked CNNs moved to the package :mod:`sc_noise2self.image.cnn`.

Importing a name from here still works for one release, with a ``FutureWarning`` that
names its new module (devices and mixed precision now live in ``sc_noise2self._device``).
"""

from __future__ import annotations

from .._compat import moved_names

_CNN = "sc_noise2self.image.cnn"
_HOMES = {
    "sc_noise2self._device": ("DEVICES", "resolve_amp", "resolve_device"),
    f"{_CNN}.config": ("CPU_COMPILE_MIN_SECONDS", "CPU_COMPILE_MIN_STEPS", "DEFAULT_STEPS",
                       "EARLY_STOP_FROM", "TRAINING_DEFAULTS", "TrainConfig"),
    f"{_CNN}.data": ("MIN_TRAIN_SIZE", "PERCENTILES", "ImageLike", "Layout", "Normalisation",
                     "PatchSampler", "parse_patch_size", "prepare_images", "split_validation"),
    f"{_CNN}.masker": ("MASKINGS", "REPLACEMENTS", "Masker", "masked_loss"),
    f"{_CNN}.model": ("Noise2SelfModel",),
    f"{_CNN}.predict": ("Tiler", "padded_forward"),
    f"{_CNN}.training": ("denoise_cnn", "train"),
}  # fmt: skip

__getattr__ = moved_names(__name__, {name: f"{new}:{name}" for new, names in _HOMES.items()
                                        for name in names})
