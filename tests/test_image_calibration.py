"""J-invariance, the paper's loss identity, agreement with scikit-image, mixing, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, restoration
from skimage.util import img_as_float

from sc_noise2self import image as im

SIGMA = 0.1


def camera_crop(size: int = 64, offset: int = 200) -> np.ndarray:
    """A textured patch of scikit-image's camera, floats in [0, 1]."""
    return img_as_float(data.camera())[offset : offset + size, offset : offset + size]


def with_noise(clean: np.ndarray, sigma: float = SIGMA, seed: int = 0) -> np.ndarray:
    return clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return camera_crop()


@pytest.fixture(scope="module")
def noisy(clean) -> np.ndarray:
    return with_noise(clean)


def volume(seed: int = 0) -> np.ndarray:
    """A small smooth 3D volume with noise."""
    z, y, x = np.mgrid[0:12, 0:14, 0:16] / 6.0
    rng = np.random.default_rng(seed)
    return np.sin(z + y) * np.cos(x) + 0.2 * rng.standard_normal(z.shape)


# Small search windows keep 3D non-local means fast enough for a unit test.
QUICK_PARAMS = {"nl_means": {"h": [0.1], "patch_size": [3], "patch_distance": [2]}}


def invariant_output(image, method: str, channel_axis=None) -> np.ndarray:
    """The J-invariant output of a built-in method at its default (or quick) parameters."""
    sd = 0.1
    params = {k: [v] for k, v in im.METHODS[method].defaults(sd).items()}
    params = (
        QUICK_PARAMS.get(method)
        or params
        or {k: [v[0]] for k, v in im.METHODS[method].grid(sd).items()}
    )
    calibration = im.calibrate(
        image, method, params, n_jobs=1, progress=False, noise_variance=sd**2,
        channel_axis=channel_axis, stride=_stride(method),
    )  # fmt: skip
    # fallback=False: the method's own output, even where the neighbour mean would beat it.
    return calibration.denoise(image, mix=False, fallback=False)


def _stride(method: str) -> int:
    return 2 if method == "bm3d" else 4  # bm3d takes seconds per call


def change_phase(image, mask, seed=1) -> np.ndarray:
    changed = image.copy()
    changed[mask] = np.random.default_rng(seed).uniform(-1, 2, changed[mask].shape)
    return changed


def assert_invariant(image, run, stride=4, channel_axis=None) -> None:
    """Change the pixels of two phases in turn: the output there must not move.

    The tolerance only absorbs bm3d's run-to-run jitter (1e-7); a dependence on the
    changed pixels (values moved by ~1) shows up orders of magnitude above it.
    """
    axis = None if channel_axis is None else channel_axis % image.ndim
    masks = im.grid_masks(image.shape, stride, axis)
    reference = run(image)
    for mask in (masks[0], masks[len(masks) // 2 + 1]):
        changed = run(change_phase(image, mask))
        np.testing.assert_allclose(changed[mask], reference[mask], rtol=0, atol=1e-6)


def _skip_missing(method: str) -> None:
    if method not in im.available_methods():
        pytest.skip(f"{method!r} needs {im.METHODS[method].requires}, not installed")


@pytest.mark.parametrize("method", list(im.METHODS))
def test_every_method_is_j_invariant_in_2d(method, noisy):
    _skip_missing(method)
    image = noisy[:16, :16] if method == "bm3d" else noisy[:32, :32]
    assert_invariant(image, lambda x: invariant_output(x, method), stride=_stride(method))


@pytest.mark.parametrize("method", [m for m in im.METHODS if 3 in im.METHODS[m].spatial_dims])
def test_every_3d_method_is_j_invariant_on_volumes(method):
    _skip_missing(method)
    assert_invariant(volume(), lambda x: invariant_output(x, method))


@pytest.mark.parametrize("method", ["median", "gaussian", "wavelet", "tv", "nl_means", "bilateral"])
def test_every_method_is_j_invariant_with_channels_first(method, noisy):
    _skip_missing(method)
    image = np.stack([noisy[:32, :32], noisy[32:, 32:], noisy[:32, 32:]])  # channels on axis 0
    assert_invariant(image, lambda x: invariant_output(x, method, channel_axis=0), channel_axis=0)


def centre_heavy(image: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """A user denoiser that leans on each pixel's own value: not J-invariant by itself."""
    from scipy import ndimage as ndi

    return weight * image + (1 - weight) * ndi.uniform_filter(image, 5)


@pytest.mark.parametrize("interpolation", ["mean", "kernel", "random"])
def test_user_callable_becomes_j_invariant(noisy, interpolation):
    image = noisy[:32, :32]
    with pytest.raises(AssertionError):  # the control: the raw callable is not invariant
        assert_invariant(image, centre_heavy)
    assert_invariant(
        image, lambda x: im.denoise_invariant(x, centre_heavy, interpolation=interpolation)
    )


def test_user_callable_on_a_3d_volume_with_channels_in_the_middle():
    image = np.stack([volume(0), volume(1)], axis=1)  # (z, c, y, x)
    run = lambda x: im.denoise_invariant(x, centre_heavy, channel_axis=1, weight=0.3)  # noqa: E731
    assert_invariant(image, run, channel_axis=1)


def test_channel_axis_reaches_a_denoiser_that_takes_it(noisy):
    seen = []

    def spy(image, channel_axis=None):
        seen.append((image.shape, channel_axis))
        return image

    im.denoise_invariant(np.stack([noisy[:8, :8]] * 3, axis=-1), spy, stride=2, channel_axis=-1)
    assert seen and all(item == ((8, 8, 3), 2) for item in seen)


def test_self_supervised_minus_true_loss_is_the_noise_variance(clean, noisy):
    """The paper's identity, at every parameter; the raw (non-invariant) filter breaks it."""
    from skimage.filters import gaussian

    grid = {"sigma": [0.5, 1.0, 2.0, 4.0]}
    calibration = im.calibrate(noisy, gaussian, grid, n_jobs=1, progress=False)
    noise_power = np.mean((noisy - clean) ** 2)
    for params, loss in zip(calibration.grid, calibration.losses, strict=True):
        true_loss = np.mean((im.denoise_invariant(noisy, gaussian, **params) - clean) ** 2)
        assert loss - true_loss == pytest.approx(noise_power, abs=6e-4)
    raw = gaussian(noisy, sigma=1.0)
    gap = np.mean((raw - noisy) ** 2) - np.mean((raw - clean) ** 2)
    assert gap < 0.7 * noise_power


@pytest.mark.parametrize(("dtype", "atol"), [(np.float32, 1e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("approximate_loss", [False, True])
@pytest.mark.parametrize("stride", [3, 4])
def test_losses_match_scikit_image(noisy, approximate_loss, stride, dtype, atol):
    grid = {"weight": [0.02, 0.05, 0.1, 0.2, 0.4]}
    ours = im.calibrate(
        noisy, restoration.denoise_tv_chambolle, grid, stride=stride,
        approximate_loss=approximate_loss, n_jobs=1, progress=False, dtype=dtype,
    )  # fmt: skip
    _, (tested, losses) = restoration.calibrate_denoiser(
        noisy, restoration.denoise_tv_chambolle, grid, stride=stride,
        approximate_loss=approximate_loss, extra_output=True,
    )  # fmt: skip
    np.testing.assert_allclose(ours.losses, losses, rtol=0, atol=atol)
    assert ours.best_params == tested[int(np.argmin(losses))]


def test_builtin_wavelet_matches_scikit_image(noisy):
    pytest.importorskip("pywt")
    grid = {"sigma": [0.05, 0.1, 0.2]}
    ours = im.calibrate(noisy, "wavelet", grid, n_jobs=1, progress=False)
    _, (tested, losses) = restoration.calibrate_denoiser(
        noisy, restoration.denoise_wavelet, {**grid, "rescale_sigma": [True]},
        approximate_loss=False, extra_output=True,
    )  # fmt: skip
    np.testing.assert_allclose(ours.losses, losses, rtol=0, atol=1e-6)
    assert ours.best_params["sigma"] == tested[int(np.argmin(losses))]["sigma"]


def test_work_dtype_must_be_a_float_type(noisy):
    with pytest.raises(ValueError, match=r"np\.float32 or np\.float64"):
        im.calibrate(noisy, "tv", {"weight": [0.1]}, dtype=np.int16, progress=False)


def test_parallel_and_serial_runs_are_bit_identical(noisy):
    grid = {"weight": [0.05, 0.1, 0.2]}
    serial = im.calibrate(noisy, "tv", grid, n_jobs=1, progress=False)
    parallel = im.calibrate(noisy, "tv", grid, n_jobs=2, progress=False)
    np.testing.assert_array_equal(serial.losses, parallel.losses)
    np.testing.assert_array_equal(serial.denoise(noisy), parallel.denoise(noisy))


def test_grid_is_a_product_and_keeps_every_loss(noisy):
    grid = {"sigma_color": [0.05, 0.1], "sigma_spatial": [1, 2, 3]}
    calibration = im.calibrate(noisy, "bilateral", grid, n_jobs=1, progress=False)
    assert len(calibration.grid) == len(calibration.losses) == 6
    assert {tuple(p.values()) for p in calibration.grid} == {
        (c, s) for c in (0.05, 0.1) for s in (1, 2, 3)
    }
    assert calibration.best_loss == calibration.losses.min()
    assert calibration.best_params == calibration.grid[int(np.argmin(calibration.losses))]


def test_lowest_loss_parameter_is_near_the_truly_best(clean, noisy):
    calibration = im.calibrate(noisy, "tv", n_jobs=1, progress=False)
    true = [
        np.mean((im.denoise_invariant(noisy, im.METHODS["tv"].function, **p) - clean) ** 2)
        for p in calibration.grid
    ]
    assert abs(calibration.best_index - int(np.argmin(true))) <= 1


# --- the result record ----------------------------------------------------------------------


def plain(value):
    """numpy values as JSON types (the conversion a user writing JSON would add)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def test_image_calibration_is_the_shared_result_type(noisy):
    from sc_noise2self.calibration import CalibrationResult

    grid = {"sigma": [0.5, 1.0, 2.0]}
    calibration = im.calibrate(noisy, "gaussian", grid, n_jobs=1, progress=False)
    assert isinstance(calibration, CalibrationResult)
    assert calibration.param == "sigma"
    assert calibration.loss_per_split.shape == (1, 3)
    np.testing.assert_array_equal(calibration.loss, calibration.losses)
    np.testing.assert_array_equal(calibration.loss_std, 0.0)
    assert calibration.best == calibration.best_params == calibration.grid[calibration.best_index]
    assert calibration.params is calibration.settings and calibration.params["stride"] == 4


@pytest.mark.parametrize("method", ["gaussian", "median", "callable"])
def test_to_dict_survives_json_and_rebuilds(noisy, method):
    import json

    from scipy import ndimage as ndi

    if method == "callable":
        grid = {"size": np.array([3, 5]), "mode": ["reflect"]}  # numpy values in the grid
        calibration = im.calibrate(noisy, ndi.uniform_filter, grid, n_jobs=1, progress=False)
    else:
        calibration = im.calibrate(noisy, method, n_jobs=1, progress=False)
    calibration.candidates = {method: calibration.best_loss}
    record = json.loads(json.dumps(calibration.to_dict(), default=plain))
    rebuilt = im.ImageCalibration.from_dict(record)
    np.testing.assert_array_equal(rebuilt.losses, calibration.losses)
    assert rebuilt.best_params == calibration.best_params
    assert rebuilt.mix_weight == calibration.mix_weight
    assert rebuilt.param == calibration.param and rebuilt.settings == calibration.settings
    for name in ("method", "noise_variance", "noise_variance_estimated", "invariant",
                 "candidates"):  # fmt: skip
        assert getattr(rebuilt, name) == getattr(calibration, name), name
    if method == "callable":  # a user's callable is not stored: it is passed back in
        with pytest.raises(ValueError, match="rebuilt without its denoiser"):
            rebuilt.denoise(noisy)
        rebuilt = im.ImageCalibration.from_dict(record, denoiser=ndi.uniform_filter)
    np.testing.assert_array_equal(rebuilt.denoise(noisy), calibration.denoise(noisy))


# --- mixing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_variance", [0.0, 0.001, 0.005, 0.0099, 0.01, 0.02])
def test_mixing_never_raises_the_estimated_error(noise_variance):
    loss = 0.01
    weight = im.optimal_mix_weight(loss, noise_variance)
    assert 0.0 <= weight <= 1.0
    unmixed = im.mixed_error(1.0, loss, noise_variance)
    assert im.mixed_error(weight, loss, noise_variance) <= unmixed + 1e-15
    for other in np.linspace(0, 1, 21):  # and the weight is the best one
        assert (
            im.mixed_error(weight, loss, noise_variance)
            <= im.mixed_error(other, loss, noise_variance) + 1e-15
        )


def test_noise_variance_at_or_above_the_loss_means_no_mixing():
    assert im.optimal_mix_weight(0.01, 0.01) == 1.0
    assert im.optimal_mix_weight(0.01, 0.02) == 1.0


def test_mixing_with_the_true_noise_variance_lowers_the_true_error(clean, noisy):
    calibration = im.calibrate(noisy, "tv", n_jobs=1, progress=False, noise_variance=SIGMA**2)
    assert 0 < calibration.mix_weight < 1
    plain = np.mean((calibration.denoise(noisy, mix=False) - clean) ** 2)
    mixed = np.mean((calibration.denoise(noisy, mix=True) - clean) ** 2)
    assert mixed < plain
    assert calibration.expected_error(mix=True) < calibration.expected_error(mix=False)
    assert calibration.expected_error(mix=False) == pytest.approx(plain, rel=0.25)


def test_estimated_noise_variance_is_recorded(noisy):
    calibration = im.calibrate(noisy, "gaussian", n_jobs=1, progress=False)
    assert calibration.noise_variance_estimated
    assert calibration.noise_variance == pytest.approx(SIGMA**2, rel=0.2)
    given = im.calibrate(noisy, "gaussian", n_jobs=1, progress=False, noise_variance=0.02)
    assert not given.noise_variance_estimated and given.noise_variance == 0.02


def test_plot_draws_the_loss_curve_and_its_minimum(noisy):
    import matplotlib.pyplot as plt

    calibration = im.calibrate(noisy, "gaussian", n_jobs=1, progress=False)
    ax = calibration.plot()
    curve = ax.lines[0]
    np.testing.assert_allclose(curve.get_ydata(), calibration.losses)
    np.testing.assert_allclose(curve.get_xdata(), [p["sigma"] for p in calibration.grid])
    assert ax.lines[1].get_ydata()[0] == calibration.best_loss
    plt.close(ax.figure)


# --- denoise(method=...) --------------------------------------------------------------------


def test_auto_keeps_the_method_with_the_lowest_loss(noisy):
    denoised, calibration = im.denoise(
        noisy, return_calibration=True, n_jobs=1, progress=False, noise_variance=SIGMA**2
    )
    assert set(calibration.candidates) == set(im.auto_methods(2))
    assert calibration.method == min(calibration.candidates, key=calibration.candidates.get)
    np.testing.assert_array_equal(denoised, calibration.denoise(noisy))


def test_named_method_returns_a_denoised_image(clean, noisy):
    denoised = im.denoise(noisy, "nl_means", n_jobs=1, progress=False)
    assert denoised.shape == noisy.shape
    assert np.mean((denoised - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)


def test_denoise_records_whether_it_estimated_the_noise_variance(noisy):
    options = {"param_grid": {"sigma": [1.0]}, "return_calibration": True, "progress": False}
    _, estimated = im.denoise(noisy, "gaussian", n_jobs=1, **options)
    _, given = im.denoise(noisy, "gaussian", noise_variance=0.01, **options)
    assert estimated.noise_variance_estimated and not given.noise_variance_estimated
    assert given.noise_variance == 0.01


def test_missing_bm3d_says_how_to_install(monkeypatch, noisy):
    import sys

    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` fail
    with pytest.raises(ImportError, match=r"pip install bm3d"):
        im.denoise(noisy, "bm3d", progress=False)


# --- input types ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_images_are_scaled_to_unit_range(clean, dtype):
    top = np.iinfo(dtype).max
    integers = np.round(clean * top).astype(dtype)
    out = im.denoise_invariant(integers, im.METHODS["gaussian"].function, sigma=1.0)
    reference = im.denoise_invariant(integers / top, im.METHODS["gaussian"].function, sigma=1.0)
    np.testing.assert_allclose(out, reference, atol=1e-12)
    assert 0 <= out.min() and out.max() <= 1


def test_float32_stays_float32(noisy):
    out = im.denoise_invariant(noisy.astype(np.float32), centre_heavy)
    assert out.dtype == np.float32


# --- bad inputs and immutability ----------------------------------------------------------


def _entry_points():
    tv = {"weight": [0.1]}
    return {
        "calibrate": lambda x, **kw: im.calibrate(x, "tv", tv, n_jobs=1, progress=False, **kw),
        "denoise_invariant": lambda x, **kw: im.denoise_invariant(x, centre_heavy, **kw),
        "denoise": lambda x, **kw: im.denoise(x, "tv", param_grid=tv, progress=False, **kw),
    }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_nan_is_refused(entry, noisy):
    image = noisy.copy()
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ENTRY_POINTS[entry](image)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_image_smaller_than_the_stride_is_refused(entry):
    with pytest.raises(ValueError, match="smaller than stride=4"):
        ENTRY_POINTS[entry](np.zeros((3, 20)))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_1d_input_is_refused(entry):
    with pytest.raises(ValueError, match="2D image or a 3D volume"):
        ENTRY_POINTS[entry](np.zeros(64))


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("channel_axis", [3, -4])
def test_channel_axis_out_of_range_is_refused(entry, channel_axis):
    with pytest.raises(ValueError, match=f"channel_axis={channel_axis} is out of range"):
        ENTRY_POINTS[entry](np.zeros((8, 8, 3)), channel_axis=channel_axis)


def test_unknown_method_lists_the_known_ones(noisy):
    for call in (lambda: im.denoise(noisy, "wiener"), lambda: im.calibrate(noisy, "wiener")):
        with pytest.raises(ValueError, match=r"Unknown method='wiener'.*'median'.*'nl_means'"):
            call()


@pytest.mark.parametrize("grid", [{}, {"weight": []}, None])
def test_empty_grid_is_refused(noisy, grid):
    with pytest.raises(ValueError, match="param_grid"):
        im.calibrate(noisy, restoration.denoise_tv_chambolle, grid, progress=False)


def test_3d_only_method_names_the_alternatives():
    with pytest.raises(ValueError, match="supports images with \\(2,\\) spatial axes"):
        im.calibrate(volume(), "bilateral", progress=False)


@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_inputs_are_never_modified(noisy, dtype):
    image = (np.clip(noisy, 0, 1) * 255).astype(dtype) if dtype == np.uint8 else noisy.copy()
    original = image.copy()
    image.flags.writeable = False  # any in-place write raises
    calibration = im.calibrate(image, "tv", n_jobs=1, progress=False)
    calibration.denoise(image)
    im.calibrate(image, "median", n_jobs=1, progress=False).denoise(image)
    im.denoise_invariant(image, centre_heavy, interpolation="random")
    im.denoise(image, "gaussian", n_jobs=1, progress=False)
    im.estimate_noise_variance(img_as_float(image))
    np.testing.assert_array_equal(image, original)


def test_same_seed_gives_bit_identical_results(noisy):
    first = im.denoise_invariant(noisy, centre_heavy, interpolation="random", random_state=3)
    again = im.denoise_invariant(noisy, centre_heavy, interpolation="random", random_state=3)
    other = im.denoise_invariant(noisy, centre_heavy, interpolation="random", random_state=4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
