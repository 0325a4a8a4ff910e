"""Training recipes for the Noise2Self CNNs on camera (sigma 0.1, seed 0), at equal steps.

Each named recipe is a set of ``train()`` options; every run trains on the full noisy image
for the recipe's step budget and prints one JSON line: steps, seconds, why it stopped, and
the PSNR of the direct prediction (and of the J-invariant one with ``--invariant``). Steps,
not seconds, make CPU and GPU runs comparable: a CPU budget buys a few hundred to a few
thousand steps.

    python benchmarks/bench_cnn_recipes.py --recipes default grid_mean --device cuda --augment
    python benchmarks/bench_cnn_recipes.py --list

Recipes change only what they name, so they follow the current defaults of ``train``. The
UNet defaults changed on 2026-11-26 (half the paper's widths, batch 8, lr 1e-2, EMA 0.99);
the GPU figures recorded before that date are reproduced by ``paper_unet_grid_mean`` and the
``*_2025`` variants.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_cnn_camera import camera, psnr

from sc_noise2self.image.cnn import train

GRID_MEAN = {"masking": "grid", "replacement": "mean", "mask_stride": 4}
SMALL_UNET = {"channels": [16, 32, 64]}
# The UNet training defaults before 2026-11-26: the paper's widths, batch 16, lr 5e-3, no EMA.
PAPER_UNET = {"model_kwargs": {"channels": [32, 64, 128, 256]}, "batch_size": 16, "lr": 5e-3,
              "ema": 0.0}  # fmt: skip
RECIPES: dict[str, dict] = {
    "paper_unet_grid_mean": {**PAPER_UNET, **GRID_MEAN},
    "paper_unet_random_mask": {**PAPER_UNET, "masking": "random"},
    "default": {},
    "grid_mean": GRID_MEAN,
    "lr_1e-3": {"lr": 1e-3},
    "patch_128": {"patch_size": 128},
    "small_unet_grid_mean": {**GRID_MEAN, "model_kwargs": SMALL_UNET},
    "dncnn_8x64_grid_mean": {**GRID_MEAN, "model": "dncnn", "model_kwargs": {"depth": 8}},
    "dncnn_17x64": {"model": "dncnn"},
    "no_early_stop": {"patience": 10**6},
    "grid_mean_no_early_stop": {**GRID_MEAN, "patience": 10**6},
    "grid_mean_ema": {**GRID_MEAN, "ema": 0.999},
    "grid_mean_ema_batch32": {**GRID_MEAN, "ema": 0.999, "batch_size": 32},
    "dncnn_8x64_grid_mean_ema": {
        **GRID_MEAN, "ema": 0.999, "model": "dncnn", "model_kwargs": {"depth": 8}
    },
    "small_unet_grid_mean_ema": {**GRID_MEAN, "ema": 0.999, "model_kwargs": SMALL_UNET},
    "dncnn_17x64_grid_mean": {**GRID_MEAN, "model": "dncnn", "patience": 30},
    "grid_mean_lr_2e-3": {**GRID_MEAN, "lr": 2e-3, "patience": 30},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["default"])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--invariant", action="store_true")
    parser.add_argument("--augment", action="store_true", help="also score augment=True")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print(json.dumps(RECIPES, indent=1))
        return
    torch.set_num_threads(args.threads)
    clean, noisy = camera("full")
    for steps in args.steps:
        for name in args.recipes:
            options = dict(RECIPES[name])
            model = options.pop("model", "unet")
            start = time.perf_counter()
            fitted = train(noisy, model, steps=steps, device=args.device, progress=False,
                           **options)  # fmt: skip
            row = {
                "recipe": name, "steps_budget": steps, "steps": fitted.history["step"][-1],
                "train_s": round(time.perf_counter() - start, 1),
                "stopped": fitted.history["stopped"], "best_epoch": fitted.history["best_epoch"],
                "psnr": round(psnr(fitted.predict(noisy), clean), 2),
                "val_loss": [round(v, 6) for v in fitted.history["val_loss"]],
            }  # fmt: skip
            if args.augment:
                row["psnr_augment"] = round(psnr(fitted.predict(noisy, augment=True), clean), 2)
            if args.invariant:
                row["psnr_invariant"] = round(psnr(fitted.predict(noisy, invariant=True), clean), 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
