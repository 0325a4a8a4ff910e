"""Step 1 and 3 for the CNNs: hide pixels of a batch, and score the output on them only.

The partitions themselves come from :mod:`sc_noise2self.image.masking_torch`, the torch
twin of the module that masks images for the classical J-invariant wrapper.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..._validation import check_choice
from ..checks import check_stride
from ..masking import TORCH_REPLACEMENTS, block_stride, phase_offsets
from ..masking_torch import hide_torch, phase_mask_torch, random_mask_torch
from ..structure import StructuredNoiseWarning

MASKINGS: tuple[str, ...] = ("random", "grid")
REPLACEMENTS: tuple[str, ...] = TORCH_REPLACEMENTS


@dataclass(frozen=True)
class Masker:
    """Hide pixels and replace them by values that carry no information about them.

    Parameters
    ----------
    masking
        ``"random"``: each pixel is hidden independently with probability
        ``1 / stride ** n_spatial`` (the paper's 1/25 in 2D). ``"grid"``: one random phase
        of the stride grid per sample (see :func:`~sc_noise2self.image.masking.grid_masks`).
    replacement
        ``"random"``: uniform values in [0, 1] (the normalised intensity range), as in the
        paper. ``"mean"``: the mean of the face neighbours; only with ``"grid"`` masking,
        because a random subset can hide two neighbours, and then each one's stand-in would
        leak the other's value.
    stride
        Grid spacing, at least 2.
    n_spatial
        2 or 3.
    line_axes
        Spatial axes along which whole lines are hidden (structN2V's purpose, exactly):
        the unit of masking is then a line, drawn or gridded along the other axes, and
        ``"mean"`` and ``"median"`` stand-ins come from the neighbouring lines.
    reach
        Half-width of the block hidden around each scored pixel, for noise correlated along
        every axis (structN2V's square masks): grid masking only, the grid spaced at least
        ``2 reach + 2``, and ``"mean"`` stand-ins read ``reach + 1`` pixels away (or
        ``"random"`` ones). The loss is scored on the centres only.
    """

    masking: str
    replacement: str
    stride: int
    n_spatial: int
    line_axes: tuple[int, ...] = ()
    reach: int = 0

    def __post_init__(self) -> None:
        check_choice(self.masking, MASKINGS, name="masking")
        check_choice(self.replacement, REPLACEMENTS, name="replacement")
        check_stride(self.stride, name="mask_stride")
        if self.masking == "random" and self.replacement == "mean":
            raise ValueError(
                "replacement='mean' is not J-invariant with masking='random' (two hidden "
                "neighbours would see each other through their stand-ins); use "
                "masking='grid' with it, or replacement='random'."
            )
        if self.reach and (self.masking != "grid" or self.replacement == "median"):
            raise ValueError(
                f"Blocks (reach {self.reach}, for noise correlated along every axis) need "
                f"masking='grid' and replacement='mean' or 'random' (got "
                f"masking={self.masking!r}, replacement={self.replacement!r}): random "
                "blocks could overlap, and a median stand-in is not read outside the block."
            )

    @property
    def grid_stride(self) -> int:
        """The grid's spacing: ``stride``, widened for blocks so that none touches another."""
        return block_stride(self.stride, self.reach)

    @property
    def n_gridded(self) -> int:
        """Number of spatial axes the grid (or the random draw) runs along."""
        return self.n_spatial - len(self.line_axes)

    @property
    def density(self) -> float:
        """Expected fraction of hidden pixels."""
        return float(self.grid_stride) ** -self.n_gridded

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A boolean mask ``(batch, 1, *spatial)`` of hidden pixels (channels hidden together).

        Parameters
        ----------
        x
            The batch ``(batch, channels, *spatial)``.
        generator
            Seeded generator on ``x``'s device.

        Returns
        -------
        The mask.
        """
        shape = (x.shape[0], 1, *x.shape[2:])
        if self.masking == "random":
            return random_mask_torch(shape, self.density, generator, self.line_axes)
        offsets = torch.randint(
            self.grid_stride, (x.shape[0], self.n_gridded), generator=generator,
            device=x.device,
        )
        return self.phase_mask(shape, offsets)

    def phase_mask(self, shape: tuple[int, ...], offsets: torch.Tensor) -> torch.Tensor:
        """Mask of the grid phase ``offsets[b]`` for every sample ``b``.

        Parameters
        ----------
        shape
            ``(batch, 1, *spatial)``.
        offsets
            ``(batch, n_gridded)`` integers in ``[0, grid_stride)``.

        Returns
        -------
        Boolean tensor of ``shape``.
        """
        return phase_mask_torch(shape, self.grid_stride, offsets, self.line_axes)

    def replace(
        self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``x`` with the hidden pixels replaced (a new tensor; differentiable in ``x``).

        Parameters
        ----------
        x
            ``(batch, channels, *spatial)``.
        mask
            From :meth:`sample` or :meth:`phase_mask`.
        generator
            Seeded generator on ``x``'s device (used by ``"random"``).

        Returns
        -------
        The masked input.
        """
        return hide_torch(x, mask, self.replacement, generator, self.line_axes, self.reach)

    def every_phase(
        self, x: torch.Tensor, generator: torch.Generator,
        phases: Sequence[int] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``x`` masked on each grid phase in turn: together they hide every pixel once.

        Parameters
        ----------
        x
            One image ``(1, channels, *spatial)``.
        generator
            Seeded generator on ``x``'s device (used by ``"random"`` stand-ins).
        phases
            Indices of the phases to yield (default all), into
            :func:`~sc_noise2self.image.masking.phase_offsets` order.

        Yields
        ------
        ``(masked, mask)`` per phase, in that order; one masked copy exists at a time.
        """
        for mask in self.phase_masks(x, phases):
            yield self.replace(x, mask, generator), mask

    @property
    def n_phases(self) -> int:
        """Number of grid phases: ``grid_stride ** n_gridded``."""
        return self.grid_stride**self.n_gridded

    def phase_masks(self, x: torch.Tensor,
                    phases: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        """The masks of :meth:`every_phase`, without the masked copies."""
        every = phase_offsets(self.grid_stride, self.n_gridded)
        shape = (1, 1, *x.shape[2:])
        for index in range(len(every)) if phases is None else phases:
            yield self.phase_mask(shape, torch.tensor([every[index]], device=x.device))


def cnn_reach(reach: int, masking: str, replacement: str, *, asked: bool) -> int:
    """The blocks a CNN hides: ``reach``, or 0 when its masks cannot hide blocks.

    Blocks need grid masking with mean or random stand-ins (see :class:`Masker`). When they
    were ``asked`` for (``mask="blocks"``) any other masks are refused by :class:`Masker`;
    when the detector chose them, pixel masks are kept with a warning, as before blocks
    existed, so that the paper's random masking still trains.
    """
    if not reach or asked or (masking == "grid" and replacement != "median"):
        return reach
    warnings.warn(f"The noise is correlated along every axis, but masking={masking!r} with "
                  f"replacement={replacement!r} cannot hide blocks: pixel masks are kept, and "
                  "the losses are biased low. Pass masking='grid' (the default) to hide "
                  "blocks, or mask='pixel' to silence this.", StructuredNoiseWarning,
                  stacklevel=3)
    return 0


def masked_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels only.

    Parameters
    ----------
    output, target
        ``(batch, channels, *spatial)``.
    mask
        ``(batch, 1, *spatial)`` boolean mask of hidden pixels.

    Returns
    -------
    Scalar loss (float32 even under AMP).
    """
    weight = mask.to(torch.float32)
    squared = (output.float() - target.float()) ** 2 * weight
    count = weight.sum() * output.shape[1]
    return squared.sum() / count.clamp_min(1.0)
