"""Mean noise variance of one image, for Gaussian and for Poisson-Gaussian microscopy noise.

The mixing weight of the calibration (lambda = noise variance / loss) is only as good as this
number, so the estimator is built for the two ways real microscopy noise breaks the usual
white-Gaussian estimators (``skimage.restoration.estimate_sigma`` takes one median over the
whole image):

- its variance grows with the signal (Poisson-Gaussian), so a median over the image reports
  the dark background's noise, not the mean noise. We bin pixels by local intensity, take a
  robust variance per bin and average the bins weighted by their sizes.
- neighbouring pixels' noise is correlated (detector and scanning), which hides part of the
  noise from differences of adjacent pixels. We difference pixels two apart instead.

Errors are lopsided on purpose: texture that survives the filter can only raise the estimate,
and a too-high noise variance makes the mix lean towards the denoised output, which is never
worse than not mixing; a too-low one (below about half the truth) can be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .checks import check_image
from .masking import check_line_axes, check_reach, spatial_axes
from .units import units_of

_MAD_TO_SD = 1.4826
_LAG = 2
_N_BINS = 32
_SMOOTHING = 1.0
_FLAT_SHARE = 0.1
_MIN_BIN = 2048  # pixels per intensity bin, at least
_MIN_FLAT = 256  # pixels per robust variance, at least
#: The smallest image with a meaningful estimate: the filter spans 2 * lag + 1 pixels along
#: each axis, and a robust variance needs more than a handful of residuals.
_MIN_AXIS, _MIN_PIXELS = 2 * _LAG + 1, 64
#: Working scales inside which the float32 maps neither overflow nor lose their squares.
_SAFE_SCALES = (2.0**-40, 2.0**40)


def noise_residual(image: np.ndarray, *, channel_axis: int | None = None,
                   line_axes: Sequence[int] = (), reach: int = 0) -> np.ndarray:
    """A high-pass of the image whose variance is the local noise variance.

    The filter is the outer product, over the spatial axes, of the second difference
    ``[1, 0, -2, 0, 1]`` (lag 2), scaled to unit norm: it cancels any signal that is
    quadratic along each axis and, for white noise, has exactly the noise's variance.

    Parameters
    ----------
    image
        Float image.
    channel_axis
        Index of the channel axis, or None; channels are filtered separately.
    line_axes
        Spatial axes along which the noise is correlated: the filter skips them, so that it
        sums pixels of different lines only, whose noise is independent, and the variance
        stays exact (filtering along a correlated axis would cancel part of the noise).
    reach
        For noise correlated along every axis within ``reach`` pixels: the lag grows to
        ``reach + 1``, so that the filter sums only pixels whose noise is independent.

    Returns
    -------
    float32 array of the image's shape.
    """
    channel_axis = None if channel_axis is None else channel_axis % image.ndim
    lag = max(_LAG, reach + 1)
    taps = np.zeros(2 * lag + 1)
    taps[[0, lag, 2 * lag]] = (1.0, -2.0, 1.0)
    residual = image
    filtered = [axis for i, axis in enumerate(spatial_axes(image.ndim, channel_axis))
                if i not in set(line_axes)]
    for axis in filtered:
        # float32: a noise level needs no more, and the estimate's memory stays small.
        residual = ndi.correlate1d(residual, taps, axis=axis, mode="mirror", output=np.float32)
    residual /= np.sqrt(np.sum(taps**2) ** len(filtered))
    return residual


def robust_variance(values: np.ndarray) -> float:
    """Variance from the median absolute deviation, unmoved by a minority of outliers."""
    deviation = np.abs(values - np.median(values))
    return float((_MAD_TO_SD * np.median(deviation)) ** 2)


def _interior(shape: tuple[int, ...], channel_axis: int | None,
              lag: int = _LAG) -> tuple[slice, ...]:
    """Pixels at least 2 * lag from every spatial edge (all of an axis too short for that)."""
    margin = 2 * lag
    return tuple(
        slice(margin, size - margin) if axis != channel_axis and size > 4 * margin else slice(None)
        for axis, size in enumerate(shape)
    )


def smoothed_slope(image: np.ndarray, sigmas: list[float], channel_axis: int | None) -> np.ndarray:
    """Gradient magnitude of the smoothed image along the spatial axes only (float32)."""
    squared = np.zeros(image.shape, dtype=np.float32)
    for axis in spatial_axes(image.ndim, channel_axis):
        order = [int(i == axis) for i in range(image.ndim)]
        derivative = ndi.gaussian_filter(image, sigmas, order=order, output=np.float32)
        derivative *= derivative
        squared += derivative
        del derivative
    return np.sqrt(squared, out=squared)


def estimate_noise_variance(image: np.ndarray, *, channel_axis: int | None = None,
                            line_axes: Sequence[int] = (), reach: int = 0) -> float:
    """Mean per-pixel noise variance of one noisy image, without a clean reference.

    Method: :func:`noise_residual` removes the signal; pixels are binned into 32 quantile
    bins of the locally smoothed intensity (Gaussian, sigma 1 pixel), so that each bin has
    about one noise level, whether the noise is Gaussian or Poisson-Gaussian; within each
    bin, the flattest 10% of the pixels (lowest smoothed gradient) give a robust (MAD)
    variance, which keeps edges and texture out; the bins are averaged by pixel count.

    Measured against the truth ``mean((noisy - clean) ** 2)`` (see ``benchmarks/RESULTS.md``):
    within 10% on ``camera`` with Gaussian noise of sigma 0.1 and on the FMD confocal images,
    where ``estimate_sigma ** 2`` is 2.5 to 6 times too low. Weak noise on fine texture is
    overestimated (1.2x at sigma 0.05 and 1.7x at 0.02 on ``camera``); volumes smaller than
    about 32x48x48 have too few pixels per bin and can come out 15-20% low.

    Parameters
    ----------
    image
        2D image or 3D volume, integer (scaled into [0, 1]) or float, with or without
        channels; at least 5 pixels along every spatial axis and 64 in all.
    channel_axis
        Index of the channel axis, or None. Channels are pooled.
    line_axes
        Spatial axes along which the noise is correlated (see
        :func:`~sc_noise2self.image.noise_correlation`); the residual is taken across them
        only. Without it, noise correlated along rows is underestimated: on camera with
        5-pixel correlation, 0.33 of the true variance, against 0.98 with the line axes
        (differences along the rows cancel the shared noise).
    reach
        For noise correlated along every axis within ``reach`` pixels (``mask="blocks"``):
        the residual's differences are taken ``reach + 1`` pixels apart, beyond the
        correlation.

    Returns
    -------
    The estimated mean noise variance, in the image's units squared (0 for a constant
    image). The estimate does not depend on the image's units: images far from unit range
    are rescaled by a power of two first.
    """
    image, channel_axis = check_image(image, channel_axis=channel_axis)
    spatial = tuple(s for axis, s in enumerate(image.shape) if axis != channel_axis)
    line_axes = check_line_axes(line_axes, len(spatial), name="line_axes")
    reach = check_reach(reach, line_axes)
    if min(spatial) < _MIN_AXIS or np.prod(spatial) < _MIN_PIXELS:
        raise ValueError(
            f"image has spatial shape {spatial}: too small to estimate its noise variance "
            f"(at least {_MIN_AXIS} pixels along every spatial axis and {_MIN_PIXELS} in all). "
            "Pass noise_variance= yourself, e.g. measured on a larger image of the same kind."
        )
    units = units_of(image)
    if units.constant:
        return 0.0
    if _SAFE_SCALES[0] <= units.scale <= _SAFE_SCALES[1]:
        return _estimate(image, channel_axis, tuple(line_axes), reach)
    # A copy in working units: only for images whose squares would leave float32.
    return _estimate(units.forward(image, np.float64), channel_axis,
                     tuple(line_axes), reach) * units.scale**2


def _estimate(image: np.ndarray, channel_axis: int | None, line_axes: tuple[int, ...],
              reach: int = 0) -> float:
    """The estimator itself, on a checked float image whose values suit float32 maps."""
    channel_axis = None if channel_axis is None else channel_axis % image.ndim
    sigmas = [0.0 if axis == channel_axis else _SMOOTHING for axis in range(image.ndim)]
    # The residual filter's mirrored border folds taps onto each other: keep the interior.
    inside = _interior(image.shape, channel_axis, max(_LAG, reach + 1))
    # Every map is float32 and cut to the interior at once, and pixels are grouped by bin
    # without sorting them all: the estimate peaks near 2.5 image copies (float64 input).
    residual = noise_residual(image, channel_axis=channel_axis, line_axes=line_axes,
                              reach=reach)[inside].ravel()
    level = ndi.gaussian_filter(image, sigmas, output=np.float32)[inside].ravel()
    slope = smoothed_slope(image, sigmas, channel_axis)[inside].ravel()
    n_bins = int(np.clip(residual.size // _MIN_BIN, 1, _N_BINS))  # small images: fewer bins
    edges = np.quantile(level, np.linspace(0.0, 1.0, n_bins + 1)).astype(level.dtype)
    bins = np.empty(level.size, dtype=np.int8)
    for start in range(0, level.size, 4096):  # searchsorted's int64 result, by pieces
        piece = slice(start, start + 4096)
        bins[piece] = np.clip(np.searchsorted(edges, level[piece], side="right") - 1, 0,
                              n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        members = np.flatnonzero(bins == b)
        if members.size == 0:
            continue
        n_flat = max(int(np.ceil(_FLAT_SHARE * members.size)), min(members.size, _MIN_FLAT))
        flat = members[np.argsort(slope[members], kind="stable")[:n_flat]]
        total += robust_variance(residual[flat]) * members.size
    return total / residual.size
