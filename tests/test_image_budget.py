"""``image.denoise(x, "auto", max_time=T)``: classical methods and a CNN in one budget (issue 27).

The budget's constants are shrunk here so that a CNN trains for a few seconds; the
benchmark (benchmarks/RESULTS.md) runs the real ones.
"""

from __future__ import annotations

import warnings

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
    # Each is judged as mixed at its optimal weight, which ranks as the losses do.
    expected = {row["method"]: row["expected_error"] for row in choice.table
                if row["expected_error"] is not None}
    variance = choice.calibration.noise_variance
    for name, loss in losses.items():
        weight = im.optimal_mix_weight(loss, variance)
        assert expected[name] == pytest.approx(im.mixed_error(weight, loss, variance))
    assert choice.method == min(expected, key=expected.get) == min(losses, key=losses.get)
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


def test_a_line_unet_that_wins_is_delivered_as_it_was_judged(short_budget, monkeypatch):
    """Row-correlated noise: the UNet hides whole rows, wins on its (forced) band loss, and
    is delivered J-invariant and mixed at the weight its loss gives.

    Mutation: deliver it unmixed (tutorial 07 lost 0.9 dB so): the output then differs.
    """
    from scipy import ndimage as ndi

    rows = ndi.correlate1d(np.random.default_rng(1).normal(0, 0.1, CLEAN.shape),
                           np.ones(5) / np.sqrt(5), axis=1)
    striped = CLEAN + rows
    losses = iter([0.02, 0.012])  # the classical method's band loss, then the UNet's
    monkeypatch.setattr(budget, "_band_loss", lambda prediction, band: next(losses))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, choice = im.denoise(striped, "auto", max_time=6.0, return_calibration=True,
                                 progress=False, noise_variance=0.01, fallback=False)
    assert choice.method == "unet" and choice.model.line_axes == (1,)
    weight = im.optimal_mix_weight(0.012, 0.01)
    assert 0.5 < weight < 1.0
    expected = weight * choice.model.predict(striped, augment=True) + (1 - weight) * striped
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_a_method_foreseen_to_overrun_the_classical_share_is_not_started(monkeypatch):
    """Mutation: start every method while the share lasts, whatever its cost: the slow one
    then runs (and on camera with T = 20 s, ``auto`` took 21.3 s so)."""
    from dataclasses import replace

    from sc_noise2self.image import classical

    slow = replace(classical.METHODS["bilateral"], seconds=1e6)
    monkeypatch.setitem(classical.METHODS, "bilateral", slow)
    _, choice = im.denoise(NOISY, "auto", max_time=20.0, return_calibration=True,
                           progress=False)
    started = [row["method"] for row in choice.table]
    assert "bilateral" not in started and "median" in started and "tv" in started


def test_under_noise_correlated_both_ways_the_unet_hides_the_same_blocks(short_budget):
    """The CNN in the budget hides what the classical methods hid: blocks of the same reach,
    scored on the band with them (``model.reach``), and a winning block UNet is mixed.

    Mutation: train the UNet on pixel masks (``masking`` not passed to ``train``): its reach
    is then 0 and its band loss sees the correlated noise.
    """
    from scipy import ndimage as ndi

    noise = np.random.default_rng(3).normal(0, 0.1, CLEAN.shape)
    for axis in (0, 1):
        noise = ndi.correlate1d(noise, np.ones(3) / np.sqrt(3), axis=axis, mode="wrap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, choice = im.denoise(CLEAN + noise, "auto", max_time=6.0, return_calibration=True,
                               progress=False)
    assert choice.calibration.settings["mask"] == "blocks"
    assert choice.model is not None and choice.model.reach == choice.calibration.reach == 2
    assert choice.model.hides_structure
