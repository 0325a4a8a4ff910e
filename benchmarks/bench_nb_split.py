"""Rank chosen by binomial and negative-binomial splitting on overdispersed counts.

Synthetic rank-6 rates (1,500 cells x 400 genes, 2,000 UMIs per cell), counts drawn
NB(rate, b) for b in {0.5, 2, 10, inf (Poisson)}; p = 0.5, ranks 0..30. Reported: the chosen
rank for binomial splitting, NB splitting with the true b, and NB splitting with the
estimated b (median estimate shown).

Run:  python benchmarks/bench_nb_split.py [--seeds 2]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import sparse

from sc_noise2self import datasets
from sc_noise2self.denoisers.pca import calibrate_pca_counts
from sc_noise2self.splitting import estimate_overdispersion

TRUE_RANK = 6


def nb_counts(size: float, seed: int):
    adata = datasets.synthetic_counts(1500, 400, rank=TRUE_RANK, depth=2000, random_state=seed)
    rate = adata.layers["rate"].astype(float)
    rng = np.random.default_rng(seed + 10)
    counts = rng.poisson(rate) if np.isinf(size) else rng.negative_binomial(
        size, size / (size + rate))
    X = sparse.csr_matrix(counts.astype(np.int32))
    return X[np.asarray(X.sum(axis=1)).ravel() > 0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    print("| true b | seed | binomial | NB, true b | NB, estimated b | median estimated b |")
    print("|---|---|---|---|---|---|")
    for size in (0.5, 2.0, 10.0, np.inf):
        for seed in range(args.seeds):
            X = nb_counts(size, seed)
            options = dict(max_comps=30, p=0.5)
            binomial = calibrate_pca_counts(X, **options).best
            known = calibrate_pca_counts(X, split="negative_binomial", overdispersion=size,
                                         **options).best
            estimate = estimate_overdispersion(X)
            estimated = calibrate_pca_counts(X, split="negative_binomial",
                                             overdispersion=estimate, **options).best
            print(f"| {size} | {seed} | {binomial} | {known} | {estimated} | "
                  f"{np.median(estimate):.2f} |", flush=True)


if __name__ == "__main__":
    main()
