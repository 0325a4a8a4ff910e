"""Step 1 for images: split the pixels into grid phases and hide one phase at a time.

This module and its torch twin :mod:`.masking_torch` are the only ones that make pixel
partitions: numpy for the J-invariant wrapper (:mod:`.invariant`), torch for the masked CNNs
(:mod:`.cnn`).

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
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_choice
from .units import affine_into

INTERPOLATIONS: tuple[str, ...] = ("mean", "kernel", "random")
#: Stand-ins of the torch path: uniform values, or the face neighbours' mean.
TORCH_REPLACEMENTS: tuple[str, ...] = ("random", "mean", "median")

Mask = tuple[slice, ...]
#: Largest block half-width: a reach of r needs a grid of spacing 2 r + 2, so (2 r + 2) ** n
#: phases (64 in 2D at 3), each a denoiser run per parameter set.
MAX_REACH = 3
#: Most phases the detector's blocks may take: reach 3 in 2D, 1 in 3D (64 phases each).
MAX_BLOCK_PHASES = 64


def max_reach(n_spatial: int) -> int:
    """The widest blocks the detector chooses for ``n_spatial`` axes (at least 1).

    The largest r up to :data:`MAX_REACH` whose ``(2 r + 2) ** n_spatial`` phases stay
    within :data:`MAX_BLOCK_PHASES`: 3 in 2D, 1 in 3D.
    """
    reach = 1
    while reach < MAX_REACH and (2 * reach + 4) ** n_spatial <= MAX_BLOCK_PHASES:
        reach += 1
    return reach


class BlockPhase(tuple):
    """A grid phase that hides a block around each of its pixels (noise correlated in 2D).

    Indexes an array like the tuple of slices it is (``image[phase]`` is the phase's own
    pixels, the ones scored); :func:`fill_masked` also hides every pixel within ``reach``
    of them along each spatial axis (a cube of side ``2 reach + 1``), with the centre's
    stand-in. For noise correlated only within that cube, the denoiser then sees nothing
    correlated with a scored pixel's noise.
    """

    reach: int

    def __new__(cls, slices: tuple[slice, ...], reach: int) -> BlockPhase:
        """The phase ``slices`` with blocks of half-width ``reach``."""
        phase = super().__new__(cls, slices)
        phase.reach = int(reach)
        return phase

    def __getnewargs__(self) -> tuple:  # pickling, for worker processes
        return tuple(self), self.reach


def block_stride(stride: int, reach: int) -> int:
    """The grid spacing of blocks of half-width ``reach``: no block touches another's stand-ins.

    A stand-in is read ``reach + 1`` pixels from its block's centre, so centres of one phase
    must be at least ``2 reach + 2`` apart for no block to cover a neighbour's stand-in.
    """
    return max(stride, 2 * reach + 2) if reach else stride


def spatial_axes(ndim: int, channel_axis: int | None) -> tuple[int, ...]:
    """Axes of an ``ndim``-dimensional array that are not the (normalised) channel axis."""
    return tuple(axis for axis in range(ndim) if axis != channel_axis)


def phase_offsets(stride: int, n_spatial: int) -> list[tuple[int, ...]]:
    """The offset of every grid phase along the spatial axes, in one fixed order.

    Parameters
    ----------
    stride
        Grid spacing.
    n_spatial
        Number of spatial axes.

    Returns
    -------
    ``stride ** n_spatial`` tuples; :func:`grid_masks` and :func:`phase_mask_torch` list
    the phases in this order.
    """
    return list(itertools.product(range(stride), repeat=n_spatial))


def check_line_axes(line_axes, n_spatial: int, name: str = "mask") -> tuple[int, ...]:
    """Explicit line axes, checked: distinct spatial axes, fewer than all of them.

    Parameters
    ----------
    line_axes
        Spatial axes (counted among the spatial axes) to hide whole lines along.
    n_spatial
        The image's number of spatial axes.
    name
        How to call the argument in errors.

    Returns
    -------
    The axes, sorted and without repeats.
    """
    try:
        axes = tuple(sorted({int(a) for a in line_axes}))
    except (TypeError, ValueError) as error:
        choices = "'auto', 'pixel', 'rows', 'columns' or " if name == "mask" else ""
        raise TypeError(f"{name}={line_axes!r} must be {choices}a tuple of spatial axes to "
                        "hide whole lines along, e.g. (1,) for rows of a 2D image.") from error
    if any(a < 0 or a >= n_spatial for a in axes) or len(axes) >= n_spatial:
        raise ValueError(f"{name}={line_axes!r} must name fewer than all of the image's "
                         f"{n_spatial} spatial axes (0 to {n_spatial - 1}): the stand-ins come "
                         "from the lines beside a hidden one. Use 'pixel', 'rows' or "
                         "'columns'.")
    return axes


def check_reach(reach, line_axes: Sequence[int] = (), name: str = "reach") -> int:
    """A block half-width, checked: a whole number from 0 to :data:`MAX_REACH`, without lines.

    Parameters
    ----------
    reach
        The value given.
    line_axes
        The line axes given with it (blocks and lines do not combine).
    name
        How to call the argument in errors.

    Returns
    -------
    ``reach`` as an int.
    """
    if isinstance(reach, bool) or not isinstance(reach, (int, np.integer)):
        raise TypeError(f"{name}={reach!r} must be a whole number of pixels from 0 to "
                        f"{MAX_REACH}: the half-width of the block hidden around each pixel.")
    if not 0 <= reach <= MAX_REACH:
        raise ValueError(f"{name}={reach} must be from 0 to {MAX_REACH}: a block of half-width r "
                         f"needs (2 r + 2) ** n grid phases. Pass a value in that range.")
    if reach and len(line_axes):
        raise ValueError(f"{name}={reach} with line_axes={tuple(line_axes)}: blocks and lines do "
                         "not combine. Pass one of them.")
    return int(reach)


def grid_masks(shape: tuple[int, ...], stride: int, channel_axis: int | None = None,
               line_axes: Sequence[int] = (), reach: int = 0) -> list[Mask]:
    """Index tuples of every grid phase of an array of ``shape``.

    Parameters
    ----------
    shape
        Shape of the image, channel axis included.
    stride
        Spacing of a phase's pixels along every spatial axis not in ``line_axes``.
    channel_axis
        Non-negative index of the channel axis, or None. It is taken whole by every phase.
    line_axes
        Spatial axes (counted among the spatial axes only) along which a phase takes whole
        lines: for noise correlated along them, so that no pixel of a hidden line is seen
        (see :mod:`~sc_noise2self.image.structure`).
    reach
        Half-width of the block hidden around each pixel of a phase (0: the pixel alone);
        the spacing is then at least ``2 reach + 2`` (:func:`block_stride`) and the phases
        are :class:`BlockPhase`. Not combined with ``line_axes``.

    Returns
    -------
    ``stride ** (n_spatial - len(line_axes))`` tuples of slices; ``image[mask]`` is one
    phase, and the phases partition the image.
    """
    stride = block_stride(stride, check_reach(reach, line_axes))
    n_spatial = len(shape) - (channel_axis is not None)
    spatial = [axis for axis in range(len(shape)) if axis != channel_axis]
    gridded = [axis for i, axis in enumerate(spatial) if i not in set(line_axes)]
    masks = []
    for offsets in phase_offsets(stride, n_spatial - len(set(line_axes))):
        mask = [slice(None)] * len(shape)
        for axis, offset in zip(gridded, offsets, strict=True):
            mask[axis] = slice(offset, None, stride)
        masks.append(BlockPhase(tuple(mask), reach) if reach else tuple(mask))
    return masks


def neighbour_kernel(ndim: int, interpolation: str, channel_axis: int | None = None,
                     line_axes: Sequence[int] = (), reach: int = 0) -> np.ndarray:
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
    line_axes
        Spatial axes (counted among the spatial axes) whose lines are hidden whole; the
        kernel has length 1 along them too, so a stand-in comes from the neighbouring
        lines only (the pixels above and below, for hidden rows).
    reach
        Half-width of a hidden block: the kernel's taps then sit ``reach + 1`` pixels from
        the centre, just outside the block (side ``2 reach + 3``).

    Returns
    -------
    Kernel array of ``ndim`` axes, summing to 1.
    """
    n_spatial = ndim - (channel_axis is not None)
    n_reach = n_spatial - len(set(line_axes))
    offsets = np.indices((3,) * n_reach).reshape(n_reach, -1).T - 1
    n_nonzero = np.count_nonzero(offsets, axis=1)
    if interpolation == "mean":
        weights = (n_nonzero == 1).astype(float)
    else:
        weights = np.where(n_nonzero > 0, 2.0 ** (1 - n_nonzero), 0.0)
    kernel = (weights / weights.sum()).reshape((3,) * n_reach)
    if reach:  # the same taps, spread to the pixels just outside the block
        spread = np.zeros((2 * reach + 3,) * n_reach)
        spread[(slice(None, None, reach + 1),) * n_reach] = kernel
        kernel = spread
    for axis in sorted(set(line_axes)):
        kernel = np.expand_dims(kernel, axis)
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
    line_axes: Sequence[int] = (),
    reach: int = 0,
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
    line_axes
        Spatial axes whose lines the phases hide whole (see :func:`neighbour_kernel`).
    reach
        Half-width of the blocks the phases hide (see :func:`neighbour_kernel`): each
        pixel's value is its block's stand-in, read outside the block.

    Returns
    -------
    Array of the image's shape and dtype. On each phase, its values never depend on the
    values of that phase's own pixels (nor, with ``reach``, on their blocks).
    """
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    if interpolation == "random":
        return _random_values(image, masks, random_state)
    kernel = neighbour_kernel(image.ndim, interpolation, channel_axis,
                              line_axes, reach).astype(image.dtype)
    if not reach:
        return ndi.convolve(image, kernel, mode="mirror")
    # A mirrored tap of a pixel near the edge would fall inside its own block (onto the
    # pixel itself, reach + 1 = 2 d pixels from the edge): average the taps inside instead.
    inside = ndi.convolve(np.ones(image.shape, image.dtype), kernel, mode="constant")
    values = ndi.convolve(image, kernel, mode="constant")
    return values / np.maximum(inside, np.finfo(image.dtype).tiny)


def _random_values(image: np.ndarray, masks: list[Mask] | None, random_state: int) -> np.ndarray:
    unit = np.random.default_rng(random_state).random(image.shape)
    if masks is None:
        low, high = float(image.min()), float(image.max())
        return (low + unit * (high - low)).astype(image.dtype)
    values = np.empty_like(image)
    outside = np.empty(image.shape, dtype=bool)
    everywhere, nowhere = np.ones(image.shape, bool), np.zeros(image.shape, bool)
    for mask in masks:
        # A boolean ``where`` instead of a NaN-filled copy: an eighth of the memory. The
        # range leaves out every hidden pixel (with blocks, the whole of each block).
        fill_masked(outside, everywhere, mask, nowhere)
        low = float(np.min(image, where=outside, initial=np.inf))
        high = float(np.max(image, where=outside, initial=-np.inf))
        values[mask] = low + unit[mask] * (high - low)
    return values


def masked_phases(
    image: np.ndarray,
    masks: Sequence[Mask],
    replacement: np.ndarray,
    *,
    dtype: Any = None,
    offset: float = 0.0,
    scale: float = 1.0,
) -> Iterator[tuple[np.ndarray, Mask]]:
    """The masked copies of ``image`` one at a time, all in one reused buffer.

    Memory is one image (in ``dtype``) however many phases there are; the J-invariant
    wrapper streams its phases through this, and the calibration fills one copy per
    phase with :func:`fill_masked` (:mod:`~sc_noise2self.image.phases`).

    Parameters
    ----------
    image
        Float image.
    masks
        Phases, as returned by :func:`grid_masks` (or anything that indexes the image).
    replacement
        Stand-in values, as returned by :func:`replacement_values`.
    dtype
        Float type of the copies; None keeps the image's. The image and the stand-ins are
        rounded to it exactly as ``astype`` would.
    offset, scale
        The copies hold ``(image - offset) / scale`` (working units, see
        :mod:`~sc_noise2self.image.units`); ``replacement`` must already be in them.

    Yields
    ------
    ``(masked, mask)``: the image with phase ``mask`` replaced, and that phase. ``masked``
    is the same buffer at every step, refilled from the image, so a denoiser may write
    into it; copy it to keep it past the next step.
    """
    buffer = np.empty(image.shape, dtype=image.dtype if dtype is None else dtype)
    for mask in masks:
        yield fill_masked(buffer, image, mask, replacement, offset=offset, scale=scale), mask


def fill_masked(buffer: np.ndarray, image: np.ndarray, mask: Mask, replacement: np.ndarray,
                *, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Write the masked copy of ``image`` for phase ``mask`` into ``buffer``.

    Parameters
    ----------
    buffer
        Float array of the image's shape, overwritten (its dtype is the copy's).
    image, mask, replacement, offset, scale
        As in :func:`masked_phases`.

    Returns
    -------
    ``buffer``: ``(image - offset) / scale``, rounded to its dtype, with ``mask`` replaced.
    """
    if offset != 0.0 or scale != 1.0:
        affine_into(buffer, image, offset, scale)
    else:
        np.copyto(buffer, image, casting="same_kind")
    buffer[mask] = replacement[mask]
    reach = getattr(mask, "reach", 0)
    if reach:  # every pixel of a block takes its centre's stand-in
        spatial = [axis for axis, part in enumerate(mask) if part.step is not None]
        for shift in itertools.product(range(-reach, reach + 1), repeat=len(spatial)):
            if any(shift):
                target, source = _shifted_phase(mask, dict(zip(spatial, shift, strict=True)),
                                                buffer.shape)
                buffer[target] = replacement[source]
    return buffer


def _shifted_phase(mask: Mask, shifts: dict[int, int],
                   shape: tuple[int, ...]) -> tuple[Mask, Mask]:
    """The pixels ``shifts`` away from a phase's pixels, and those phase pixels, in bounds.

    Returns ``(target, source)`` slices with ``target`` = ``source`` + shift pixel by pixel.
    """
    target, source = list(mask), list(mask)
    for axis, shift in shifts.items():
        step, length = mask[axis].step, shape[axis]
        offset = mask[axis].start
        # The first phase pixel whose shifted copy is inside, and the end both must keep.
        first = offset + step * max(0, -(-(-shift - offset) // step))
        stop = min(length, length - shift)
        source[axis] = slice(first, stop, step)
        target[axis] = slice(first + shift, stop + shift, step)
    return tuple(target), tuple(source)


def masked_inputs(image: np.ndarray, masks: list[Mask], replacement: np.ndarray) -> np.ndarray:
    """Every masked copy of ``image`` at once: phase ``i`` of copy ``i`` is replaced.

    For inspection and teaching; the package itself streams the copies with
    :func:`masked_phases`, which holds one at a time.

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
    stack = np.empty((len(masks), *image.shape), dtype=image.dtype)
    for copy, mask in zip(stack, masks, strict=True):
        fill_masked(copy, image, mask, replacement)  # the one maker of masked copies
    return stack
