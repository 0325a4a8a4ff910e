"""The paper's Table 1 on today's camera image: calibrate each method by its J-invariant loss.

Run: python benchmarks/bench_image_table1.py
Prints, per method: the self-supervised loss, the PSNR of the J-invariant output, with mixing
(estimated and true noise variance), at the method's default parameters (not calibrated, not
J-invariant), and from scikit-image's calibrate_denoiser on the same grid.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import calibrate_denoiser
from skimage.util import img_as_float

from sc_noise2self import image as im

SIGMA = 0.1
METHODS = ("median", "wavelet", "nl_means", "tv")


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


def skimage_psnr(noisy, clean, calibration) -> float:
    grid = {k: [p[k] for p in calibration.grid] for k in calibration.grid[0]}
    grid = {k: list(dict.fromkeys(v)) for k, v in grid.items()}
    best = calibrate_denoiser(noisy, calibration.denoiser, grid, approximate_loss=False)
    return psnr(clean, best(noisy))


def row(name, calibration, noisy, clean, sd, with_skimage=True) -> list:
    method = im.METHODS[calibration.method]
    invariant = calibration.denoise(noisy, mix=False)
    mixed = calibration.denoise(noisy, mix=True)
    truth_mix = im.optimal_mix_weight(calibration.best_loss, SIGMA**2)
    mixed_true = truth_mix * invariant + (1 - truth_mix) * noisy
    default = method.function(noisy, **method.defaults(sd))
    return [
        name, calibration.best_loss, psnr(clean, invariant), psnr(clean, mixed),
        psnr(clean, mixed_true), psnr(clean, default),
        skimage_psnr(noisy, clean, calibration) if with_skimage else float("nan"),
        calibration.mix_weight, calibration.best_params,
    ]  # fmt: skip


def main() -> None:
    clean = img_as_float(data.camera())
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    noise_variance = im.estimate_noise_variance(noisy)
    sd = float(np.sqrt(noise_variance))
    print(f"noisy PSNR {psnr(clean, noisy):.2f} dB; noise variance true "
          f"{np.mean((noisy - clean) ** 2):.5f}, estimated {noise_variance:.5f}")  # fmt: skip
    rows = []
    for name in METHODS:
        start = time.perf_counter()
        calibration = im.calibrate(noisy, name, progress=False, noise_variance=noise_variance)
        rows.append(row(name, calibration, noisy, clean, sd))
        print(f"  {name}: {time.perf_counter() - start:.1f} s", flush=True)
    _, chosen = im.denoise(noisy, return_calibration=True, progress=False)
    rows.append(row(f"auto={chosen.method}", chosen, noisy, clean, sd, with_skimage=False))
    print("auto candidates (best loss):", {k: round(v, 6) for k, v in chosen.candidates.items()})
    header = ("method", "ss loss", "J-inv", "mixed", "mixed(true s2)", "default", "skimage", "w")
    print("| " + " | ".join(header) + " | best params |")
    print("|" + "---|" * (len(header) + 1))
    for r in rows:
        params = {k: round(v, 4) if isinstance(v, float) else v for k, v in r[8].items()}
        print(f"| {r[0]} | {r[1]:.6f} | " + " | ".join(f"{v:.2f}" for v in r[2:7])
              + f" | {r[7]:.3f} | {params} |")  # fmt: skip
    by_loss = min(rows[:-1], key=lambda r: r[1])
    by_psnr = max(rows[:-1], key=lambda r: r[2])
    print(f"lowest loss: {by_loss[0]}; highest J-invariant PSNR: {by_psnr[0]}")
    print("mixing gain (dB):", ", ".join(f"{r[0]} {r[3] - r[2]:+.2f}" for r in rows))


if __name__ == "__main__":
    main()
