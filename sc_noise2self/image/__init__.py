"""Noise2Self for images: J-invariant calibration of classical denoisers and masked CNNs.

The four steps, one module each: :mod:`.masking` splits the pixels into grid phases and
hides one at a time (numpy and torch); :mod:`.invariant` makes any denoiser J-invariant;
:mod:`.scoring` scores a parameter grid by the self-supervised loss; :mod:`.referee`
grades every output against the J-invariant neighbour mean; :mod:`.mixing` mixes the
output with the input; :mod:`.classical` holds the built-in denoisers and their default
grids; :mod:`.selection` picks the best method; :mod:`.noise` estimates the noise variance
that the mixing needs; :mod:`.structure` finds noise correlated along lines and
chooses masks that hide it; :mod:`.units` makes results independent of the image's units.
:mod:`.cnn` trains masked UNets and DnCNNs (it needs torch, and loads on first use, so that
importing this package does not import torch). :mod:`.files` reads and writes TIFF and
OME-Zarr with their axes and scale; :mod:`.blocks` and :mod:`.workflows` denoise files
larger than memory block by block.
"""

from ..results import GridEdgeWarning, expand_grid
from .blocks import calibrate_sample, denoise_blocks, predict_blocks
from .classical import METHODS, Method, available_methods, get_method
from .files import ImageData, read, write
from .invariant import ImageCalibration, denoise_invariant
from .masking import INTERPOLATIONS, grid_masks, masked_inputs, neighbour_kernel, replacement_values
from .mixing import mixed_error, optimal_mix_weight
from .noise import estimate_noise_variance
from .referee import BaselineWarning
from .scoring import calibrate
from .selection import CNN_METHODS, auto_methods, denoise
from .structure import MASKS, NoiseCorrelation, StructuredNoiseWarning, noise_correlation
from .workflows import calibrate_file, predict_file, train_file

# The CNN side needs torch: its names load on first use.
_LAZY = {
    "train": ".cnn.training",
    "denoise_cnn": ".cnn.training",
    "Noise2SelfModel": ".cnn.model",
    "load_model": ".cnn.model",
    "UNet": ".cnn.networks",
    "DnCNN": ".cnn.networks",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CNN_METHODS",
    "INTERPOLATIONS",
    "MASKS",
    "METHODS",
    "BaselineWarning",
    "DnCNN",
    "GridEdgeWarning",
    "ImageCalibration",
    "ImageData",
    "Method",
    "Noise2SelfModel",
    "NoiseCorrelation",
    "StructuredNoiseWarning",
    "UNet",
    "auto_methods",
    "available_methods",
    "calibrate",
    "calibrate_file",
    "calibrate_sample",
    "denoise",
    "denoise_blocks",
    "denoise_cnn",
    "denoise_invariant",
    "estimate_noise_variance",
    "expand_grid",
    "get_method",
    "grid_masks",
    "load_model",
    "masked_inputs",
    "mixed_error",
    "neighbour_kernel",
    "noise_correlation",
    "optimal_mix_weight",
    "predict_blocks",
    "predict_file",
    "read",
    "replacement_values",
    "train",
    "train_file",
    "write",
]
