"""Real noise: FMD confocal BPAE, a Noise2Self CNN trained on one noisy frame per channel.

PSNR against the 50-frame average (data range 1), for each channel.

    SC_NOISE2SELF_DATA=/work/shared/data python benchmarks/bench_cnn_fmd.py --max-time 120
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_cnn_camera import psnr

from sc_noise2self import datasets
from sc_noise2self.image.cnn import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--model-kwargs", default="{}")
    parser.add_argument("--max-time", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels", default="BGR")
    parser.add_argument("--augment", action="store_true", help="also score augment=True")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for channel in args.channels:
        noisy, truth = datasets.fmd_confocal(channel)
        start = time.perf_counter()
        model = train(noisy, args.model, max_time=args.max_time, progress=False,
                      model_kwargs=json.loads(args.model_kwargs))  # fmt: skip
        seconds = time.perf_counter() - start
        row = {"channel": channel, "noisy": round(psnr(noisy, truth), 2),
               "cnn": round(psnr(model.predict(noisy), truth), 2),
               "steps": model.history["step"][-1], "train_s": round(seconds)}  # fmt: skip
        if args.augment:
            row["cnn_augment"] = round(psnr(model.predict(noisy, augment=True), truth), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
