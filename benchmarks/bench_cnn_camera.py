"""PSNR against wall-clock time of Noise2Self CNNs on camera, sigma = 0.1, seed 0 (issue 4).

Trains on the noisy image itself under a time budget and prints one table row per run.

    python benchmarks/bench_cnn_camera.py --image crop --max-time 240
    python benchmarks/bench_cnn_camera.py --image full --max-time 180 --model dncnn \
        --model-kwargs '{"depth": 8, "features": 64}'
    python benchmarks/bench_cnn_camera.py --image full --max-time 900 --augment --track 5 \
        --invariant --mix

``--track K`` prints the direct PSNR of the weights validated every K epochs (through
``train``'s callback); ``--mix`` scores the J-invariant prediction mixed with the noisy input
at the optimal weight of section 4.2, the noise variance estimated from the image.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial

import numpy as np
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self.image.cnn import Noise2SelfModel, train
from sc_noise2self.image.mixing import optimal_mix_weight
from sc_noise2self.image.noise import estimate_noise_variance


def camera(image: str) -> tuple[np.ndarray, np.ndarray]:
    """Clean and noisy camera (float in [0, 1], plus 0.1 * N(0, 1) from seed 0, unclipped)."""
    clean = data.camera().astype(np.float64) / 255.0
    noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
    if image == "crop":
        return clean[128:384, 128:384], noisy[128:384, 128:384]
    return clean, noisy


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


def tracker(noisy: np.ndarray, clean: np.ndarray, every: int):
    """A ``train`` callback printing epoch, step, seconds, held-out loss and direct PSNR."""

    def track(model: Noise2SelfModel) -> None:
        history = model.history
        if history["epoch"][-1] % every == 0:
            direct = psnr(clean, model.predict(noisy))
            values = (history["epoch"][-1], history["step"][-1], round(history["time"][-1]),
                      round(history["val_loss"][-1], 6), round(direct, 2))
            print("# track epoch, step, s, val_loss, psnr:", *values, flush=True)

    return track


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=("crop", "full"), default="crop")
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-kwargs", default="{}", help="JSON dict of architecture options")
    parser.add_argument("--train-kwargs", default="{}", help="JSON dict of extra train() options")
    parser.add_argument("--max-time", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--invariant", action="store_true", help="also score invariant=True "
                        "(with --augment: augmented)")
    parser.add_argument("--augment", action="store_true", help="also score augment=True")
    parser.add_argument("--mix", action="store_true",
                        help="also score the invariant prediction mixed with the input")
    parser.add_argument("--track", type=int, default=0,
                        help="print the direct PSNR every TRACK epochs (0: never)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clean, noisy = camera(args.image)
    extra = json.loads(args.train_kwargs)
    start = time.perf_counter()
    if args.track:
        extra["callback"] = tracker(noisy, clean, args.track)
    model = train(noisy, args.model, max_time=args.max_time, progress=False,
                  model_kwargs=json.loads(args.model_kwargs), **extra)  # fmt: skip
    trained = time.perf_counter() - start
    start = time.perf_counter()
    direct = psnr(clean, model.predict(noisy))
    predicted = time.perf_counter() - start
    history = model.history
    row = {
        "image": args.image, "model": args.model, "model_kwargs": args.model_kwargs,
        "train_kwargs": args.train_kwargs, "max_time": args.max_time,
        "steps": history["step"][-1], "train_s": round(trained, 1),
        "predict_s": round(predicted, 2), "best_epoch": history["best_epoch"],
        "stopped": history["stopped"], "psnr_noisy": round(psnr(clean, noisy), 2),
        "psnr": round(direct, 2),
    }  # fmt: skip
    if args.augment:
        row["psnr_augment"] = round(psnr(clean, model.predict(noisy, augment=True)), 2)
    if args.invariant or args.mix:
        invariant = model.predict(noisy, invariant=True, augment=args.augment)
        row["psnr_invariant"] = round(psnr(clean, invariant), 2)
    if args.mix:
        weight = optimal_mix_weight(float(np.mean((invariant - noisy) ** 2)),
                                    estimate_noise_variance(noisy))  # fmt: skip
        row["mix_weight"] = round(weight, 3)
        row["psnr_mixed"] = round(psnr(clean, weight * invariant + (1 - weight) * noisy), 2)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} torch {torch.__version__}")
    print("# val_loss per epoch:", [round(v, 5) for v in history["val_loss"]])
    print(json.dumps(row))


if __name__ == "__main__":
    main()
