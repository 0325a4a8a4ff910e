"""``image.denoise(x, "auto", max_time=T)``: the classical methods and a masked CNN, one budget.

The classical methods are calibrated first, in the registry's order, each started only when it is
foreseen to end within the budget's first half (at least one runs; the foresight is each
method's measured cost on 512 x 512, scaled by the image's size and by how fast the methods
so far ran). What is left, when it is at least
:data:`CNN_MIN_SECONDS`, trains a masked UNet on the image. Both are then scored on the
same pixels by the same J-invariant loss: the CNN's held-out band (the share of the image
it never trained on), each predicted with every pixel hidden from itself, in the image's
units. With ``mix=True`` each J-invariant prediction is judged as mixed with the input at
its optimal weight (:func:`~sc_noise2self.image.mixed_error`, from its loss and the noise
variance; at the optimal weight this ranks as the losses do), and the lower wins. The
classical winner is delivered mixed. A UNet that hides whole lines is delivered as it was
judged: its J-invariant prediction, mixed (unmixed, it lost 0.9 dB to the mixed NL-means in
tutorial 07). A pixel-masked UNet delivers its direct pass instead, which the paper found
about 0.5 dB better than its J-invariant prediction.
The table of every candidate's loss, expected error and seconds is kept.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results import BaselineWarning
from .classical import METHODS
from .invariant import ImageCalibration
from .mixing import mixed_error, optimal_mix_weight
from .referee import baseline_wins, neighbour_mean
from .structure import MaskChoice

#: Share of the budget within which a classical method may still be started.
CLASSICAL_SHARE = 0.5
#: The least training time given to a CNN; with less left, the classical choice stands.
CNN_MIN_SECONDS = 30.0
#: Share of the time left that trains the CNN; the rest predicts and scores.
CNN_SHARE = 0.7
#: The CNN tried, and its held-out share (train's default).
CNN_MODEL = "unet"
VAL_FRACTION = 0.1


@dataclass
class AutoChoice:
    """What ``image.denoise(..., "auto", max_time=T, return_calibration=True)`` returns.

    Attributes
    ----------
    method
        The winner: a classical method's name, or ``"unet"``.
    calibration
        The best classical calibration (its ``candidates`` hold every classical method's
        loss on the whole image).
    model
        The trained CNN, or None when the budget left none for it.
    cnn_mix_weight
        The weight of the CNN's output when it is mixed with the input: below 1 only for a
        winning CNN that hides whole lines (delivered J-invariant and mixed).
    table
        One row per candidate: ``method``, ``seconds``, ``loss``, the J-invariant loss on
        the CNN's held-out band, and ``expected_error``, the error that loss predicts for
        the J-invariant prediction mixed at its optimal weight (unmixed with ``mix=False``)
        (None for classical methods that lost to another classical method on the whole
        image, and for all when no CNN ran).
    """

    method: str
    calibration: ImageCalibration
    model: Any = None
    table: list[dict] = field(default_factory=list)
    cnn_mix_weight: float = 1.0

    def to_json(self) -> str:
        """The choice as JSON: the winner, the table and the classical calibration's record."""
        return json.dumps({"method": self.method, "table": self.table,
                           "cnn_mix_weight": self.cnn_mix_weight,
                           "calibration": json.loads(self.calibration.to_json())})

    def apply(self, floats: np.ndarray, channel_axis: int | None = None, *, mix: bool = True,
              fallback: bool = True) -> np.ndarray:
        """Denoise an image (the one chosen on, or another plane like it) with the winner.

        Parameters
        ----------
        floats
            A float image of the chosen-on image's kind (units, channels, noise).
        channel_axis
            Its channel axis, or None.
        mix, fallback
            As in :func:`~sc_noise2self.image.denoise`. A winning CNN is mixed at
            ``cnn_mix_weight`` (found with ``mix`` when it was chosen).

        Returns
        -------
        The denoised image.
        """
        if not np.issubdtype(np.asarray(floats).dtype, np.floating):
            raise TypeError(f"floats has dtype {np.asarray(floats).dtype}: pass a float image in "
                            "the units the choice was made in (image.denoise scales integers "
                            "into [0, 1]: divide by the dtype's maximum first).")
        if self.method != CNN_MODEL:
            return self.calibration.denoise(floats, mix=mix, fallback=fallback)
        return _cnn_output(self.model, floats, fallback, channel_axis, self.cnn_mix_weight)


def denoise_within(floats: np.ndarray, channel_axis: int | None, names: list[str],
                   max_time: float, calibrate_named, best_of, *, mix: bool, fallback: bool,
                   estimated: bool, progress: bool | None, masking: MaskChoice | None = None,
                   started: float | None = None) -> tuple[np.ndarray, AutoChoice]:
    """Choose and apply the best of the classical methods and a CNN within ``max_time``.

    Parameters
    ----------
    floats, channel_axis
        The checked image.
    names
        The classical methods, in the order they are tried.
    max_time
        The budget, in seconds.
    calibrate_named
        ``calibrate_named(name)``: one method's calibration
        (:func:`~sc_noise2self.image.selection.each_calibrated` of that name).
    best_of
        :func:`~sc_noise2self.image.selection.best_of`, which picks among them.
    mix, fallback, estimated, progress
        As in :func:`~sc_noise2self.image.selection.denoise`.
    masking
        The lines or blocks the classical methods hid
        (:func:`~sc_noise2self.image.structure.resolve_mask`); the CNN hides the same
        (default: pixels).
    started
        ``time.perf_counter()`` when the budget began (default now): the caller's checks,
        the structure test and the noise estimate count too.

    Returns
    -------
    The denoised image and the :class:`AutoChoice`.
    """
    started = time.perf_counter() if started is None else started
    done, table = [], []
    foresight = _Foresight(floats.size / 512**2)
    for name in names:
        # A method starts only when it is foreseen to end within the classical share.
        if done and (time.perf_counter() - started + foresight.seconds(name)
                     > CLASSICAL_SHARE * max_time):
            continue
        began = time.perf_counter()
        done.append(calibrate_named(name))
        foresight.took(name, time.perf_counter() - began)
        table.append({"method": name, "seconds": time.perf_counter() - began, "loss": None,
                      "expected_error": None})
    best = best_of(done, estimated)
    left = max_time - (time.perf_counter() - started)
    model = _trained_cnn(floats, channel_axis, CNN_SHARE * left, progress, table,
                         masking or MaskChoice((), 0, None)) if (
        left >= CNN_MIN_SECONDS / CNN_SHARE and importlib.util.find_spec("torch")) else None
    choice = AutoChoice(best.method, best, model, table)
    if model is None:
        return choice.apply(floats, channel_axis, mix=mix, fallback=fallback), choice
    band = held_out_band(floats, channel_axis)
    scores = {best.method: _band_loss(best.denoise(band, mix=False, fallback=False), band),
              CNN_MODEL: _band_loss(model.predict(band, invariant=True), band)}
    weights = {name: optimal_mix_weight(loss, best.noise_variance) if mix else 1.0
               for name, loss in scores.items()}
    expected = {name: mixed_error(weights[name], loss, best.noise_variance)
                for name, loss in scores.items()}
    for row in table:
        row["loss"] = scores.get(row["method"])
        row["expected_error"] = expected.get(row["method"])
    # Ties (both at or below the noise variance) go to the lower loss.
    if (expected[CNN_MODEL], scores[CNN_MODEL]) < (expected[best.method], scores[best.method]):
        choice.method = CNN_MODEL
        choice.cnn_mix_weight = weights[CNN_MODEL] if model.hides_structure else 1.0
    return choice.apply(floats, channel_axis, mix=mix, fallback=fallback), choice


class _Foresight:
    """Each method's foreseen seconds to calibrate.

    Its cost on 512 x 512 (``Method.seconds``), times the image's size, times how much
    slower than those costs the methods have run so far on this machine.
    """

    def __init__(self, size: float) -> None:
        self.size, self.spent, self.priced = size, 0.0, 0.0

    def seconds(self, name: str) -> float:
        pace = self.spent / self.priced if self.priced > 0 else 1.0
        return METHODS[name].seconds * self.size * pace

    def took(self, name: str, seconds: float) -> None:
        self.spent += seconds
        self.priced += METHODS[name].seconds * self.size


def _trained_cnn(floats, channel_axis, seconds: float, progress, table, masking):
    from .cnn.training import train

    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaselineWarning)  # graded below, on the band
        model = train(floats, CNN_MODEL, channel_axis=channel_axis, max_time=seconds,
                      val_fraction=VAL_FRACTION, progress=progress, mask=masking)
    table.append({"method": CNN_MODEL, "seconds": time.perf_counter() - began, "loss": None,
                  "expected_error": None})
    return model


def held_out_band(floats: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """The band the CNN held out: the last tenth of the image along its longest axis.

    As :func:`~sc_noise2self.image.cnn.data.split_validation` cuts it.
    """
    spatial = [a for a in range(floats.ndim) if a != channel_axis]
    axis = spatial[int(np.argmax([floats.shape[a] for a in spatial]))]
    length = floats.shape[axis]
    return np.take(floats, np.arange(length - round(VAL_FRACTION * length), length), axis=axis)


def _band_loss(prediction: np.ndarray, band: np.ndarray) -> float:
    """The self-supervised loss: mean squared difference from the noisy band."""
    return float(np.mean((np.asarray(prediction, np.float64) - band) ** 2))


def _cnn_output(model, floats: np.ndarray, fallback: bool, channel_axis,
                weight: float) -> np.ndarray:
    """The CNN's prediction (augmented), or the neighbour mean if it lost to it.

    A network that hides whole lines predicts J-invariantly, as it was scored, and is mixed
    with the input at ``weight``; a pixel-masked one gives its direct pass, unmixed.
    """
    if baseline_wins(f"The {CNN_MODEL} chosen by auto", model.val_loss, model.baseline_loss,
                     fallback, verb="returned"):
        return neighbour_mean(floats, channel_axis, model.line_axes,
                              model.reach).astype(np.float32)
    return mixed_prediction(model, floats, weight, augment=True)


def mixed_prediction(model, floats: np.ndarray, weight: float, **options) -> np.ndarray:
    """``weight * model.predict(floats) + (1 - weight) * floats`` (the prediction alone at 1)."""
    output = model.predict(floats, **options)
    if weight < 1.0:
        output = (weight * output + (1.0 - weight) * floats).astype(output.dtype, copy=False)
    return output
