"""Prediction with a trained network: padding, tiling, test-time augmentation, invariance.

Everything here takes and returns normalised ``(1, channels, *spatial)`` tensors on the
network's device; :class:`~sc_noise2self.image.cnn.model.Noise2SelfModel` converts to and
from the user's arrays.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..._validation import check_whole
from ..masking_torch import mirror_pad_torch
from .data import parse_patch_size
from .masker import Masker

Pass = Callable[[torch.Tensor], torch.Tensor]


def padded_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on ``x`` of any spatial size: mirror-pad to the net's size multiple, crop.

    Parameters
    ----------
    net
        A :class:`~sc_noise2self.image.cnn.networks.UNet` or
        :class:`~sc_noise2self.image.cnn.networks.DnCNN` (or any module with ``size_multiple``).
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


#: Halo of a network that does not say how far it reaches (a module without ``reach``).
DEFAULT_HALO = 32


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is cut into windows: their size, their starts, the halo each discards."""

    window: int
    starts: tuple[int, ...]
    halo: int
    size: int

    def kept(self, start: int) -> tuple[slice, slice]:
        """The slice of the image a window keeps, and the same pixels within the window."""
        first = start + self.halo if start > 0 else start
        last = start + self.window - self.halo if start + self.window < self.size else self.size
        return slice(first, last), slice(first - start, last - start)


class Tiler:
    """Run a network over windows of an image, keeping from each only its interior.

    Every window starts at a multiple of the network's down-sampling factor, so it sees the
    same pixel grid as the whole image, and keeps only the pixels at least ``halo`` from
    its edges (or at an image edge, where the whole image's pass has its border too). With
    a halo of at least the network's reach (:attr:`UNet.reach
    <sc_noise2self.image.cnn.networks.UNet.reach>`), which is the default, every kept pixel
    is computed from the same inputs as in one whole-image pass: the tiled output equals the
    untiled one up to float rounding (batch norm is a per-pixel map in evaluation mode).

    Parameters
    ----------
    net
        The network, in evaluation mode.
    tile_size
        Window size, one int or one per spatial axis; None means the whole image in one
        pass. A window too small to hold twice the halo is enlarged, with a warning.
    overlap
        Halo, in pixels, discarded on each inner side of a window (neighbouring windows
        overlap by twice it); None uses the network's reach, which makes tiles exact.
    batch_size
        Windows per pass.
    amp_dtype
        Autocast dtype, or None.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        tile_size: int | Sequence[int] | None,
        overlap: int | None = None,
        batch_size: int = 4,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        check_whole(batch_size, name="batch_size", minimum=1, hint="windows per pass")
        if overlap is not None:
            check_whole(overlap, name="tile_overlap", minimum=0,
                        hint="pixels discarded on each inner side of a tile; None: exact")
        module = unwrap(net)
        self.net, self.tile_size, self.batch_size, self.amp_dtype = (
            net, tile_size, int(batch_size), amp_dtype)
        self.multiple = int(getattr(module, "size_multiple", 1))
        self.halo = int(getattr(module, "reach", DEFAULT_HALO) if overlap is None else overlap)
        if tile_size is not None and not getattr(module, "tile_exact", True):
            warnings.warn("This network normalises by per-image statistics (instance norm), "
                          "so tiles differ from the whole image; pass tile_size=None to "
                          "predict it whole.", UserWarning, stacklevel=3)

    def plan(self, sizes: tuple[int, ...]) -> list[AxisPlan]:
        """How each axis of an image padded to the size multiple is cut into windows.

        Parameters
        ----------
        sizes
            Spatial sizes, multiples of the network's size multiple.

        Returns
        -------
        One :class:`AxisPlan` per axis.
        """
        multiple = self.multiple
        if self.tile_size is None:
            return [AxisPlan(size, (0,), 0, size) for size in sizes]
        halo = -(-self.halo // multiple) * multiple  # starts stay on the down-sampling grid
        plans = []
        for size, asked in zip(sizes, parse_patch_size(self.tile_size, len(sizes), "tile_size",
                                                        minimum=1), strict=True):
            window = max(-(-asked // multiple) * multiple, 2 * halo + multiple)
            if window >= size:
                plans.append(AxisPlan(size, (0,), 0, size))
                continue
            if window > asked:
                warnings.warn(
                    f"tile_size={self.tile_size} leaves no room for the {halo} pixels each "
                    f"side of a tile that the network's receptive field needs; tiles of "
                    f"{window} are used along an axis of {size}. Pass a larger tile_size to "
                    "silence this.",
                    UserWarning, stacklevel=4)
            step = window - 2 * halo
            starts = list(range(0, size - window + 1, step))
            if starts[-1] != size - window:
                starts.append(size - window)  # a multiple too: size and window both are
            plans.append(AxisPlan(window, tuple(starts), halo, size))
        return plans

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ``x`` ``(1, channels, *spatial)`` window by window.

        Parameters
        ----------
        x
            Normalised image on the network's device.

        Returns
        -------
        The float32 output, of ``x``'s shape.
        """
        original = tuple(x.shape[2:])
        x = mirror_pad_torch(x, [(0, -size % self.multiple) for size in original])
        plans = self.plan(tuple(x.shape[2:]))
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        corners = list(itertools.product(*(plan.starts for plan in plans)))
        for first in range(0, len(corners), self.batch_size):
            chunk = corners[first : first + self.batch_size]
            crops = [(..., *(slice(c, c + plan.window) for c, plan in zip(corner, plans,
                                                                            strict=True)))
                     for corner in chunk]  # fmt: skip
            with autocast(x.device, self.amp_dtype):
                predicted = padded_forward(self.net, torch.cat([x[crop] for crop in crops]))
            for corner, window_out in zip(chunk, predicted.float(), strict=True):
                kept = [plan.kept(c) for c, plan in zip(corner, plans, strict=True)]
                out[(..., *(k[0] for k in kept))] = window_out[(..., *(k[1] for k in kept))]
        return out[(..., *(slice(0, size) for size in original))]


def augmented(one_pass: Pass, x: torch.Tensor, transpose: bool = True) -> torch.Tensor:
    """Test-time augmentation: the mean of ``one_pass`` over flipped copies of ``x``.

    Parameters
    ----------
    one_pass
        Prediction of one ``(1, channels, *spatial)`` tensor.
    x
        The normalised image.
    transpose
        Also transpose 2D images. Off for a model that hides whole lines: its masks run
        along one axis only.

    Returns
    -------
    The mean, in float32, over the flips of every subset of the spatial axes (in 2D also
    transposed: 8 copies), each mapped back before averaging.
    """
    spatial = list(range(2, x.ndim))
    transposes = (False, True) if len(spatial) == 2 and transpose else (False,)
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
