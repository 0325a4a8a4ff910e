"""Memory: peak of calibrate against skimage.restoration.calibrate_denoiser, in image copies.

Run: python benchmarks/bench_image_memory.py
tracemalloc counts every numpy allocation (scikit-image's and PyWavelets' arrays too) made
during one call, after a warm-up call, above what was allocated before it; the peak is
divided by the size of the float64 input image. "one call" is the denoiser alone, once, on
the float32 copy our calibration hands it: its own share of our peak. Ours runs with
``n_jobs=1`` (one worker), as scikit-image does; each extra worker adds its own masked copy
and denoiser output.
Images: noise in [0, 1] of 256 x 256 and 48^3, with the grids below (non-local means with a
search distance of 2 in 3D: the default of 6 makes scikit-image's 3D run take minutes).
"""

from __future__ import annotations

import tracemalloc
from functools import partial

import numpy as np
from skimage.restoration import calibrate_denoiser

from sc_noise2self import image as im

GRIDS = {
    "gaussian": {"sigma": [0.5, 1.0, 2.0]},
    "tv": {"weight": [0.05, 0.1, 0.2]},
    "wavelet": {"sigma": [0.05, 0.1, 0.2]},
    "nl_means": {"h": [0.05, 0.1, 0.2]},
}
GRIDS_3D = {**GRIDS, "nl_means": {"h": [0.05, 0.1, 0.2], "patch_distance": [2]}}


def peak_copies(call, nbytes: int) -> float:
    """Peak allocation of ``call()`` above the memory before it, in copies of ``nbytes``."""
    call()  # warm-up: imports and caches would count otherwise
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call()
        return (tracemalloc.get_traced_memory()[1] - before) / nbytes
    finally:
        tracemalloc.stop()


def main() -> None:
    print("| image | method | ours (copies) | skimage (copies) | one call (copies) |")
    print("|---|---|---|---|---|")
    for label, shape, grids in (("2D 256^2", (256, 256), GRIDS), ("3D 48^3", (48,) * 3, GRIDS_3D)):
        image = np.random.default_rng(0).random(shape)
        for name, grid in grids.items():
            function = im.METHODS[name].function
            ours = peak_copies(partial(im.calibrate, image, name, grid, n_jobs=1,
                                       progress=False, noise_variance=0.01), image.nbytes)
            theirs = peak_copies(partial(calibrate_denoiser, image, function, grid,
                                         approximate_loss=False), image.nbytes)
            params = {key: values[0] for key, values in grid.items()}
            one = peak_copies(partial(function, image.astype(np.float32), **params), image.nbytes)
            print(f"| {label} | {name} | {ours:.2f} | {theirs:.2f} | {one:.2f} |", flush=True)


if __name__ == "__main__":
    main()
