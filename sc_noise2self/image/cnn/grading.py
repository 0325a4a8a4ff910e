"""The referee of the CNNs: a trained network is graded against the J-invariant neighbour mean.

Training records the held-out loss of the neighbour mean on the validation band, beside the
network's own (:attr:`~sc_noise2self.image.cnn.model.Noise2SelfModel.beats_baseline`), and
warns when the network does not beat it; it also warns when a run ended on its budget while
the held-out loss was still falling. :func:`~sc_noise2self.image.cnn.training.denoise_cnn`
then returns :func:`baseline_output` instead of the network's prediction.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..checks import normalise_channel_axis
from ..referee import neighbour_mean, warn_lost
from .model import Noise2SelfModel

#: A budget-ended run whose last quarter of epochs gave more than this share of its whole
#: improvement of the held-out loss was still learning when it stopped.
STILL_LEARNING = 0.1


class ConvergenceWarning(UserWarning):
    """Training ended on its budget while the held-out loss was still falling."""


def report(fitted: Noise2SelfModel) -> None:
    """Warn when a trained network loses to the baseline, or stopped while still learning.

    Parameters
    ----------
    fitted
        The model :func:`~sc_noise2self.image.cnn.training.train` returns; its history
        gains ``beats_baseline``.
    """
    history = fitted.history
    history["beats_baseline"] = fitted.beats_baseline
    if fitted.beats_baseline is False:
        warn_lost(f"The trained {fitted.config.model} ({steps_done(history)})",
                  fitted.val_loss, fitted.baseline_loss, "It has not learned to denoise yet: "
                  "train longer (steps=, max_time=); image.denoise returns the neighbour mean "
                  "instead.", stacklevel=3)
    share = late_improvement(history.get("val_loss", []))
    if history.get("stopped") in ("steps", "max_time") and share is not None:
        budget = (f"max_time={fitted.config.max_time:g} s" if history["stopped"] == "max_time"
                  else f"steps={fitted.config.steps}")
        warnings.warn(
            f"Training ended on its budget ({budget}, {steps_done(history)}) while the "
            f"held-out loss was still falling: the last quarter of the epochs gave "
            f"{share:.0%} of its improvement. The network is likely under-trained; give it "
            "more steps or time.", ConvergenceWarning, stacklevel=3)


def steps_done(history: dict) -> str:
    """How many steps the run of ``history`` took, in words: ``"1 step"``, ``"20 steps"``."""
    n = history["step"][-1] if history.get("step") else 0
    return f"{n} step" + ("" if n == 1 else "s")


def late_improvement(val_losses) -> float | None:
    """Share of the held-out loss's improvement that came in the last quarter of the epochs.

    Parameters
    ----------
    val_losses
        The held-out loss after each epoch.

    Returns
    -------
    The share when above :data:`STILL_LEARNING`; None when the loss flattened, or when
    there is nothing to tell (fewer than 2 epochs, no validation).
    """
    losses = np.asarray(val_losses, dtype=float)
    if losses.size < 2 or not np.isfinite(losses).all():
        return None
    cut = losses.size - max(1, losses.size // 4)
    total = losses[0] - losses.min()
    late = losses[:cut].min() - losses.min()
    if not total > 0 or late <= STILL_LEARNING * total:
        return None
    return float(late / total)


def baseline_output(fitted: Noise2SelfModel, floats: np.ndarray) -> np.ndarray:
    """The baseline's output: the neighbour mean of one image, or of each image of a stack.

    Parameters
    ----------
    fitted
        The model, for the images' layout.
    floats
        The image (or stack) as floats, in its own units.

    Returns
    -------
    Float array of the input's shape.
    """
    layout = fitted.layout
    axis = normalise_channel_axis(layout.channel_axis, layout.image_ndim)
    dtype = np.result_type(floats.dtype, np.float32)
    if floats.ndim == layout.image_ndim + 1:
        return np.stack([neighbour_mean(one, axis, fitted.line_axes, fitted.reach)
                         for one in floats]).astype(dtype)
    return neighbour_mean(floats, axis, fitted.line_axes,
                          fitted.reach).astype(dtype, copy=False)
