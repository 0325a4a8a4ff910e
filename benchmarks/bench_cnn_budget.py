"""The CNN's time budget on a volume: wall time against max_time, steps, validation phases.

Run: python benchmarks/bench_cnn_budget.py [MAX_TIME]   (default 60 s)
A 3D UNet with the package defaults on a 48 x 192 x 192 float32 stack (uniform noise: the
time, not the quality, is measured), on the CPU. Prints the wall time, its ratio to
``max_time``, the steps taken, how many grid phases each validation scored, and the load.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

from sc_noise2self import image as im


def main() -> None:
    budget = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    stack = np.random.default_rng(0).random((48, 192, 192)).astype(np.float32)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uniform noise: the referee says so, as it should
        model = im.train(stack, "unet", n_spatial=3, max_time=budget, progress=False,
                         device="cpu")
    took = time.perf_counter() - began
    print(f"3D UNet 48x192x192, max_time {budget}: {took:.1f} s ({took / budget:.2f}x), "
          f"steps {model.history['step'][-1]}, val_phases {model.history.get('val_phases')}, "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
