"""GPU readiness check for the Noise2Self CNNs: train with AMP on CUDA, predict, time it.

Trains the default UNet on the full noisy camera image (sigma 0.1, seed 0) for a short
time budget on CUDA with automatic mixed precision (bf16 where supported, else fp16) and
torch.compile, then predicts the whole image, tiled and untiled, and prints steps/s, PSNR,
prediction time and peak GPU memory. Without CUDA it says so and exits with status 2,
unless ``--cpu-fallback`` asks for the same run on the CPU (labelled as such).

    python benchmarks/gpu_check.py --max-time 90
    python benchmarks/gpu_check.py --max-time 20 --cpu-fallback   # no GPU: a labelled CPU run
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from bench_cnn_camera import camera, psnr

from sc_noise2self.image.training import resolve_amp, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=90.0)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cpu-fallback", action="store_true")
    args = parser.parse_args()
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"device: CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"amp dtype {resolve_amp(device, None)}")  # fmt: skip
    elif args.cpu_fallback:
        device = torch.device("cpu")
        print(f"device: CPU FALLBACK (no CUDA; these are NOT GPU figures), torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    else:
        print(f"no CUDA device (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda}); nothing checked. Pass --cpu-fallback for a CPU "
              "run.")  # fmt: skip
        return 2
    clean, noisy = camera("full")
    start = time.perf_counter()
    model = train(noisy, args.model, max_time=args.max_time, device=device, amp=None,
                  compile=False if args.no_compile else None, batch_size=args.batch_size,
                  patch_size=args.patch_size, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    steps = model.history["step"][-1]
    print(f"train: {steps} steps in {seconds:.1f} s = {steps / seconds:.1f} steps/s "
          f"(batch {args.batch_size} x {args.patch_size}^2, stopped: "
          f"{model.history['stopped']}, best epoch {model.history['best_epoch']})")  # fmt: skip
    for tile_size in (None, 256):
        _sync(device)
        start = time.perf_counter()
        denoised = model.predict(noisy, tile_size=tile_size)
        _sync(device)
        seconds = time.perf_counter() - start
        print(f"predict (tile_size={tile_size}): {seconds:.3f} s, PSNR "
              f"{psnr(denoised, clean):.2f} dB (noisy {psnr(noisy, clean):.2f} dB)")  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    return 0 if np.isfinite(denoised).all() else 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
