"""The loss as referee for images: failed settings, the neighbour-mean baseline, units,
impossible noise variances and constant images (issue 15)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage import data
from skimage.util import img_as_float

from sc_noise2self import image as im
from sc_noise2self.image.referee import BaselineWarning, neighbour_mean

SIGMA = 0.1


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    clean = img_as_float(data.camera())[200:264, 200:264]
    return clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)


def shifted(image: np.ndarray, *, by: float) -> np.ndarray:
    """A user denoiser that adds a constant: it loses to any sensible baseline."""
    return image + by


def nan_at_two(image: np.ndarray, *, k: int) -> np.ndarray:
    """A user denoiser that fails (NaN everywhere) at k=2 only."""
    from scipy import ndimage as ndi

    return np.full(image.shape, np.nan) if k == 2 else ndi.uniform_filter(image, 2 * k + 1)


QUIET = {"n_jobs": 1, "progress": False}


# --- non-finite losses never win ------------------------------------------------------------


def test_a_nan_loss_never_wins_and_is_named(noisy):
    with pytest.warns(UserWarning, match=r"\{'k': 2\} \(NaN\).*cannot be chosen"):
        calibration = im.calibrate(noisy, nan_at_two, {"k": [1, 2, 3]}, **QUIET)
    assert np.isnan(calibration.losses[1]) and np.isfinite(calibration.losses[[0, 2]]).all()
    assert calibration.best_params["k"] != 2
    assert calibration.best_loss == np.nanmin(calibration.losses)
    np.testing.assert_array_equal(calibration.failed, [1])


def test_no_finite_loss_is_refused(noisy):
    with pytest.raises(ValueError, match="No parameter set of 'nan_at_two' gave a finite"):
        im.calibrate(noisy, nan_at_two, {"k": [2]}, **QUIET)


def test_a_nan_loss_never_wins_through_denoise_either(noisy):
    grid = {"sigma": [1.0, 2.0]}

    def nan_gaussian(image, *, sigma):
        out = im.METHODS["gaussian"].function(image, sigma=sigma)
        return out * np.nan if sigma == 1.0 else out

    with pytest.warns(UserWarning, match="sigma.*1.0.*NaN"):
        calibration = im.calibrate(noisy, nan_gaussian, grid, **QUIET)
    assert calibration.best_params == {"sigma": 2.0}
    assert np.isfinite(calibration.denoise(noisy)).all()


# --- the baseline -----------------------------------------------------------------------------


def test_calibrations_record_the_baseline_and_beat_it_on_a_real_image(noisy):
    calibration = im.calibrate(noisy, "tv", **QUIET)
    # The neighbour mean of 4 neighbours: the noise variance, plus a quarter of it, plus the
    # image's own roughness.
    assert calibration.baseline_loss > 1.25 * SIGMA**2 * 0.9
    assert calibration.beats_baseline and calibration.best_loss < calibration.baseline_loss
    rebuilt = im.ImageCalibration.from_dict(calibration.to_dict())
    assert rebuilt.baseline_loss == calibration.baseline_loss


def test_the_identity_under_masking_is_exactly_the_baseline(noisy):
    calibration = im.calibrate(noisy, lambda x, k: x, {"k": [0]}, **QUIET)
    assert calibration.best_loss == pytest.approx(calibration.baseline_loss, rel=1e-12)


def test_a_losing_denoiser_warns_and_falls_back_to_the_neighbour_mean(noisy):
    with pytest.warns(BaselineWarning, match=r"no better than .* neighbour mean"):
        calibration = im.calibrate(noisy, shifted, {"by": [0.5, 1.0]}, noise_variance=0.01,
                                   **QUIET)  # fmt: skip
    assert calibration.beats_baseline is False
    with pytest.warns(BaselineWarning, match="returned instead"):
        out = calibration.denoise(noisy)
    weight = im.optimal_mix_weight(calibration.baseline_loss, 0.01)
    np.testing.assert_allclose(out, weight * neighbour_mean(noisy) + (1 - weight) * noisy)
    with pytest.warns(BaselineWarning, match="fallback=False"):
        kept = calibration.denoise(noisy, mix=False, fallback=False)
    np.testing.assert_allclose(kept, neighbour_mean(noisy) + 0.5)  # J-invariant, then shifted


def test_denoise_falls_back_when_the_chosen_output_loses(noisy):
    bad_grid = {"weight": [100.0]}  # flattens the image: far worse than the neighbour mean
    with pytest.warns(BaselineWarning) as caught:
        out, calibration = im.denoise(noisy, "tv", param_grid=bad_grid, mix=False,
                                      return_calibration=True, **QUIET)  # fmt: skip
    assert len(caught) == 1  # graded once, on the output returned
    assert "tv" in str(caught[0].message) and f"{calibration.baseline_loss:.6g}" in str(
        caught[0].message)
    np.testing.assert_allclose(out, neighbour_mean(noisy))
    with pytest.warns(BaselineWarning):
        plain = im.denoise(noisy, "tv", param_grid=bad_grid, mix=False, fallback=False, **QUIET)
    assert np.abs(plain - neighbour_mean(noisy)).max() > 0.1


def test_a_good_method_gives_no_warning(noisy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im.denoise(noisy, "nl_means", **QUIET)


# --- noise variance and mixing ----------------------------------------------------------------


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_impossible_noise_variances_are_refused(noisy, value):
    with pytest.raises(ValueError, match="noise_variance="):
        im.denoise(noisy, "gaussian", noise_variance=value, **QUIET)
    with pytest.raises(ValueError, match="noise_variance="):
        im.calibrate(noisy, "gaussian", noise_variance=value, **QUIET)
    with pytest.raises(ValueError, match="noise_variance="):
        im.optimal_mix_weight(0.01, value)


@pytest.mark.parametrize("loss", [-0.01, float("nan")])
def test_impossible_losses_are_refused_by_the_mixing(loss):
    with pytest.raises(ValueError, match="loss="):
        im.optimal_mix_weight(loss, 0.01)
    with pytest.raises(ValueError, match="loss="):
        im.mixed_error(0.5, loss, 0.01)


@pytest.mark.parametrize("shape", [(2, 2), (4, 40), (7, 7)])
def test_noise_variance_of_too_small_an_image_is_refused(shape):
    with pytest.raises(ValueError, match="too small to estimate its noise variance"):
        im.estimate_noise_variance(np.random.default_rng(0).random(shape))


def test_noise_variance_of_an_image_with_nan_is_refused(noisy):
    image = noisy.copy()
    image[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        im.estimate_noise_variance(image)


@pytest.mark.parametrize("factor", [1e-30, 1e6, 1e30, 1e100])
def test_noise_variance_does_not_depend_on_units(noisy, factor):
    reference = im.estimate_noise_variance(noisy)
    assert im.estimate_noise_variance(noisy * factor) == pytest.approx(reference * factor**2,
                                                                       rel=2e-3)


# --- units, constant and extreme images -----------------------------------------------------


@pytest.mark.parametrize("factor", [1e-20, 1e5, 1e40])
@pytest.mark.parametrize("method", ["tv", "wavelet", "nl_means"])
def test_calibration_does_not_depend_on_the_image_units(noisy, factor, method):
    if method not in im.available_methods():
        pytest.skip(f"{method} not installed")
    offset = 3.0 * factor  # far from zero too: float32 work keeps its precision
    plain = im.calibrate(noisy, method, **QUIET)
    scaled = im.calibrate(noisy * factor + offset, method, **QUIET)
    assert scaled.best_index == plain.best_index
    np.testing.assert_allclose(scaled.losses / factor**2, plain.losses, rtol=1e-3)
    assert scaled.noise_variance / factor**2 == pytest.approx(plain.noise_variance, rel=1e-3)
    out = (scaled.denoise(noisy * factor + offset) - offset) / factor
    np.testing.assert_allclose(out, plain.denoise(noisy), atol=2e-3)


def test_images_whose_squares_leave_float64_are_refused_clearly(noisy):
    for factor in (1e200, 1e-200):
        with pytest.raises(ValueError, match="Rescale it first"):
            im.calibrate(noisy * factor, "tv", **QUIET)
        with pytest.raises(ValueError, match="Rescale it first"):
            im.estimate_noise_variance(noisy * factor)


@pytest.mark.parametrize("method", ["auto", "wavelet", "nl_means"])
def test_a_constant_image_is_returned_unchanged(method):
    constant = np.full((32, 32), 0.3)
    with pytest.warns(UserWarning, match="constant"):
        out, calibration = im.denoise(constant, method, return_calibration=True, **QUIET)
    np.testing.assert_array_equal(out, constant)
    assert calibration is None


@pytest.mark.parametrize("method", ["median", "gaussian", "wavelet", "nl_means", "tv",
                                    "bilateral"])
def test_calibrating_a_constant_image_gives_finite_losses(method):
    if method not in im.available_methods():
        pytest.skip(f"{method} not installed")
    constant = np.full((24, 24), 7.0)
    with pytest.warns(UserWarning, match="constant"):
        calibration = im.calibrate(constant, method, **QUIET)
    assert np.isfinite(calibration.losses).all()
    assert calibration.noise_variance == 0.0
    with pytest.warns(UserWarning, match="constant"):
        np.testing.assert_array_equal(calibration.denoise(constant), constant)


def test_a_noiseless_image_gets_a_finite_calibration():
    # Noise variance 0: the default grids must not be all zeros (thresholds of 0 divide by 0).
    y, x = np.mgrid[0:40, 0:40]
    clean = (x > 20).astype(float) + 0.5 * (y > 10)
    for method in ("wavelet", "nl_means", "tv"):
        calibration = im.calibrate(clean, method, **QUIET)
        assert np.isfinite(calibration.losses).all(), method


def test_rgb_without_channel_axis_names_channel_axis(noisy):
    rgb = np.stack([noisy] * 3, axis=-1)
    with pytest.raises(ValueError, match=r"pass channel_axis=-1"):
        im.denoise(rgb, "gaussian", **QUIET)
    out = im.denoise(rgb, "gaussian", channel_axis=-1, **QUIET)
    assert out.shape == rgb.shape


def test_one_fallback_decides_and_words_every_image_path():
    # The single grade that image.denoise, denoise_cnn, predict_blocks and the napari widget
    # share (issue 26: four copies): True only when the output loses and fallback is on.
    from sc_noise2self.image.referee import baseline_wins

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert baseline_wins("x", 0.5, 1.0, True) is False  # it wins: silent
        assert baseline_wins("x", None, 1.0, True) is False  # unknown: silent
    with pytest.warns(BaselineWarning, match="neighbour mean is written instead; train longer"):
        assert baseline_wins("x", 1.0, 0.5, True, verb="written", advice="train longer, or ")
    with pytest.warns(BaselineWarning, match="Its output is shown anyway"):
        assert baseline_wins("x", 1.0, 0.5, False, verb="shown") is False
