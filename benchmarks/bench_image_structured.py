"""Structured noise: the detector's false alarms on white noise, and ``auto`` on line noise.

Run: python benchmarks/bench_image_structured.py [--seeds 20] [--skip-quality] [--blocks]

Images: scikit-image's ``camera`` (512 x 512, [0, 1]) and the FMD confocal BPAE green
channel's 50-frame average (needs $SC_NOISE2SELF_DATA), as clean images.

1. False alarms: white Gaussian noise, ``--seeds`` seeds each, on camera (sd 0.1 and 0.02)
   and on the FMD average (sd of the real noise, noisy frame minus average); and the three
   real FMD noisy frames (B, G, R). A run counts when ``image.noise_correlation`` reports
   any structured axis.
2. Quality: noise correlated along rows over L = 3, 5 and 7 pixels (white noise convolved
   with a box of L along x, scaled to keep the sd), sd 0.1 on camera and the real noise's
   sd on FMD, seed 0. Rows: ``image.denoise(x, "auto", mask="pixel")`` (what ``auto`` did
   before the detector) and ``image.denoise(x, "auto")`` (the detector chooses the mask).
   PSNR against the clean image, wall seconds, the method and mask chosen.
3. With ``--blocks`` (instead of 1 and 2): noise correlated along both axes, white noise
   convolved with a box of L x L pixels (L = 2, 3, 4: correlated within 1, 2, 3 pixels),
   scaled to keep the sd; the same two rows, where ``auto`` now hides blocks.
Threads: the classical methods on every core (2 here), float32 work on both rows.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from scipy import ndimage as ndi
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import datasets
from sc_noise2self import image as im


def line_noise(shape, length: int, sigma: float, seed: int) -> np.ndarray:
    white = np.random.default_rng(seed).normal(0.0, sigma, shape)
    if length == 1:
        return white
    return ndi.correlate1d(white, np.ones(length) / np.sqrt(length), axis=1, mode="wrap")


def box_noise(shape, length: int, sigma: float, seed: int) -> np.ndarray:
    """White noise convolved with a ``length`` x ``length`` box, scaled to keep sd ``sigma``."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, shape)
    for axis in (0, 1):
        noise = ndi.correlate1d(noise, np.ones(length) / np.sqrt(length), axis=axis,
                                mode="wrap")
    return noise


def clean_images() -> dict[str, tuple[np.ndarray, float]]:
    """Each clean image with the noise sd used on it."""
    camera = data.camera() / 255.0
    noisy, average = (np.asarray(a, float) for a in datasets.fmd_confocal("G"))
    return {"camera": (camera, 0.1), "fmd G average": (average, float(np.std(noisy - average)))}


def false_alarms(seeds: int) -> None:
    print("| image | noise | structured | largest lag-1 correlation |")
    print("|---|---|---|---|")
    cases = [(name, clean, sd) for name, (clean, sd) in clean_images().items()]
    cases.insert(1, ("camera", data.camera() / 255.0, 0.02))
    for name, clean, sd in cases:
        found = [im.noise_correlation(clean + line_noise(clean.shape, 1, sd, seed))
                 for seed in range(seeds)]
        hits = sum(bool(f.structured_axes) for f in found)
        largest = max(float(f.correlation[:, 0].max()) for f in found)
        print(f"| {name} | white, sd {sd:.3f} | {hits}/{seeds} | {largest:.3f} |")
    for channel in "BGR":
        noisy, _ = datasets.fmd_confocal(channel)
        found = im.noise_correlation(noisy)
        print(f"| FMD {channel} noisy frame | real | {int(bool(found.structured_axes))}/1 | "
              f"{float(found.correlation[:, 0].max()):.3f} |")


def quality(blocks: bool = False) -> None:
    print("| image | L | mask | PSNR (dB) | seconds | chosen |")
    print("|---|---|---|---|---|---|")
    noise, lengths = (box_noise, (2, 3, 4)) if blocks else (line_noise, (3, 5, 7))
    for name, (clean, sd) in clean_images().items():
        span = float(np.ptp(clean))
        for length in lengths:
            noisy = clean + noise(clean.shape, length, sd, 0)
            for mask in ("pixel", "auto"):
                began = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out, chosen = im.denoise(noisy, "auto", mask=mask, progress=False,
                                             return_calibration=True)
                seconds = time.perf_counter() - began
                psnr = peak_signal_noise_ratio(clean, out, data_range=span)
                print(f"| {name} | {length} | {mask} | {psnr:.2f} | {seconds:.1f} | "
                      f"{chosen.method}, mask {chosen.settings['mask']}, reach "
                      f"{chosen.settings.get('reach', 0)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--blocks", action="store_true",
                        help="only the quality rows, with noise correlated along both axes")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores, float32 work")
    if args.blocks:
        quality(blocks=True)
    else:
        false_alarms(args.seeds)
    if not args.skip_quality and not args.blocks:
        print()
        quality()
    print(f"# load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
