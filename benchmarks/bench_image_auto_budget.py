"""``image.denoise(x, "auto", max_time=T)`` against classical ``auto`` and the CNN alone.

Run: python benchmarks/bench_image_auto_budget.py [--max-time 180] [--image camera|fmd]
camera: the full 512 x 512 image, Gaussian sigma 0.1 (seed 0); fmd: the FMD confocal BPAE
green channel (one noisy frame against the 50-frame average; needs $SC_NOISE2SELF_DATA).
Rows: classical ``auto`` without a budget; the UNet alone with ``max_time=T`` (as
``image.denoise(x, "unet", max_time=T)``); ``auto`` with ``max_time=T``; ``auto`` with
``max_time=20``. With ``--napari``: classical ``auto``, then the napari calibrate widget's
computation (``sc_noise2self.napari.run_calibration``) with its CNN time budget at T and at 60.
Each row: PSNR against the clean image, wall seconds, what was chosen.
Threads: torch and the classical methods on every core (2 here); float32 work.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from functools import partial

import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import image as im


def images(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "camera":
        clean = data.camera() / 255.0
        return clean, clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
    from sc_noise2self import datasets

    noisy, truth = datasets.fmd_confocal("G")  # one noisy frame and its 50-frame average
    return np.asarray(truth, float), np.asarray(noisy, float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=180.0)
    parser.add_argument("--image", choices=("camera", "fmd"), default="camera")
    parser.add_argument("--napari", action="store_true",
                        help="time the napari widget's budgeted run instead")
    args = parser.parse_args()
    clean, noisy = images(args.image)
    psnr = partial(peak_signal_noise_ratio, clean, data_range=float(np.ptp(clean)))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f} "
          f"image {args.image} {noisy.shape} max_time {args.max_time}")
    print("| run | PSNR (dB) | seconds | chosen |")
    print("|---|---|---|---|")
    runs = [("classical auto", dict(method="auto")),
            (f"unet alone, max_time={args.max_time:g}",
             dict(method="unet", max_time=args.max_time)),
            (f"auto, max_time={args.max_time:g}", dict(method="auto", max_time=args.max_time)),
            ("auto, max_time=20", dict(method="auto", max_time=20.0))]
    if args.napari:
        runs = [runs[0]] + [(f"napari calibrate widget, budget {t:g} s", dict(napari=t))
                            for t in (args.max_time, 60.0)]
    for label, options in runs:
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, chosen = denoised(noisy, options)
        seconds = time.perf_counter() - began
        name = getattr(chosen, "method", None) or type(chosen).__name__
        table = getattr(chosen, "table", None)
        print(f"| {label} | {psnr(out):.2f} | {seconds:.1f} | {name} |", flush=True)
        if table:
            print("|  | " + "; ".join(
                f"{r['method']} {r['seconds']:.1f} s" + (f" loss {r['loss']:.5g}"
                                                         if r["loss"] is not None else "")
                for r in table) + " | | |", flush=True)
    print(f"# end load {os.getloadavg()[0]:.2f}")


def denoised(noisy: np.ndarray, options: dict):
    """``image.denoise`` with ``options``, or the napari widget's run with ``napari=T``."""
    if "napari" not in options:
        return im.denoise(noisy, return_calibration=True, progress=False, **options)
    from sc_noise2self.napari import layouts_for, run_calibration

    run = run_calibration(noisy, layouts_for(noisy.shape)[0], "auto",
                          max_time=options["napari"])
    return run.denoised, run.choice


if __name__ == "__main__":
    main()
