"""Runtime of ``tl.calibrate_autoencoder`` on paul15 (CPU here; CUDA when present).

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_autoencoder_paul15.py [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sc_noise2self as n2s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    adata = n2s.datasets.paul15()
    start = time.perf_counter()
    n2s.tl.calibrate_autoencoder(adata, device=args.device)
    seconds = time.perf_counter() - start
    record = adata.uns["noise2self_autoencoder"]
    print(f"paul15 {adata.shape}: device={args.device}, widths {record['grid'].tolist()}")
    print(f"losses {np.round(record['loss'], 5).tolist()}")
    print(f"best width {record['best']}, {seconds:.0f} s")


if __name__ == "__main__":
    main()
