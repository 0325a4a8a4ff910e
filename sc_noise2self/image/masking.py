"""Step 1 and 2 for images: split the pixels into grid phases and hide one phase at a time.

A *phase* is the set of pixels whose coordinates are congruent to a fixed offset modulo
``stride`` along every spatial axis; there are ``stride ** n_spatial`` of them and together
they cover the image exactly once. Hiding a phase means overwriting its pixels with values
that carry no information about the originals (an interpolation from the other pixels, or
random values), so that a denoiser's output on that phase cannot depend on them.

Channels are never split: every channel of a pixel belongs to the same phase and is
hidden together, because channels of one pixel usually share their noise source.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_choice

INTERPOLATIONS: tuple[str, ...] = ("mean", "kernel", "random")

Mask = tuple[slice, ...]


def spatial_axes(ndim: int, channel_axis: int | None) -> tuple[int, ...]:
    """Axes of an ``ndim``-dimensional array that are not the (normalised) channel axis."""
    return tuple(axis for axis in range(ndim) if axis != channel_axis)


def grid_masks(shape: tuple[int, ...], stride: int, channel_axis: int | None = None) -> list[Mask]:
    """Index tuples of every grid phase of an array of ``shape``.

    Parameters
    ----------
    shape
        Shape of the image, channel axis included.
    stride
        Spacing of a phase's pixels along every spatial axis.
    channel_axis
        Non-negative index of the channel axis, or None. It is taken whole by every phase.

    Returns
    -------
    ``stride ** n_spatial`` tuples of slices; ``image[mask]`` is one phase, and the phases
    partition the image.
    """
    n_spatial = len(shape) - (channel_axis is not None)
    masks = []
    for offsets in itertools.product(range(stride), repeat=n_spatial):
        spatial = iter(slice(offset, None, stride) for offset in offsets)
        masks.append(
            tuple(
                slice(None) if axis == channel_axis else next(spatial) for axis in range(len(shape))
            )
        )
    return masks


def neighbour_kernel(ndim: int, interpolation: str, channel_axis: int | None = None) -> np.ndarray:
    """Normalised replacement kernel with a zero centre, spanning only the spatial axes.

    Parameters
    ----------
    ndim
        Number of axes of the image, channel axis included.
    interpolation
        ``"mean"``: the face neighbours (4 in 2D, 6 in 3D), equally weighted, as in
        :func:`skimage.restoration.denoise_invariant`. ``"kernel"``: the paper's 3x3 kernel
        (face neighbours weight 1, diagonal ones 0.5), extended to nD by halving the weight
        for each extra non-zero offset.
    channel_axis
        Non-negative index of the channel axis, or None; the kernel has length 1 along it,
        so channels never mix.

    Returns
    -------
    Kernel array of ``ndim`` axes, summing to 1.
    """
    n_spatial = ndim - (channel_axis is not None)
    offsets = np.indices((3,) * n_spatial).reshape(n_spatial, -1).T - 1
    n_nonzero = np.count_nonzero(offsets, axis=1)
    if interpolation == "mean":
        weights = (n_nonzero == 1).astype(float)
    else:
        weights = np.where(n_nonzero > 0, 2.0 ** (1 - n_nonzero), 0.0)
    kernel = (weights / weights.sum()).reshape((3,) * n_spatial)
    if channel_axis is not None:
        kernel = np.expand_dims(kernel, channel_axis)
    return kernel


def replacement_values(
    image: np.ndarray,
    interpolation: str = "mean",
    *,
    channel_axis: int | None = None,
    masks: list[Mask] | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Values that stand in for hidden pixels: one array, computed once for every phase.

    Parameters
    ----------
    image
        Float image.
    interpolation
        ``"mean"`` or ``"kernel"`` (see :func:`neighbour_kernel`; borders are mirrored), or
        ``"random"``: uniform values between the minimum and maximum of the pixels outside
        the phase being replaced.
    channel_axis
        Non-negative index of the channel axis, or None.
    masks
        The phases; needed by ``"random"`` so that a phase's range comes from the other
        pixels only (without them, the whole image's range is used).
    random_state
        Seed of the ``"random"`` replacement; the same seed gives identical values.

    Returns
    -------
    Array of the image's shape and dtype. On each phase, its values never depend on the
    values of that phase's own pixels.
    """
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    if interpolation == "random":
        return _random_values(image, masks, random_state)
    kernel = neighbour_kernel(image.ndim, interpolation, channel_axis).astype(image.dtype)
    return ndi.convolve(image, kernel, mode="mirror")


def _random_values(image: np.ndarray, masks: list[Mask] | None, random_state: int) -> np.ndarray:
    unit = np.random.default_rng(random_state).random(image.shape)
    if masks is None:
        low, high = float(image.min()), float(image.max())
        return (low + unit * (high - low)).astype(image.dtype)
    values = np.empty_like(image)
    for mask in masks:
        others = image.copy()
        others[mask] = np.nan
        low, high = float(np.nanmin(others)), float(np.nanmax(others))
        values[mask] = low + unit[mask] * (high - low)
    return values


def masked_inputs(image: np.ndarray, masks: list[Mask], replacement: np.ndarray) -> np.ndarray:
    """Every masked copy of ``image`` at once: phase ``i`` of copy ``i`` is replaced.

    Built once per calibration and shared by every parameter set (and every worker
    process, which joblib hands a memory map of it).

    Parameters
    ----------
    image
        Float image.
    masks
        Phases, as returned by :func:`grid_masks`.
    replacement
        Stand-in values, as returned by :func:`replacement_values`.

    Returns
    -------
    Array of shape ``(len(masks), *image.shape)``; memory is ``len(masks)`` images.
    """
    stack = np.repeat(image[np.newaxis], len(masks), axis=0)
    for copy, mask in zip(stack, masks, strict=True):
        copy[mask] = replacement[mask]
    return stack
