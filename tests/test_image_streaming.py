"""The streamed calibration: the whole grid on each phase's masked copy, batched where it can.

Every parameter set must get the loss that scoring it alone gives (the plain per-parameter
loop, and scikit-image's calibrate_denoiser); the batched non-local means and wavelets must
equal scikit-image's denoisers on every phase; the work units must cover every (phase,
parameter set) pair once; and a user's callable that writes into its input must not reach
the next parameter set.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from skimage import data, restoration
from skimage.util import img_as_float

from sc_noise2self import image as im
from sc_noise2self.image.batched import batch_for, fast_exp, nl_means_phase, wavelet_grid
from sc_noise2self.image.invariant import bind_denoiser, checked_output
from sc_noise2self.image.masking import fill_masked, masked_phases, replacement_values
from sc_noise2self.image.phases import phase_tasks
from sc_noise2self.image.units import units_of


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    clean = img_as_float(data.camera())[200:264, 180:240]  # 64 x 60: phases of unequal size
    return clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)


def masked_phase_loss(
    image: np.ndarray,
    masks: list,
    replacement: np.ndarray,
    work_dtype: np.dtype,
    units,
    denoise,
) -> float:
    """The plain loop the streamed scoring must reproduce bit for bit: one parameter set,
    phase after phase, the loss in working units summed in float64."""
    total, count = 0.0, 0
    phases = masked_phases(image, masks, replacement, dtype=work_dtype, offset=units.offset,
                           scale=units.scale)
    for masked, mask in phases:
        output = checked_output(denoise(masked), masked.shape)
        errors = output[mask].astype(np.float64) - units.forward(image[mask], np.float64)
        total += float(np.sum(errors**2))
        count += errors.size
    return total / count


def per_parameter_losses(image, name, grid, dtype=np.float32):
    """The plain loop: one parameter set at a time, every phase, in working units."""
    method = im.METHODS[name]
    units = units_of(image)
    masks = im.grid_masks(image.shape, 4)
    replacement = replacement_values(image, "mean", masks=masks)
    replacement = ((replacement - units.offset) / units.scale).astype(dtype)
    losses = []
    for params in im.expand_grid(grid):
        denoise = bind_denoiser(method.function, method.working_params(params, units.scale),
                                None)
        loss = masked_phase_loss(image, masks, replacement, np.dtype(dtype), units, denoise)
        losses.append(loss * units.scale**2)
    return np.array(losses)


@pytest.mark.parametrize(("name", "grid"), [
    ("tv", {"weight": [0.03, 0.08, 0.2]}),
    ("wavelet", {"sigma": [0.05, 0.1, 0.2]}),
    ("nl_means", {"h": [0.04, 0.08, 0.12], "patch_distance": [3, 4]}),
])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_streamed_losses_equal_the_per_parameter_loop(noisy, name, grid, n_jobs):
    if name == "wavelet":
        pytest.importorskip("pywt")
    ours = im.calibrate(noisy, name, grid, n_jobs=n_jobs, progress=False)
    expected = per_parameter_losses(noisy, name, grid)
    # The phases are summed in the same order: equal up to the batched sums' rounding.
    np.testing.assert_allclose(ours.losses, expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["wavelet", "nl_means"])
def test_batched_methods_match_scikit_image_calibrate_denoiser(noisy, name):
    if name == "wavelet":
        pytest.importorskip("pywt")
    grid = {"wavelet": {"sigma": [0.05, 0.1, 0.2]}, "nl_means": {"h": [0.04, 0.08, 0.12]}}[name]
    ours = im.calibrate(noisy, name, grid, progress=False)
    _, (tested, losses) = restoration.calibrate_denoiser(
        noisy, im.METHODS[name].function, grid, approximate_loss=False, extra_output=True)
    np.testing.assert_allclose(ours.losses, losses, rtol=0, atol=1e-6)
    assert ours.best_params == tested[int(np.argmin(losses))]


NL_CASES = [  # shape, channel_axis, patch_size, patch_distance, sigma
    ((40, 37), None, 5, 6, 0.0),
    ((33, 29), None, 4, 3, 0.05),  # an even patch size becomes odd, as in scikit-image
    ((20, 18, 3), 2, 5, 4, 0.0),
    ((3, 21, 18), 0, 5, 4, 0.02),
    ((12, 14, 13), None, 3, 2, 0.0),
    ((9, 10, 11, 2), 3, 3, 2, 0.01),
    ((20, 22), None, 1, 3, 0.05),  # one-pixel patches: an empty box
]


@pytest.mark.parametrize(("shape", "channel_axis", "size", "distance", "sigma"), NL_CASES)
def test_batched_nl_means_equals_scikit_image_on_every_phase(shape, channel_axis, size,
                                                             distance, sigma):
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    hs = [0.05, 0.15, 0.4]
    for mask in im.grid_masks(shape, 4, channel_axis):
        got = nl_means_phase(image, mask, hs, size, distance, sigma, channel_axis=channel_axis)
        for h, values in zip(hs, got, strict=True):
            expected = restoration.denoise_nl_means(
                image, patch_size=size, patch_distance=distance, h=h, sigma=sigma,
                fast_mode=True, preserve_range=True, channel_axis=channel_axis)[mask]
            assert values.dtype == expected.dtype
            np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_batched_nl_means_equals_scikit_image_on_every_pixel():
    # A mask of every pixel: step 1 and a wide patch take the running-sum branch.
    image = np.random.default_rng(2).random((30, 26))
    mask = (slice(None), slice(None))
    got = nl_means_phase(image, mask, [0.1, 0.3], patch_size=7, patch_distance=3)
    for h, values in zip([0.1, 0.3], got, strict=True):
        expected = restoration.denoise_nl_means(image, patch_size=7, patch_distance=3, h=h,
                                                fast_mode=True, preserve_range=True)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("shape", "dtype", "extra"), [
    ((64, 50), np.float32, {}),
    ((33, 47), np.float64, {"wavelet": "db2", "mode": "hard"}),
    ((20, 24, 18), np.float32, {"wavelet_levels": 2}),
])
def test_batched_wavelet_equals_scikit_image_on_every_phase(shape, dtype, extra):
    pytest.importorskip("pywt")
    image = np.random.default_rng(3).random(shape).astype(dtype)
    grid = [{"sigma": sigma, **extra} for sigma in (0.05, 0.1, 0.3)]
    for mask in im.grid_masks(shape, 4):
        assert batch_for("wavelet", grid, mask) is wavelet_grid
        for params, values in zip(grid, wavelet_grid(image, mask, grid), strict=True):
            expected = im.METHODS["wavelet"].function(image, **params)[mask]
            assert values.dtype == expected.dtype
            np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_batches_are_only_used_where_they_replay_the_denoiser():
    mask = im.grid_masks((16, 16), 4)[0]
    assert batch_for("nl_means", [{"h": 0.1}], mask) is not None
    assert batch_for("tv", [{"weight": 0.1}], mask) is None
    assert batch_for(None, [{"h": 0.1}], mask) is None  # a user's callable
    assert batch_for("nl_means", [{"h": 0.1}], (np.zeros((16, 16), bool),)) is None
    assert batch_for("wavelet", [{"sigma": 0.1}], mask, channel_axis=2) is None
    assert batch_for("wavelet", [{"sigma": None}], mask) is None  # estimated: not shared


def test_an_untested_scikit_image_runs_the_denoiser_itself(monkeypatch):
    import skimage

    mask = im.grid_masks((16, 16), 4)[0]
    monkeypatch.setattr(skimage, "__version__", "0.99.0")
    assert batch_for("nl_means", [{"h": 0.1}], mask) is None
    assert batch_for("wavelet", [{"sigma": 0.1}], mask) is None
    assert batch_for("wavelet", [{"sigma": 0.1, "method": "VisuShrink"}], mask) is None


@pytest.mark.parametrize("name", ["nl_means", "wavelet"])
def test_batched_outputs_on_a_phase_ignore_that_phase(name):
    if name == "wavelet":
        pytest.importorskip("pywt")
    image = np.random.default_rng(4).random((32, 28))
    grid = [{"h": 0.1}, {"h": 0.3}] if name == "nl_means" else [{"sigma": 0.1}, {"sigma": 0.2}]
    for mask in im.grid_masks(image.shape, 4)[::5]:
        changed = image.copy()
        changed[mask] = np.random.default_rng(5).uniform(-1, 2, changed[mask].shape)
        outputs = []
        for x in (image, changed):
            masked = fill_masked(np.empty(x.shape), x, mask, replacement_values(x))
            outputs.append(batch_for(name, grid, mask)(masked, mask, grid, None))
        for before, after in zip(*outputs, strict=True):
            np.testing.assert_array_equal(before, after)


def test_fast_exp_is_schraudolphs_approximation():
    y = -np.linspace(0.0, 5.0, 2001)
    approx = fast_exp(y)
    assert np.all(np.abs(approx / np.exp(y) - 1) < 0.045)  # its known worst case is ~4%
    assert np.all(np.diff(approx) <= 0)  # monotone, as the exponential
    # exp(0) is 1 - 60801 / 2**21 exactly: the bias that minimises the RMS error.
    assert fast_exp(np.array([-0.0]))[0] == 1 - 60801 / 2**21


@pytest.mark.parametrize("n_phases", [1, 4, 16, 64])
@pytest.mark.parametrize("n_params", [1, 3, 8])
@pytest.mark.parametrize("n_workers", [1, 2, 4])
def test_work_units_cover_every_phase_and_parameter_once(n_phases, n_params, n_workers):
    tasks = phase_tasks(n_phases, n_params, n_workers)
    pairs = [(phase, i) for phase, chunk in tasks for i in range(n_params)[chunk]]
    assert sorted(pairs) == [(p, i) for p in range(n_phases) for i in range(n_params)]
    assert [phase for phase, _ in tasks] == sorted(phase for phase, _ in tasks)
    # Every worker gets at least two units whenever there are enough pairs for that.
    assert len(tasks) >= min(2 * n_workers, n_phases * n_params)


def test_a_callable_that_writes_into_its_input_does_not_reach_the_next_parameter_set(noisy):
    def vandal(image, *, weight):
        out = restoration.denoise_tv_chambolle(image, weight=weight)
        image += 1000.0  # the next parameter set must still get the masked copy
        return out

    grid = {"weight": [0.05, 0.1, 0.2]}
    together = im.calibrate(noisy, vandal, grid, n_jobs=1, progress=False)
    alone = [im.calibrate(noisy, vandal, {"weight": [w]}, n_jobs=1, progress=False).losses[0]
             for w in grid["weight"]]
    np.testing.assert_array_equal(together.losses, alone)


@pytest.fixture()
def batch_calls(monkeypatch):
    """Counts the calls of the batched replays (batch_for returns them from the module)."""
    from sc_noise2self.image import batched

    calls = {"nl_means": 0, "wavelet": 0}
    for name in calls:
        replay = getattr(batched, f"{name}_grid")

        def counted(*args, _name=name, _replay=replay, **kwargs):
            calls[_name] += 1
            return _replay(*args, **kwargs)

        monkeypatch.setattr(batched, f"{name}_grid", counted)
    return calls


@pytest.mark.parametrize(("denoiser", "grid", "replay"), [
    (restoration.denoise_wavelet, {"sigma": [0.05, 0.1, 0.2]}, "wavelet"),
    (restoration.denoise_nl_means, {"h": [0.05, 0.1], "patch_distance": [3]}, "nl_means"),
    (partial(restoration.denoise_nl_means, patch_size=5, fast_mode=True, preserve_range=True),
     {"h": [0.05, 0.1], "patch_distance": [2, 3]}, "nl_means"),
    (partial(restoration.denoise_wavelet, wavelet="db2", rescale_sigma=True),
     {"sigma": [0.05, 0.1]}, "wavelet"),
])
def test_scikit_image_callables_take_the_fast_path_with_the_same_losses(
        noisy, batch_calls, denoiser, grid, replay):
    # Issue 27: skimage's own functions, passed as skimage users pass them, ran the generic
    # path (1.77x skimage where the named methods run 9x). Fails if batch_for_callable is
    # never taken, or if it fills in the wrong defaults (skimage's nl-means: 7 and 11).
    fast = im.calibrate(noisy, denoiser, grid, progress=False)
    assert batch_calls[replay] > 0
    calls_before = dict(batch_calls)
    plain = im.calibrate(noisy, lambda x, **p: denoiser(x, **p), grid, progress=False)
    assert batch_calls == calls_before  # a wrapper is a user's own function: no replay
    np.testing.assert_allclose(fast.losses, plain.losses, rtol=1e-9)
    assert fast.best_params == plain.best_params


@pytest.mark.parametrize("denoiser", [
    partial(restoration.denoise_nl_means, fast_mode=False),  # another algorithm
    partial(restoration.denoise_nl_means, channel_axis=None),  # bound where we bind it
    partial(restoration.denoise_wavelet, method="VisuShrink"),
    restoration.denoise_tv_chambolle,  # no replay
])
def test_scikit_image_callables_without_a_replay_run_as_they_are(noisy, batch_calls, denoiser):
    grid = ({"weight": [0.05, 0.1]} if denoiser is restoration.denoise_tv_chambolle
            else {"sigma": [0.08, 0.1]} if "wavelet" in str(denoiser)
            else {"h": [0.05, 0.1], "patch_distance": [2]})
    im.calibrate(noisy, denoiser, grid, progress=False)
    assert batch_calls == {"nl_means": 0, "wavelet": 0}


def test_a_partial_of_skimage_nl_means_scores_as_the_named_method(noisy):
    grid = {"h": [0.05, 0.1, 0.15], "patch_distance": [3]}
    named = im.calibrate(noisy, "nl_means", grid, progress=False)
    given = im.calibrate(noisy, partial(restoration.denoise_nl_means, patch_size=5), grid,
                         progress=False)
    # The named method runs in working units, the callable in the image's: float32 rounding.
    np.testing.assert_allclose(given.losses, named.losses, rtol=1e-5)
