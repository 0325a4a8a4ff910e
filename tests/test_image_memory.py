"""Memory of the J-invariant calibration: the phases are streamed, never stacked.

Scoring one parameter set needs one masked copy of the image at a time, whatever the number
of phases (16 in 2D and 64 in 3D at stride 4). Stacking every phase, as the calibration once
did, peaked at about 10 copies of a 256 x 256 float64 image and 34 copies of a 48^3 volume
(float32 phases of a float64 image); streaming peaks at about 1.7.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi

from sc_noise2self import image as im

#: tracemalloc counts every Python allocation of the call, not only the arrays: joblib's
#: Parallel, the tqdm bar, the grid's dicts and frames. After a warm-up call that cost was
#: 21 KiB, whatever the image size; 64 KiB leaves room for other library versions.
BOOKKEEPING = 64 * 1024


def box_filter(image: np.ndarray, *, size: int = 3) -> np.ndarray:
    """A user's callable that allocates exactly its output."""
    return ndi.uniform_filter(image, size)


DENOISERS = {
    "gaussian": ("gaussian", {"sigma": [0.5, 1.0, 2.0]}),
    "callable": (box_filter, {"size": [3, 5]}),
}


def calibrate(image: np.ndarray, denoiser: str, **options):
    function, grid = DENOISERS[denoiser]
    options = {"noise_variance": 0.01, **options}
    return im.calibrate(image, function, grid, n_jobs=1, progress=False, **options)


def peak_bytes(call) -> int:
    """Peak of the memory allocated by ``call()`` above what was allocated before it."""
    call()  # warm-up: first calls import modules and fill caches, which tracemalloc counts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("denoiser", list(DENOISERS))
@pytest.mark.parametrize("shape", [(256, 256), (48, 48, 48)], ids=["2d", "3d"])
def test_calibration_holds_at_most_three_image_copies(shape, denoiser):
    image = np.random.default_rng(0).random(shape)  # float64
    peak = peak_bytes(lambda: calibrate(image, denoiser))
    # Stand-ins (float32), one masked copy (float32), the denoiser's output and small
    # per-phase gathers: about 1.7 copies. Stacking the phases took 10 (2D) and 34 (3D).
    assert peak <= 3 * image.nbytes + BOOKKEEPING, f"{peak / image.nbytes:.1f} image copies"


@pytest.mark.parametrize("shape", [(256, 256), (48, 48, 48)], ids=["2d", "3d"])
def test_calibration_with_an_estimated_noise_variance_holds_three_copies(shape):
    # The default: the noise variance is estimated from the image first (float32 maps, no
    # full sort), then the phases are scored.
    image = np.random.default_rng(3).random(shape)
    peak = peak_bytes(lambda: calibrate(image, "gaussian", noise_variance=None))
    assert peak <= 3 * image.nbytes + BOOKKEEPING, f"{peak / image.nbytes:.1f} image copies"


def test_calibration_memory_does_not_grow_with_the_number_of_phases():
    image = np.random.default_rng(1).random((128, 128))
    few = peak_bytes(lambda: calibrate(image, "callable", stride=2))  # 4 phases
    many = peak_bytes(lambda: calibrate(image, "callable", stride=8))  # 64 phases
    assert many <= few + 0.25 * image.nbytes


def test_denoise_invariant_holds_one_masked_copy():
    image = np.random.default_rng(2).random((48, 48, 48))
    peak = peak_bytes(lambda: im.denoise_invariant(image, box_filter))
    # The output, the stand-ins, one masked copy and the denoiser's output: 4 copies, not
    # the 64 + 4 of a stack of every phase.
    assert peak <= 4.5 * image.nbytes + BOOKKEEPING, f"{peak / image.nbytes:.1f} image copies"


#: The batched non-local means (one pass over the shifts per phase, at the phase's pixels
#: only, in bands) and two denoisers that run whole: their grids in 2D and 3D.
BUILT_IN = {
    "nl_means": {"h": [0.05, 0.1, 0.2]},
    "wavelet": {"sigma": [0.05, 0.1, 0.2]},
    "tv": {"weight": [0.05, 0.1, 0.2]},
}


def calibrate_built_in(image: np.ndarray, name: str):
    grid = dict(BUILT_IN[name])
    if name == "nl_means" and image.ndim == 3:
        grid["patch_distance"] = [2]  # 13^3 shifts per phase would take a minute here
    return im.calibrate(image, name, grid, n_jobs=1, progress=False, noise_variance=0.01)


@pytest.mark.parametrize("shape", [(256, 256), (48, 48, 48)], ids=["2d", "3d"])
def test_batched_nl_means_calibration_holds_at_most_three_image_copies(shape):
    image = np.random.default_rng(4).random(shape)
    peak = peak_bytes(lambda: calibrate_built_in(image, "nl_means"))
    # Stand-ins and one masked copy (float32), the phase's outputs for every h, one band of
    # distances: about 2.1 copies, where one call of scikit-image's non-local means alone
    # took 4.8 (2D) and 7.6 (3D, search distance 2).
    assert peak <= 3 * image.nbytes + BOOKKEEPING, f"{peak / image.nbytes:.1f} image copies"


@pytest.mark.parametrize(("name", "overhead"), [("tv", 1.5), ("wavelet", 2.0)])
@pytest.mark.parametrize("shape", [(256, 256), (48, 48, 48)], ids=["2d", "3d"])
def test_calibration_adds_little_to_one_denoiser_call(shape, name, overhead):
    if name == "wavelet":
        pytest.importorskip("pywt")
    image = np.random.default_rng(5).random(shape)
    work = image.astype(np.float32)
    params = {key: values[0] for key, values in BUILT_IN[name].items()}
    one_call = peak_bytes(lambda: im.METHODS[name].function(work, **params))
    peak = peak_bytes(lambda: calibrate_built_in(image, name))
    # Above the denoiser's own peak (5 copies for TV, 2.2 for wavelets in 2D): the float32
    # stand-ins and masked copy (1 copy), the phase's targets, and for wavelets the shared
    # decomposition (0.5). Keeping a second output alive, or a copy per phase, exceeds it.
    extra = (peak - one_call) / image.nbytes
    assert peak <= one_call + overhead * image.nbytes + BOOKKEEPING, f"{extra:.2f} copies"
