"""The referee for images: every output is graded against the J-invariant neighbour mean.

The baseline predicts every pixel by the mean of its face neighbours (the stand-in values of
:func:`~sc_noise2self.image.masking.replacement_values`): J-invariant, and blind to any
structure beyond the next pixel. A denoiser whose self-supervised loss does not beat it has
found nothing above noise, and the user is told so with both losses; ``image.denoise`` then
returns the baseline instead. A non-finite loss marks a failed setting: it never wins, it
is named, and a calibration in which every setting failed is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..results import BaselineWarning
from .masking import Mask, replacement_values
from .units import IDENTITY, Units

#: How the messages call the baseline.
BASELINE = "the J-invariant neighbour mean (each pixel predicted by the mean of its neighbours)"


def neighbour_mean(image: np.ndarray, channel_axis: int | None = None,
                   line_axes: Sequence[int] = (), reach: int = 0) -> np.ndarray:
    """The baseline's output: every pixel replaced by the mean of its face neighbours.

    Parameters
    ----------
    image
        Float image.
    channel_axis
        Non-negative channel axis, or None; channels never mix.
    line_axes
        Spatial axes along which the noise is correlated: neighbours along them are left
        out, so that the baseline stays J-invariant (the pixels above and below, for rows).
    reach
        For noise correlated along every axis, within ``reach`` pixels: the neighbours are
        taken ``reach + 1`` pixels away, outside the correlation.

    Returns
    -------
    Array of the image's shape and dtype (mirrored borders).
    """
    return replacement_values(image, "mean", channel_axis=channel_axis, line_axes=line_axes,
                              reach=reach)


def baseline_loss(image: np.ndarray, stand_ins: np.ndarray, masks: Sequence[Mask],
                  units: Units = IDENTITY) -> float:
    """Self-supervised MSE of the neighbour mean over the pixels of ``masks``, in working units.

    Parameters
    ----------
    image
        Float image, in its own units.
    stand_ins
        The neighbour means, in working units (as the masked copies hold them).
    masks
        The phases that the losses it is compared with were scored on.
    units
        The working units.

    Returns
    -------
    The loss, summed in float64 one phase at a time (no full-size temporary).
    """
    total, count = 0.0, 0
    for mask in masks:
        errors = stand_ins[mask].astype(np.float64) - units.forward(image[mask], np.float64)
        # Not np.dot: OpenBLAS took 8 ms per 16k-pixel phase on a busy 2-core machine
        # (its threads wait for a free core), against 0.01 ms for numpy's own sum.
        total += float(np.sum(errors**2))
        count += errors.size
    return total / max(count, 1)


def check_losses(losses: np.ndarray, grid: Sequence[dict], method: str) -> None:
    """Refuse a calibration in which every setting failed; name the settings that failed.

    Parameters
    ----------
    losses
        One loss per parameter set.
    grid
        The parameter sets.
    method
        The denoiser's name, for the messages.
    """
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError(
            f"No parameter set of {method!r} gave a finite self-supervised loss: on this image "
            f"the denoiser returned NaN or infinite values for every one of {list(grid)}. "
            f"Check its output, e.g. on the image with one parameter set, or try another grid."
        )
    if not finite.all():
        failed = [f"{dict(grid[i])} ({'NaN' if np.isnan(losses[i]) else 'infinite'})"
                  for i in np.flatnonzero(~finite)]
        warnings.warn(
            f"Parameter sets {', '.join(failed)} of {method!r} gave a non-finite "
            "self-supervised loss (the denoiser's output held NaN or infinite values), so "
            "they cannot be chosen; the best is taken among the others.",
            UserWarning, stacklevel=3,
        )


def loses(loss: float | None, baseline: float | None) -> bool:
    """True when ``loss`` does not beat ``baseline`` (False when either is unknown).

    Parameters
    ----------
    loss
        Self-supervised loss of the chosen output.
    baseline
        The neighbour mean's, on the same pixels.

    Returns
    -------
    ``loss >= baseline``.
    """
    return loss is not None and baseline is not None and not loss < baseline


def baseline_wins(what: str, loss: float | None, baseline: float | None, fallback: bool, *,
                  verb: str = "returned", advice: str = "", stacklevel: int = 2) -> bool:
    """Grade an output against the neighbour mean: the one fallback of every image path.

    When the output's loss is no better than the baseline's, the user is warned with both
    losses and told what happens, and the answer is True when the caller must use the
    neighbour mean instead (``fallback=True``).

    Parameters
    ----------
    what
        The output graded, e.g. ``"The unet trained on this image (200 steps)"``.
    loss, baseline
        Their self-supervised losses; None (unknown) never loses.
    fallback
        Use the neighbour mean when the output loses (True), or keep the output (False).
    verb
        What is done with the result: ``"returned"``, ``"written"``, ``"shown"``.
    advice
        Advice before the ``fallback=False`` hint, e.g. ``"train longer (steps=), or "``.
    stacklevel
        As in :func:`warn_lost`, counted from the caller of this function.

    Returns
    -------
    True when the neighbour mean replaces the output.
    """
    if not loses(loss, baseline):
        return False
    outcome = (f"The neighbour mean is {verb} instead; {advice}pass fallback=False to have "
               f"the output {verb} anyway." if fallback
               else f"Its output is {verb} anyway, as fallback=False asks.")
    warn_lost(what, loss, baseline, outcome, stacklevel=stacklevel + 1)
    return fallback


def warn_lost(what: str, loss: float, baseline: float, outcome: str, stacklevel: int = 2) -> None:
    """Tell the user, with both losses, that an output does not beat the baseline.

    Parameters
    ----------
    what
        The output graded, e.g. ``"'tv' with weight=0.01"``.
    loss, baseline
        Its self-supervised loss and the baseline's.
    outcome
        What is done about it, e.g. ``"the neighbour mean is returned instead"``.
    stacklevel
        Frames above :func:`warn_lost` that the warning names: 2 (the default) is the
        caller of the function that calls it.
    """
    warnings.warn(
        f"{what} has a self-supervised loss of {loss:.6g}, no better than {baseline:.6g} of "
        f"{BASELINE}: it finds no structure above the noise. {outcome}",
        BaselineWarning, stacklevel=stacklevel + 1,
    )
