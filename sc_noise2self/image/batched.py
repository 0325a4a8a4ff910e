"""Denoisers evaluated for several parameter sets at once, on one phase's pixels only.

The calibration needs a denoiser's output only on the hidden phase of each masked copy
(a sixteenth of the pixels at stride 4 in 2D), and a grid that varies only a weight's
scale can share everything else. :func:`nl_means_phase` does both for scikit-image's fast
non-local means: for every patch shift it computes the patch distances once, at the phase's
pixels only, and turns them into weights for every ``h`` of the grid.

It replays the steps of ``skimage.restoration.denoise_nl_means(fast_mode=True)``
(scikit-image 0.26, ``_fast_nl_means_denoising_2d/3d``) in float64: reflect padding by
``patch_size // 2 + patch_distance + 1``, patch distances summed over a box of
``2 * (patch_size // 2)`` pixels per axis, the noise term ``2 * sigma**2`` per channel, the
cut-off at distance 5 and Schraudolph's approximate exponential (``fast_exp.h``). Only the
order of the sums differs, so outputs agree to rounding (tests compare them on every phase).
Where a grid or a mask is not of that form, :func:`batch_for` returns None and the caller
runs the denoiser itself.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
from collections.abc import Callable

import numpy as np

#: scikit-image's fast_exp.h: 2**20 / ln 2 and the bias that minimises the RMS error.
_EXP_A = 1512775.3951951856938
_EXP_BC = 1072632447
#: scikit-image skips shifts whose normalised patch distance exceeds this (weight 0).
_DISTANCE_CUTOFF = 5.0
#: Elements of one band of the padded image: bands bound the temporaries of a phase.
_BAND_ELEMENTS = 2**17

Mask = tuple[slice, ...]
#: ``batch(masked, mask, grid, channel_axis)``: each parameter set's output on ``mask``.
Batch = Callable[[np.ndarray, Mask, list[dict], "int | None"], list[np.ndarray]]


def fast_exp(y: np.ndarray) -> np.ndarray:
    """Schraudolph's exponential, bit for bit as scikit-image's ``_fast_exp`` computes it.

    Parameters
    ----------
    y
        Float64 values in about [-700, 0].

    Returns
    -------
    The approximation of ``exp(y)`` (within about 4 percent), a new float64 array.
    """
    bits = np.multiply(y, _EXP_A).astype(np.int64)  # C's int cast truncates toward zero
    bits += _EXP_BC
    bits <<= 32  # the high word of the double; the low word is zero
    return bits.view(np.float64)


def batch_for(method: str | None, grid: list[dict], mask: Mask,
              channel_axis: int | None = None) -> Batch | None:
    """The batched evaluator of ``method`` for ``grid`` on masks like ``mask``, or None.

    Parameters
    ----------
    method
        Registry name of a built-in method (None: a user's callable).
    grid
        Parameter sets in working units.
    mask
        A phase, as made by :func:`~sc_noise2self.image.masking.grid_masks`.
    channel_axis
        Non-negative channel axis, or None.

    Returns
    -------
    :func:`nl_means_grid` for non-local means on a grid phase; :func:`wavelet_grid` for
    BayesShrink wavelets with a given ``sigma`` on an image without channels; None
    otherwise, or under a scikit-image release not in :data:`REPLAYED_SKIMAGE` (the caller
    then runs the denoiser once per parameter set).
    """
    if not _replayed_version():
        return None  # another scikit-image may compute differently: run it as it is
    if method == "nl_means" and all(isinstance(s, slice) for s in mask):
        if all(set(p) <= {"h", "patch_size", "patch_distance", "sigma"} and "h" in p
               and p.get("sigma", 0.0) is not None and p["h"] > 0 for p in grid):
            return nl_means_grid  # other grids get scikit-image's own errors or divisions
    if method == "wavelet" and channel_axis is None and all(map(_plain_wavelet, grid)):
        return wavelet_grid
    return None


#: scikit-image's own denoisers whose calls a batch replays, by their built-in method's name:
#: the keywords a replay reads, and those that change nothing on the float masked copies
#: (``preserve_range``, ``rescale_sigma``) or only at these values.
_SKIMAGE_REPLAYS = {
    "denoise_nl_means": ("nl_means", {"h", "patch_size", "patch_distance", "sigma"},
                         {"fast_mode": True, "preserve_range": None}),
    "denoise_wavelet": ("wavelet", {"sigma", "wavelet", "mode", "wavelet_levels", "method"},
                        {"rescale_sigma": None, "convert2ycbcr": False}),
}


def batch_for_callable(denoiser: Callable, grid: list[dict], mask: Mask,
                       channel_axis: int | None = None) -> tuple[Batch | None, list[dict]]:
    """The batched evaluator of a user's callable, when it is one scikit-image's replays cover.

    scikit-image users calibrate ``skimage.restoration.denoise_nl_means`` or
    ``denoise_wavelet`` themselves, or a ``functools.partial`` of one with keywords; those
    run as :func:`batch_for` runs the built-in methods, with scikit-image's own defaults
    filled in (its non-local means uses ``patch_size=7, patch_distance=11``).

    Parameters
    ----------
    denoiser
        The user's callable.
    grid
        Its parameter sets, as it will be called with them.
    mask, channel_axis
        As for :func:`batch_for`.

    Returns
    -------
    The batch (None when the callable is not covered) and the parameter sets it receives:
    each of ``grid`` with the partial's keywords and the function's defaults filled in.
    """
    function, fixed = unwrap_partial(denoiser)
    replay = _SKIMAGE_REPLAYS.get(getattr(function, "__name__", ""))
    if fixed is None or replay is None or not _is_skimage_restoration(function):
        return None, grid
    name, read, ignored = replay
    defaults = _keyword_defaults(function, read)
    full = []
    for params in grid:
        merged = {**defaults, **fixed, **params}
        for key, value in ignored.items():
            if key in merged and value is not None and merged[key] != value:
                return None, grid  # e.g. fast_mode=False: another algorithm
            merged.pop(key, None)
        if not set(merged) <= read:
            return None, grid
        full.append(merged)
    batch = batch_for(name, full, mask, channel_axis)
    return (batch, full) if batch is not None else (None, grid)


def unwrap_partial(denoiser: Callable) -> tuple[Callable, dict | None]:
    """The function under nested ``functools.partial`` and their keywords.

    Returns
    -------
    The innermost function (or the first partial with positional arguments) and the
    keywords bound on the way, None when positional arguments were bound.
    """
    fixed: dict = {}
    while isinstance(denoiser, functools.partial):
        if denoiser.args:
            return denoiser, None
        fixed = {**denoiser.keywords, **fixed}
        denoiser = denoiser.func
    return denoiser, fixed


def _is_skimage_restoration(function: Callable) -> bool:
    from skimage import restoration

    return getattr(restoration, getattr(function, "__name__", ""), None) is function


def _keyword_defaults(function: Callable, names: set[str]) -> dict:
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names
            if name in parameters and parameters[name].default is not inspect.Parameter.empty}


#: The scikit-image releases whose denoise_nl_means and denoise_wavelet these replays were
#: tested against, value for value (tests/test_image_streaming.py).
REPLAYED_SKIMAGE = ("0.26",)


def _replayed_version() -> bool:
    import skimage

    return skimage.__version__.startswith(REPLAYED_SKIMAGE)


def _plain_wavelet(params: dict) -> bool:
    """Whether ``denoise_wavelet`` runs these parameters as :func:`wavelet_grid` replays."""
    pywt = _pywt()
    return (set(params) <= {"sigma", "wavelet", "mode", "wavelet_levels", "method"}
            and params.get("sigma") is not None
            and params.get("method", "BayesShrink") == "BayesShrink"
            and pywt.Wavelet(params.get("wavelet", "db1")).orthogonal)


def _pywt():
    # PyWavelets is optional (the "wavelet" method requires it); load it when used, the way
    # classical.require checks for it.
    import importlib

    return importlib.import_module("pywt")


def wavelet_grid(masked: np.ndarray, mask: Mask, grid: list[dict],
                 channel_axis: int | None = None) -> list[np.ndarray]:
    """BayesShrink wavelet denoising for every ``sigma`` of ``grid``, one decomposition each.

    Replays ``skimage.restoration.denoise_wavelet`` on a float image without channels
    (``_wavelet_threshold``): the decomposition and the detail energies depend only on
    the image, so parameter sets that share ``wavelet``, ``mode`` and ``wavelet_levels``
    share them; the thresholds, the shrinkage and the reconstruction are per ``sigma``.

    Parameters
    ----------
    masked
        Float image without a channel axis.
    mask
        The phase whose pixels are returned.
    grid
        Parameter sets accepted by :func:`batch_for`.
    channel_axis
        Must be None.

    Returns
    -------
    One array per parameter set, equal to ``wavelet(masked, **params)[mask]``.
    """
    pywt = _pywt()
    keys = [(p.get("wavelet", "db1"), p.get("mode", "soft"), p.get("wavelet_levels"))
            for p in grid]
    outputs: list[np.ndarray | None] = [None] * len(grid)
    extent = tuple(slice(n) for n in masked.shape)
    for name, mode, levels in dict.fromkeys(keys):
        wavelet = pywt.Wavelet(name)
        if levels is None:  # scikit-image's default: three levels fewer than the most
            levels = max(pywt.dwtn_max_level(masked.shape, wavelet) - 3, 1)
        coeffs = pywt.wavedecn(masked, wavelet=wavelet, level=levels)
        energies = [{key: np.mean(level[key] * level[key]) for key in level}
                    for level in coeffs[1:]]
        eps = np.finfo(masked.dtype).eps
        for i, key in enumerate(keys):
            if key != (name, mode, grid[i].get("wavelet_levels")):
                continue
            var = grid[i]["sigma"] ** 2
            shrunk = [{k: pywt.threshold(level[k], value=var / np.sqrt(max(energy[k] - var,
                                                                             eps)), mode=mode)
                       for k in level} for level, energy in zip(coeffs[1:], energies, strict=True)]
            out = pywt.waverecn([coeffs[0], *shrunk], wavelet)[extent]
            outputs[i] = out[mask].astype(masked.dtype)
    return outputs  # type: ignore[return-value]


def nl_means_grid(masked: np.ndarray, mask: Mask, grid: list[dict],
                  channel_axis: int | None) -> list[np.ndarray]:
    """Non-local means of every parameter set of ``grid``, on the pixels of ``mask`` only.

    Parameter sets that share ``patch_size``, ``patch_distance`` and ``sigma`` share one
    pass over the patch shifts.

    Parameters
    ----------
    masked
        The masked copy (any float dtype; the outputs are rounded to it, as scikit-image
        rounds its float64 result).
    mask
        The phase: one slice per axis, the channel axis taken whole.
    grid
        Parameter sets of :func:`~sc_noise2self.image.classical.nl_means`.
    channel_axis
        Non-negative channel axis, or None.

    Returns
    -------
    One array per parameter set, equal to ``nl_means(masked, **params)[mask]``.
    """
    keys = [(p.get("patch_size", 5), p.get("patch_distance", 6), p.get("sigma", 0.0))
            for p in grid]
    outputs: list[np.ndarray | None] = [None] * len(grid)
    for key in dict.fromkeys(keys):
        members = [i for i, other in enumerate(keys) if other == key]
        values = nl_means_phase(masked, mask, [grid[i]["h"] for i in members], *key,
                                channel_axis=channel_axis)
        for i, value in zip(members, values, strict=True):
            outputs[i] = value
    return outputs  # type: ignore[return-value]


def nl_means_phase(masked: np.ndarray, mask: Mask, hs: list[float], patch_size: int = 5,
                   patch_distance: int = 6, sigma: float = 0.0, *,
                   channel_axis: int | None = None) -> list[np.ndarray]:
    """Fast non-local means at the pixels of one phase, for several ``h`` at once.

    Parameters
    ----------
    masked
        2D or 3D image, optionally with channels.
    mask
        One slice per axis (the channel axis whole).
    hs
        Cut-off distances, in the image's units.
    patch_size, patch_distance, sigma
        As in ``skimage.restoration.denoise_nl_means``.
    channel_axis
        Non-negative channel axis, or None.

    Returns
    -------
    One array of ``masked[mask]``'s shape and dtype per ``h``.
    """
    image, spatial = _channels_last(masked, mask, channel_axis)
    n_spatial, n_channels = image.ndim - 1, image.shape[-1]
    size = patch_size + 1 - patch_size % 2  # scikit-image makes patches odd
    half, pad = size // 2, size // 2 + patch_distance + 1
    norms = []
    for h in hs:  # n_channels * h * h * s * s (* s), in scikit-image's order of rounding
        norm = n_channels * h * h
        for _ in range(n_spatial):
            norm *= size
        norms.append(norm)
    noise = n_channels * (2.0 * sigma * sigma)
    positions = [np.arange(n)[s] for n, s in zip(image.shape[:-1], spatial, strict=True)]
    reflected = [np.pad(np.arange(n), pad, mode="reflect") for n in image.shape[:-1]]
    out = np.empty((len(hs), *(len(p) for p in positions), n_channels))
    rows_per_band = _rows_per_band(image.shape, pad, spatial[0].step or 1)
    for start in range(0, len(positions[0]), rows_per_band):
        band = [positions[0][start : start + rows_per_band], *positions[1:]]
        out[:, start : start + len(band[0])] = _band(
            image, band, reflected, pad, half, patch_distance, np.array(norms), noise)
    out = out.astype(masked.dtype, copy=False)
    if channel_axis is None:
        return list(out[..., 0])
    return [np.moveaxis(o, -1, channel_axis) for o in out]


def _channels_last(masked: np.ndarray, mask: Mask,
                   channel_axis: int | None) -> tuple[np.ndarray, list[slice]]:
    if channel_axis is None:
        return masked[..., np.newaxis], list(mask)
    spatial = [s for axis, s in enumerate(mask) if axis != channel_axis]
    return np.moveaxis(masked, channel_axis, -1), spatial


def _rows_per_band(shape: tuple[int, ...], pad: int, step: int) -> int:
    """Phase rows per band, at least one: a padded band of at most :data:`_BAND_ELEMENTS`.

    A band is also at most a quarter of the image, so that its float64 temporaries stay a
    small part of a small image's calibration.
    """
    plane = math.prod(n + 2 * pad for n in shape[1:-1]) * shape[-1]
    budget = min(_BAND_ELEMENTS, math.prod(shape) // 4)
    return max((budget // plane - 2 * pad) // step, 1)


def _band(image: np.ndarray, positions: list[np.ndarray], reflected: list[np.ndarray],
          pad: int, half: int, distance: int, norms: np.ndarray,
          noise: float) -> np.ndarray:
    """Weighted means at the phase pixels of one band, for every norm (one per ``h``)."""
    # The padded pixels this band reads: every shift's partner patches, and no more.
    lows = [int(p[0]) + pad - distance - half for p in positions]
    highs = [int(p[-1]) + pad + distance + half + 1 for p in positions]
    index = [r[low:high] for r, low, high in zip(reflected, lows, highs, strict=True)]
    local = image[np.ix_(*index, np.arange(image.shape[-1]))].astype(np.float64, copy=False)
    steps = [int(p[1] - p[0]) if len(p) > 1 else 1 for p in positions]
    starts = [distance + half for _ in positions]  # the first phase pixel, locally
    counts = [len(p) for p in positions]
    weights = np.zeros((len(norms), *counts))
    sums = np.zeros((len(norms), *counts, image.shape[-1]))
    norms = norms.reshape(-1, *([1] * len(counts)))
    for shift in itertools.product(range(-distance, distance + 1), repeat=len(counts)):
        boxes = _box_distances(local, shift, starts, steps, counts, half, noise)
        scaled = np.maximum(boxes, 0.0)[np.newaxis] / norms
        weight = fast_exp(-scaled)
        weight[scaled > _DISTANCE_CUTOFF] = 0.0
        partners = tuple(slice(s + t, s + t + (c - 1) * k + 1, k)
                         for s, t, c, k in zip(starts, shift, counts, steps, strict=True))
        weights += weight
        sums += weight[..., np.newaxis] * local[partners]
    return sums / weights[..., np.newaxis]


def _box_distances(local: np.ndarray, shift: tuple[int, ...], starts: list[int],
                   steps: list[int], counts: list[int], half: int,
                   noise: float) -> np.ndarray:
    """Patch distance between each phase pixel and its partner ``shift`` away, unscaled.

    The sum of squared differences (less the noise term) over the box from ``-half + 1``
    to ``+half`` around the pixel, as scikit-image's integral image gives it.
    """
    if half == 0:  # patches of one pixel: scikit-image's box is empty, its sum 0
        return np.zeros(counts)
    region = tuple(slice(s - half + 1, s + (c - 1) * k + half + 1)
                   for s, c, k in zip(starts, counts, steps, strict=True))
    moved = tuple(slice(r.start + t, r.stop + t) for r, t in zip(region, shift, strict=True))
    diff = local[region] - local[moved]
    diff *= diff
    squares = diff.sum(axis=-1) if diff.shape[-1] > 1 else diff[..., 0]
    if noise:
        squares -= noise
    for axis in reversed(range(squares.ndim)):  # the last axis first: it shrinks the most
        squares = _box_sum(squares, axis, steps[axis], counts[axis], 2 * half)
    return squares


def _box_sum(values: np.ndarray, axis: int, step: int, count: int, width: int) -> np.ndarray:
    """Sums of ``width`` consecutive values along ``axis``, starting every ``step``."""
    def taken(first: int) -> np.ndarray:
        index = [slice(None)] * values.ndim
        index[axis] = slice(first, first + (count - 1) * step + 1, step)
        return values[tuple(index)]

    if width <= 4 * step:  # a few strided adds read each value about width / step times
        total = taken(0).copy()
        for first in range(1, width):
            total += taken(first)
        return total
    # Wide boxes: a running sum reads each value once, whatever the width.
    shape = list(values.shape)
    shape[axis] += 1
    running = np.zeros(shape)
    inner = [slice(None)] * values.ndim
    inner[axis] = slice(1, None)
    np.cumsum(values, axis=axis, out=running[tuple(inner)])
    values = running
    return taken(width) - taken(0)
