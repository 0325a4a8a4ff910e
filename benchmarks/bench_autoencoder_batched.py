"""Batched against sequential training of the autoencoder widths (same data, same settings).

Run:  python benchmarks/bench_autoencoder_batched.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sc_noise2self import datasets
from sc_noise2self.calibration import SplitSettings
from sc_noise2self.denoisers.autoencoder import TrainSettings, calibrate_autoencoder_counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=1000)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    adata = datasets.synthetic_counts(args.cells, args.genes, rank=8, depth=800, random_state=0)
    for batched in (False, True):
        start = time.perf_counter()
        result = calibrate_autoencoder_counts(adata.X, train=TrainSettings(batched=batched),
                                              settings=SplitSettings())
        seconds = time.perf_counter() - start
        print(f"batched={batched}: {seconds:.1f} s, best width {result.best}, "
              f"losses {np.round(result.loss, 5).tolist()}", flush=True)


if __name__ == "__main__":
    main()
