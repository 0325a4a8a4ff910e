"""Speed: calibrate against skimage.restoration.calibrate_denoiser(approximate_loss=False).

Run: python benchmarks/bench_image_speed.py [--repeat 2] [--callables] [--float64-one-thread]
Same image (camera, Gaussian noise 0.1), same grids, same stride (4) and interpolation
(face-neighbour mean), in this process. ``--callables`` passes scikit-image's own functions
(``denoise_wavelet``, ``denoise_tv_chambolle``, ``denoise_nl_means`` with the grid's patch
size 5 and distance 6) to both tools, as scikit-image users call them, instead of our method
names. ``--float64-one-thread`` runs ours in float64 on one thread, as scikit-image runs
(the default: float32 on every core). With ``--repeat R`` the two tools alternate R times
and each keeps its fastest time (the usual timeit rule: slower runs measure the machine's
other load). Prints the seconds, the ratio and the largest difference between the two loss
curves, and the time of day with the load average before and after (the machine may be
shared).
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial

import numpy as np
from skimage import data
from skimage.restoration import (
    calibrate_denoiser,
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
)
from skimage.util import img_as_float

from sc_noise2self import image as im

SKIMAGE_FUNCTIONS = {"wavelet": denoise_wavelet, "tv": denoise_tv_chambolle,
                     "nl_means": denoise_nl_means}


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def machine_state() -> str:
    """Time of day and the 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return time.strftime("%H:%M:%S") + " load average " + ", ".join(
        f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--callables", action="store_true",
                        help="pass scikit-image's own functions instead of method names")
    parser.add_argument("--float64-one-thread", action="store_true",
                        help="run ours in float64 on one thread, as scikit-image runs")
    args = parser.parse_args()
    repeat = args.repeat
    ours_options = (dict(dtype=np.float64, n_jobs=1) if args.float64_one_thread
                    else dict(dtype=np.float32, n_jobs=None))
    clean = img_as_float(data.camera())
    noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
    sd = float(np.sqrt(im.estimate_noise_variance(noisy)))
    im.calibrate(noisy[:64, :64], "tv", {"weight": [0.1, 0.2]}, progress=False)  # warm workers
    print(f"start {machine_state()}, repeat {repeat}, callables {args.callables}, ours "
          f"{np.dtype(ours_options['dtype']).name} on {ours_options['n_jobs'] or 'every'} "
          "thread(s), scikit-image float64 on one thread")
    print("| method | grid size | ours (s) | skimage (s) | ratio | max loss diff | same best |")
    print("|---|---|---|---|---|---|---|")
    total_ours = total_theirs = 0.0
    for name in ("wavelet", "tv", "nl_means"):
        method = im.METHODS[name]
        grid = method.grid(sd)
        denoiser, theirs = name, method.function
        if args.callables:
            denoiser = theirs = SKIMAGE_FUNCTIONS[name]
            if name == "nl_means":  # the built-in method's patch, in the grid as users write it
                grid = {**grid, "patch_size": [5], "patch_distance": [6]}
        t_ours = t_theirs = float("inf")
        for _ in range(repeat):  # alternate, so that both see the same machine
            ours, seconds = timed(partial(im.calibrate, noisy, denoiser, grid, progress=False,
                                          **ours_options))
            t_ours = min(t_ours, seconds)
            (_, (tested, losses)), seconds = timed(
                partial(calibrate_denoiser, noisy, theirs, grid,
                        approximate_loss=False, extra_output=True)
            )  # fmt: skip
            t_theirs = min(t_theirs, seconds)
        total_ours, total_theirs = total_ours + t_ours, total_theirs + t_theirs
        diff = float(np.max(np.abs(ours.losses - np.asarray(losses))))
        same = ours.best_params == tested[int(np.argmin(losses))]
        print(f"| {name} | {len(ours.grid)} | {t_ours:.1f} | {t_theirs:.1f} | "
              f"{t_theirs / t_ours:.2f}x | {diff:.1e} | {same} |", flush=True)  # fmt: skip
    print(
        f"| all | | {total_ours:.1f} | {total_theirs:.1f} | {total_theirs / total_ours:.2f}x | | |"
    )
    print(f"end {machine_state()}")


if __name__ == "__main__":
    main()
