"""Prediction with a trained network: padding, tiling, test-time augmentation, invariance.

Everything here takes and returns normalised ``(1, channels, *spatial)`` tensors on the
network's device; :class:`~sc_noise2self.image.cnn.model.Noise2SelfModel` converts to and
from the user's arrays.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence

import torch

from ..masking import mirror_pad_torch
from .data import parse_patch_size
from .masker import Masker

Pass = Callable[[torch.Tensor], torch.Tensor]


def padded_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on ``x`` of any spatial size: mirror-pad to the net's size multiple, crop.

    Parameters
    ----------
    net
        A :class:`~sc_noise2self.image.cnn.models.UNet` or
        :class:`~sc_noise2self.image.cnn.models.DnCNN` (or any module with ``size_multiple``).
    x
        ``(batch, channels, *spatial)``.

    Returns
    -------
    The output, cropped to ``x``'s spatial size.
    """
    multiple = getattr(unwrap(net), "size_multiple", 1)
    sizes = x.shape[2:]
    pads = [(0, -size % multiple) for size in sizes]
    if any(after for _, after in pads):
        out = net(mirror_pad_torch(x, pads))
        return out[(..., *(slice(0, size) for size in sizes))]
    return net(x)


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The module behind a :func:`torch.compile` wrapper (or the module itself).

    Parameters
    ----------
    net
        A network, compiled or not.

    Returns
    -------
    The original module, which holds ``size_multiple`` and the weights.
    """
    return getattr(net, "_orig_mod", net)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision on ``device`` in ``dtype``, or a context that does nothing.

    Parameters
    ----------
    device
        The computing device.
    dtype
        From :func:`~sc_noise2self._device.resolve_amp`; None for float32.

    Returns
    -------
    A context manager.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def invariant_prediction(
    x: torch.Tensor, one_pass: Pass, masker: Masker, random_state: int
) -> torch.Tensor:
    """J-invariant prediction: one pass per grid phase, each with that phase hidden.

    Parameters
    ----------
    x
        The normalised image ``(1, channels, *spatial)``.
    one_pass
        Prediction of one tensor (e.g. a :class:`Tiler`).
    masker
        The training masker; its stride and stand-ins are used.
    random_state
        Seed of the ``"random"`` stand-ins.

    Returns
    -------
    The output, each pixel predicted with itself hidden as in training.
    """
    generator = torch.Generator(device=x.device).manual_seed(random_state)
    out = torch.zeros_like(x)
    for masked, mask in masker.every_phase(x, generator):
        out = torch.where(mask, one_pass(masked), out)
    return out


class Tiler:
    """Run a network over tiles of an image and blend the overlaps with linear ramps.

    Parameters
    ----------
    net
        The network, in evaluation mode.
    tile_size
        One int or one per spatial axis; None means the whole image in one pass.
    overlap
        Pixels shared by neighbouring tiles (clipped to half a tile).
    batch_size
        Tiles per pass.
    amp_dtype
        Autocast dtype, or None.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        tile_size: int | Sequence[int] | None,
        overlap: int,
        batch_size: int,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        if int(batch_size) < 1 or int(overlap) < 0:
            raise ValueError(
                f"batch_size={batch_size} must be >= 1 and tile_overlap={overlap} >= 0."
            )
        self.net, self.tile_size, self.overlap = net, tile_size, int(overlap)
        self.batch_size, self.amp_dtype = int(batch_size), amp_dtype

    def _tiles(self, sizes: tuple[int, ...]) -> tuple[tuple[int, ...], list[list[int]], list[int]]:
        """Tile size, tile starts and overlap per axis of an image padded to the multiple.

        Starts and steps are multiples of the network's size multiple, so every tile sees the
        same down-sampling grid as the whole image: this is what makes tiles agree.
        """
        multiple = getattr(unwrap(self.net), "size_multiple", 1)
        if self.tile_size is None:
            return sizes, [[0]] * len(sizes), [0] * len(sizes)
        requested = parse_patch_size(self.tile_size, len(sizes))
        tiles = tuple(
            min(-(-t // multiple) * multiple, s) for t, s in zip(requested, sizes, strict=True)
        )
        overlaps, starts = [], []
        for size, tile in zip(sizes, tiles, strict=True):
            step = max(multiple, (tile - min(self.overlap, tile // 2)) // multiple * multiple)
            axis_starts = list(range(0, size - tile + 1, step))
            if axis_starts[-1] != size - tile:
                axis_starts.append(size - tile)
            starts.append(axis_starts)
            overlaps.append(tile - step)
        return tiles, starts, overlaps

    def _window(self, tiles, overlaps, device) -> torch.Tensor:
        window = torch.ones((1, 1, *tiles), device=device)
        for axis, (tile, overlap) in enumerate(zip(tiles, overlaps, strict=True)):
            ramp = torch.ones(tile, device=device)
            if overlap:
                edge = torch.arange(1, overlap + 1, device=device) / (overlap + 1)
                ramp[:overlap], ramp[tile - overlap :] = edge, edge.flip(0)
            shape = [1] * window.ndim
            shape[2 + axis] = tile
            window = window * ramp.view(shape)
        return window

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ``x`` ``(1, channels, *spatial)`` tile by tile.

        Parameters
        ----------
        x
            Normalised image on the network's device.

        Returns
        -------
        The blended float32 output, of ``x``'s shape.
        """
        original = tuple(x.shape[2:])
        multiple = getattr(unwrap(self.net), "size_multiple", 1)
        x = mirror_pad_torch(x, [(0, -size % multiple) for size in original])
        sizes = tuple(x.shape[2:])
        tiles, starts, overlaps = self._tiles(sizes)
        window = self._window(tiles, overlaps, x.device)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        weight = torch.zeros((1, 1, *sizes), dtype=torch.float32, device=x.device)
        corners = list(itertools.product(*starts))
        for first in range(0, len(corners), self.batch_size):
            chunk = corners[first : first + self.batch_size]
            crops = [
                (..., *(slice(c, c + t) for c, t in zip(corner, tiles, strict=True)))
                for corner in chunk
            ]
            with autocast(x.device, self.amp_dtype):
                predicted = padded_forward(self.net, torch.cat([x[crop] for crop in crops]))
            for crop, tile_out in zip(crops, predicted.float(), strict=True):
                out[crop] += tile_out * window[0]
                weight[crop] += window[0]
        return (out / weight)[(..., *(slice(0, size) for size in original))]


def augmented(one_pass: Pass, x: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: the mean of ``one_pass`` over flipped copies of ``x``.

    Parameters
    ----------
    one_pass
        Prediction of one ``(1, channels, *spatial)`` tensor.
    x
        The normalised image.

    Returns
    -------
    The mean, in float32, over the flips of every subset of the spatial axes (in 2D also
    transposed: 8 copies), each mapped back before averaging.
    """
    spatial = list(range(2, x.ndim))
    transposes = (False, True) if len(spatial) == 2 else (False,)
    subsets = itertools.chain.from_iterable(
        itertools.combinations(spatial, r) for r in range(len(spatial) + 1)
    )
    total, count = torch.zeros_like(x, dtype=torch.float32), 0
    for dims in subsets:
        for transpose in transposes:
            moved = torch.flip(x, dims) if dims else x
            moved = moved.transpose(-1, -2) if transpose else moved
            out = one_pass(moved).float()
            out = out.transpose(-1, -2) if transpose else out
            total += torch.flip(out, dims) if dims else out
            count += 1
    return total / count
