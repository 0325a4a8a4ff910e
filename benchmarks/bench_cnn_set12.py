"""Set12 at sigma = 25/255: one Noise2Self CNN trained on the 12 noisy images themselves.

Noise: ``clean + 25/255 * default_rng(0).standard_normal(shape)`` per image, not clipped.
One model is trained on the list of all 12 noisy images (two sizes) under one time budget,
then each image is predicted in one pass. ``--classical`` also runs the calibrated
NL-means with mixing (``sc_noise2self.image.denoise(method="nl_means")``) on every image.

    SC_NOISE2SELF_DATA=/work/shared/data python benchmarks/bench_cnn_set12.py --max-time 300
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_cnn_camera import psnr

from sc_noise2self import datasets
from sc_noise2self.image.cnn import train

SIGMA = 25 / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-kwargs", default="{}")
    parser.add_argument("--max-time", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--classical", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true", help="only the classical method")
    parser.add_argument("--augment", action="store_true", help="also score augment=True")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clean = datasets.set12()
    noisy = [c + SIGMA * np.random.default_rng(0).standard_normal(c.shape) for c in clean]
    model = None if args.skip_cnn else _train(noisy, args)
    rows = []
    for index, (c, n) in enumerate(zip(clean, noisy, strict=True), start=1):
        row = {"image": index, "noisy": psnr(n, c)}
        if model is not None:
            row["cnn"] = psnr(model.predict(n), c)
            if args.augment:
                row["cnn_augment"] = psnr(model.predict(n, augment=True), c)
        if args.classical:
            from sc_noise2self.image import denoise

            row["nl_means_mixed"] = psnr(denoise(n, "nl_means", progress=False), c)
        rows.append(row)
        print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items()), flush=True)  # fmt: skip
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "image"}
    print("mean:", json.dumps({k: round(v, 2) for k, v in means.items()}))


def _train(noisy: list[np.ndarray], args: argparse.Namespace):
    start = time.perf_counter()
    model = train(noisy, args.model, max_time=args.max_time, progress=False,
                  model_kwargs=json.loads(args.model_kwargs))  # fmt: skip
    print(f"# trained {time.perf_counter() - start:.0f} s, {model.history['step'][-1]} steps, "
          f"stopped: {model.history['stopped']}")  # fmt: skip
    return model


if __name__ == "__main__":
    main()
