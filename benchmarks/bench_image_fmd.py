"""Real microscopy: FMD confocal BPAE, one noisy frame against the 50-frame average.

Run: SC_NOISE2SELF_DATA=/work/shared/data python benchmarks/bench_image_fmd.py
Prints, per channel: the noise variance (truth, ours, skimage's estimate_sigma squared), and
the PSNR of denoise(method="auto") against each method's default parameters.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import estimate_sigma

from sc_noise2self import datasets
from sc_noise2self import image as im

# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


def main() -> None:
    methods = im.auto_methods(2)
    print("| channel | noise var true | ours | estimate_sigma^2 | noisy | auto (choice) | "
          "auto, no mix | " + " | ".join(f"{m} default" for m in methods) + " |")  # fmt: skip
    print("|" + "---|" * (7 + len(methods)))
    for channel in ("B", "G", "R"):
        noisy, truth = datasets.fmd_confocal(channel)
        start = time.perf_counter()
        variance = im.estimate_noise_variance(noisy)
        denoised, chosen = im.denoise(noisy, return_calibration=True, progress=False)
        seconds = time.perf_counter() - start
        sd = float(np.sqrt(variance))
        defaults = [
            psnr(truth, im.METHODS[m].function(noisy, **im.METHODS[m].defaults(sd)))
            for m in methods
        ]
        cells = [
            channel, f"{np.mean((noisy - truth) ** 2):.5f}", f"{variance:.5f}",
            f"{estimate_sigma(noisy) ** 2:.5f}", f"{psnr(truth, noisy):.2f}",
            f"{psnr(truth, denoised):.2f} ({chosen.method}, w={chosen.mix_weight:.2f})",
            f"{psnr(truth, chosen.denoise(noisy, mix=False)):.2f}",
            *[f"{v:.2f}" for v in defaults],
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |", f"  [{seconds:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
