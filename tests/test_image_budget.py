"""``image.denoise(x, "auto", max_time=T)``: classical methods and a CNN in one budget (issue 27).

The budget's constants are shrunk here so that a CNN trains for a few seconds; the
benchmark (benchmarks/RESULTS.md) runs the real ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

pytest.importorskip("torch")

from sc_noise2self import image as im
from sc_noise2self.image import budget
from sc_noise2self.image.cnn.data import split_validation
from sc_noise2self.image.referee import neighbour_mean

CLEAN = data.camera()[200:264, 200:264] / 255.0
NOISY = CLEAN + 0.1 * np.random.default_rng(0).standard_normal(CLEAN.shape)


@pytest.fixture
def short_budget(monkeypatch):
    monkeypatch.setattr(budget, "CNN_MIN_SECONDS", 1.0)
    monkeypatch.setattr(budget, "CLASSICAL_SHARE", 0.9)


def test_the_band_is_the_one_the_cnn_held_out():
    _, held_out = split_validation([NOISY[None, :, :50]], budget.VAL_FRACTION)
    np.testing.assert_array_equal(budget.held_out_band(NOISY[:, :50], None), held_out[0][0])
    rgb = np.stack([NOISY[:40]] * 3, axis=-1)  # the longest spatial axis is the second
    _, held_out = split_validation([np.moveaxis(rgb, -1, 0)], budget.VAL_FRACTION)
    np.testing.assert_array_equal(np.moveaxis(budget.held_out_band(rgb, 2), -1, 0),
                                  held_out[0])


def test_the_lowest_loss_on_the_held_out_band_wins_and_is_applied(short_budget):
    out, choice = im.denoise(NOISY, "auto", max_time=6.0, return_calibration=True,
                             progress=False)
    methods = [row["method"] for row in choice.table]
    assert methods[-1] == "unet" and choice.model is not None
    assert all(row["seconds"] > 0 for row in choice.table)
    losses = {row["method"]: row["loss"] for row in choice.table if row["loss"] is not None}
    assert set(losses) == {choice.calibration.method, "unet"}
    band = budget.held_out_band(NOISY, None)
    expected = np.mean((choice.model.predict(band, invariant=True) - band) ** 2)
    assert losses["unet"] == pytest.approx(expected)  # J-invariant, on the band
    # The winner delivers the lower expected error: the classical output is mixed.
    expected = {row["method"]: row["expected_error"] for row in choice.table
                if row["expected_error"] is not None}
    variance = choice.calibration.noise_variance
    weight = im.optimal_mix_weight(losses[choice.calibration.method], variance)
    assert expected[choice.calibration.method] == pytest.approx(
        im.mixed_error(weight, losses[choice.calibration.method], variance))
    assert expected["unet"] == pytest.approx(max(losses["unet"] - variance, 0.0))
    assert choice.method == min(expected, key=expected.get)
    if choice.method == "unet":
        lost = choice.model.val_loss >= choice.model.baseline_loss
        expected_out = (neighbour_mean(NOISY) if lost
                        else choice.model.predict(NOISY, augment=True))
    else:
        expected_out = choice.calibration.denoise(NOISY)
    np.testing.assert_allclose(out, expected_out, atol=1e-6)


def test_a_budget_too_short_for_a_cnn_keeps_the_classical_choice():
    out, choice = im.denoise(NOISY, "auto", max_time=1e-3, return_calibration=True,
                             progress=False)
    assert choice.model is None and [r["method"] for r in choice.table] == [
        choice.calibration.method]  # only the first method started within the budget
    np.testing.assert_allclose(out, choice.calibration.denoise(NOISY))


def test_the_classical_output_is_judged_mixed_as_it_is_delivered(short_budget, monkeypatch):
    """A UNet with a slightly lower band loss than the unmixed classical output loses when
    the mixed classical output's expected error is lower (tutorial 07's case), and wins when
    the classical output is not mixed.

    Mutation: rank by the raw band loss: the UNet wins the first case too.
    """
    def band_losses(*args):
        losses = iter([0.0033197, 0.0032307])  # NL-means, then the UNet (tutorial 07)
        return lambda prediction, band: next(losses)

    chosen = {}
    for mix in (True, False):
        monkeypatch.setattr(budget, "_band_loss", band_losses())
        _, choice = im.denoise(NOISY, "auto", max_time=6.0, return_calibration=True,
                               progress=False, noise_variance=0.002416, mix=mix)
        chosen[mix] = choice.method
    assert chosen[True] != "unet" and chosen[False] == "unet"
