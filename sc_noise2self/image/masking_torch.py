"""The torch twins of :mod:`.masking`, for the masked CNNs: phases, stand-ins, masked copies.

The masked CNNs hide pixels of ``(batch, channels, *spatial)`` tensors; a mask there is a
boolean tensor ``(batch, 1, *spatial)``, so every channel of a pixel is hidden together.
Each function imports torch when called, so importing this module never does; the phases
and stand-ins equal the numpy ones (``tests/test_image_masking.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_choice
from .masking import TORCH_REPLACEMENTS, neighbour_kernel


def phase_mask_torch(shape: tuple[int, ...], stride: int, offsets, line_axes: Sequence[int] = ()):
    """Boolean mask of the grid phase ``offsets[b]`` for every sample ``b`` of a batch.

    Parameters
    ----------
    shape
        ``(batch, 1, *spatial)``.
    stride
        Grid spacing.
    offsets
        Integer tensor ``(batch, n_spatial - len(line_axes))`` of values in ``[0, stride)``
        (see :func:`phase_offsets`), one per gridded axis; the mask is made on its device.
    line_axes
        Spatial axes whose lines are hidden whole, as in :func:`grid_masks`.

    Returns
    -------
    Boolean tensor of ``shape``: pixel ``p`` of sample ``b`` is hidden when
    ``p % stride == offsets[b]`` along every gridded axis, as in :func:`grid_masks`.
    """
    import torch

    mask = torch.ones(shape, dtype=torch.bool, device=offsets.device)
    gridded = [axis for axis in range(len(shape) - 2) if axis not in set(line_axes)]
    for column, axis in enumerate(gridded):
        size = shape[2 + axis]
        coords = torch.arange(size, device=offsets.device) % stride
        view = [shape[0]] + [1] * (len(shape) - 1)
        view[2 + axis] = size
        hit = coords.view(1, size) == offsets[:, column : column + 1]
        mask = mask & hit.view(view)
    return mask


def random_mask_torch(shape: tuple[int, ...], density: float, generator,
                      line_axes: Sequence[int] = ()):
    """Boolean mask hiding each pixel (or each line) independently with probability ``density``.

    Parameters
    ----------
    shape
        ``(batch, 1, *spatial)``.
    density
        Probability that a pixel is hidden.
    generator
        Seeded ``torch.Generator``; the mask is made on its device.
    line_axes
        Spatial axes along which whole lines are hidden together: the draw is made once
        per line and spread along them.

    Returns
    -------
    Boolean tensor of ``shape``.
    """
    import torch

    drawn = list(shape)
    for axis in set(line_axes):
        drawn[2 + axis] = 1
    hidden = torch.rand(drawn, generator=generator, device=generator.device) < density
    return hidden.expand(shape)


def mirror_pad_torch(x, pads: list[tuple[int, int]]):
    """Mirror-pad the spatial axes of ``x`` by ``pads[axis] = (before, after)``.

    The mirror leaves the edge pixel out, like ``scipy.ndimage``'s ``"mirror"`` mode.
    Reflection needs a pad smaller than the axis, so short axes are reflected repeatedly,
    and an axis of one pixel repeats it.

    Parameters
    ----------
    x
        Tensor ``(batch, channels, *spatial)``.
    pads
        One ``(before, after)`` pair per spatial axis.

    Returns
    -------
    The padded tensor.
    """
    import torch
    import torch.nn.functional as F

    for axis, (before, after) in enumerate(pads):
        dim = 2 + axis
        while before or after:
            size = x.shape[dim]
            if size == 1:  # nothing to reflect: repeat the single value
                x = torch.cat([x] * (1 + before + after), dim=dim)
                break
            step_b, step_a = min(before, size - 1), min(after, size - 1)
            # F.pad's reflect mode pads trailing axes first; zero pads leave the others.
            spec = [0, 0] * (x.ndim - 2)
            position = 2 * (x.ndim - 1 - dim)
            spec[position : position + 2] = [step_b, step_a]
            x = F.pad(x, spec, mode="reflect")
            before, after = before - step_b, after - step_a
    return x


def neighbour_mean_torch(x, interpolation: str = "mean", line_axes: Sequence[int] = (),
                         reach: int = 0):
    """The torch twin of :func:`replacement_values` for ``"mean"`` and ``"kernel"``.

    Parameters
    ----------
    x
        Tensor ``(batch, channels, *spatial)`` with 2 or 3 spatial axes.
    interpolation
        ``"mean"`` or ``"kernel"`` (see :func:`neighbour_kernel`); borders are mirrored.
    line_axes
        Spatial axes whose lines are hidden whole: no neighbour along them is used.
    reach
        Half-width of hidden blocks: the neighbours are read ``reach + 1`` pixels away.

    Returns
    -------
    Tensor of ``x``'s shape: at every pixel, the weighted mean of its neighbours, never of
    the pixel itself; channels do not mix.
    """
    import torch
    import torch.nn.functional as F

    n_spatial, channels = x.ndim - 2, x.shape[1]
    kernel = torch.as_tensor(
        neighbour_kernel(n_spatial, interpolation, line_axes=line_axes, reach=reach),
        dtype=x.dtype, device=x.device,
    )
    weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
    conv = F.conv2d if n_spatial == 2 else F.conv3d
    if reach:  # only the taps inside the image, as replacement_values does for blocks
        inside = conv(torch.ones_like(x[:, :1]), weight[:1], padding=reach + 1)
        return conv(x, weight, padding=reach + 1, groups=channels) / inside.clamp_min(
            torch.finfo(x.dtype).tiny)
    pads = [(0, 0) if axis in set(line_axes) else (1, 1) for axis in range(n_spatial)]
    return conv(mirror_pad_torch(x, pads), weight, groups=channels)


def hide_torch(x, mask, replacement: str, generator, line_axes: Sequence[int] = (),
               reach: int = 0):
    """``x`` with the pixels of ``mask`` replaced by stand-ins (a new tensor).

    Parameters
    ----------
    x
        Tensor ``(batch, channels, *spatial)``, normalised to about [0, 1].
    mask
        Boolean tensor ``(batch, 1, *spatial)`` of hidden pixels.
    replacement
        ``"random"``: uniform values in [0, 1], the normalised intensity range (drawn
        from ``generator``). ``"mean"``: :func:`neighbour_mean_torch`, J-invariant only when
        no two hidden pixels are neighbours (a grid phase). ``"median"``:
        :func:`neighbour_median_torch` (N2V2, Hoeck et al. 2022), likewise.
    generator
        Seeded ``torch.Generator`` on ``x``'s device.
    line_axes
        Spatial axes whose lines ``mask`` hides whole: the stand-ins then come from the
        neighbouring lines only.
    reach
        Half-width of the block hidden around each pixel of ``mask`` (whose pixels must be
        at least ``2 reach + 2`` apart, a grid phase of :func:`block_stride`): the block
        takes its centre's stand-in, read ``reach + 1`` pixels away (``"mean"``), or
        uniform values (``"random"``).

    Returns
    -------
    The masked tensor; differentiable in ``x``.
    """
    import torch

    check_choice(replacement, TORCH_REPLACEMENTS, name="replacement")
    if replacement == "random":
        values = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif replacement == "median":
        values = neighbour_median_torch(x, line_axes)
    else:
        values = neighbour_mean_torch(x, "mean", line_axes, reach)
    if reach:
        return _hide_blocks_torch(x, mask, values, reach, replacement == "random")
    return torch.where(mask, values, x)


def _hide_blocks_torch(x, mask, values, reach: int, per_pixel: bool):
    """``x`` with the block around each pixel of ``mask`` replaced by that pixel's stand-in."""
    import torch
    import torch.nn.functional as F

    n_spatial = x.ndim - 2
    pool = F.max_pool2d if n_spatial == 2 else F.max_pool3d
    side = 2 * reach + 1
    centres = mask.to(x.dtype)
    hidden = pool(centres, side, stride=1, padding=reach) > 0
    if per_pixel:  # uniform stand-ins carry nothing: each hidden pixel keeps its own draw
        return torch.where(hidden, values, x)
    # Blocks never overlap, so a box sum of the centres' stand-ins is each block's own.
    conv = F.conv2d if n_spatial == 2 else F.conv3d
    channels = x.shape[1]
    box = torch.ones((channels, 1) + (side,) * n_spatial, dtype=x.dtype, device=x.device)
    spread = conv(values * centres, box, padding=reach, groups=channels)
    return torch.where(hidden, spread, x)


def neighbour_median_torch(x, line_axes: Sequence[int] = ()):
    """At every pixel, the median of its 3 x 3 (x 3) neighbours without itself (N2V2's).

    Parameters
    ----------
    x
        Tensor ``(batch, channels, *spatial)`` with 2 or 3 spatial axes; borders mirrored.
    line_axes
        Spatial axes whose lines are hidden whole: the window has length 1 along them.

    Returns
    -------
    Tensor of ``x``'s shape. With an even number of neighbours (8 or 26) the lower of the
    two middle values, as ``torch.median`` gives; channels do not mix.
    """
    import torch

    n_spatial = x.ndim - 2
    widths = [1 if axis in set(line_axes) else 3 for axis in range(n_spatial)]
    windows = mirror_pad_torch(x, [(w // 2, w // 2) for w in widths])
    for axis, width in enumerate(widths):
        windows = windows.unfold(2 + axis, width, 1)
    size = int(np.prod(widths))
    windows = windows.reshape(*x.shape, size)
    centre = size // 2
    neighbours = torch.cat([windows[..., :centre], windows[..., centre + 1:]], dim=-1)
    return neighbours.median(dim=-1).values
