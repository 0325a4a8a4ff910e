"""Time ``tl.calibrate_pca`` then ``tl.denoise_pca`` at their defaults on 100,000 x 2,000 counts.

Run it once per version of the code, the versions back to back, to set old and new side by
side (the figures in benchmarks/RESULTS.md, issue 19):

    git worktree add /tmp/old <commit>
    PYTHONPATH=/tmp/old python benchmarks/bench_pca_versions.py
    python benchmarks/bench_pca_versions.py

The counts are those of ``bench_pca_speed.py`` (synthetic, rank 20, median depth 250); the
times are the minimum of ``--repeats`` runs; ``denoise_pca`` writes no dense layer.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import anndata as ad

import sc_noise2self
from sc_noise2self import datasets, tl


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    X = datasets.synthetic_counts(args.cells, 2000, rank=20, depth=250, store_truth=False).X
    tl.calibrate_pca(ad.AnnData(X[:3000]), progress=False)  # imports and compiled kernels
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        adata = ad.AnnData(X)
        start = time.perf_counter()
        tl.calibrate_pca(adata, progress=False)
        best["calibrate"] = min(best.get("calibrate", float("inf")), time.perf_counter() - start)
        start = time.perf_counter()
        tl.denoise_pca(adata, max_layer_gb=0, progress=False)
        best["denoise"] = min(best.get("denoise", float("inf")), time.perf_counter() - start)
    print(f"{sc_noise2self.__file__}: calibrate_pca {best['calibrate']:.2f} s, denoise_pca "
          f"{best['denoise']:.2f} s, rank {adata.uns['noise2self']['n_comps']}, load average "
          f"{os.getloadavg()}")


if __name__ == "__main__":
    main()
