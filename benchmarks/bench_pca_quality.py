"""Quality of the PCA rank chosen by molecular cross-validation, and the choice of ``p``.

For each dataset with a known truth and each split fraction p, report the chosen rank and the
regret of the FULL-data denoiser at that rank:

    regret = true loss at the chosen rank / lowest true loss over ranks - 1,

where the true loss compares the rank-k PCA denoising of the full (noisy) data, on the sqrt
scale, with what that denoiser estimates: the expected sqrt-normalised count,
``sqrt(M / L_i) * E[sqrt(Poisson(L_i * s_ij))]`` for cell i with expected library size L_i,
true expression shares s_ij and normalisation depth M. (The per-cell factor matters: the
sqrt transform's bias depends on each cell's depth, and PCA rightly models it.) Truths:
- synthetic counts: the rate matrix that generated them;
- CellBench deep sets, downsampled to a fraction of their UMIs: the deep profile.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_pca_quality.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sc_noise2self import datasets, split_counts
from sc_noise2self.denoisers.pca import calibrate_pca_counts
from sc_noise2self.denoisers.rank_loss import linear_mse_curve as _linear_mse_curve
from sc_noise2self.embedding import fit_pca
from sc_noise2self.transforms import (
    apply_transform,
    expected_transform,
    library_sizes,
    normalize_to_depth,
)

MAX_COMPS = 60
PS = (0.5, 0.7, 0.9)


def expected_sqrt(mu: np.ndarray) -> np.ndarray:
    """``E[sqrt(Poisson(mu))]`` through a fine interpolation table (exact series at the nodes)."""
    grid = np.concatenate([[0.0], np.geomspace(1e-6, max(mu.max(), 1.0) * 1.01, 6000)])
    return np.interp(mu, grid, expected_transform(grid, "sqrt"))


def full_data_true_curve(counts, truth_profile, library, max_comps):
    """True loss of the full-data sqrt-PCA denoiser at every rank.

    ``truth_profile`` holds each cell's true expression shares (rows sum to 1) and
    ``library`` each cell's expected total count.
    """
    depth = float(np.median(library_sizes(counts)))
    values = apply_transform(normalize_to_depth(counts, depth), "sqrt", inplace=True)
    fit = fit_pca(values, max_comps)
    truth = np.sqrt(depth / library)[:, None] * expected_sqrt(truth_profile * library[:, None])
    return _linear_mse_curve(fit, truth, 1.0)


def regret(true_curve: np.ndarray, rank: int) -> float:
    return float(true_curve[rank] / true_curve.min() - 1.0)


def evaluate(name, counts, truth_profile, library, n_splits=1):
    t0 = time.perf_counter()
    true_curve = full_data_true_curve(counts, truth_profile, library, MAX_COMPS)
    best_true = int(np.argmin(true_curve))
    rows = []
    for p in PS:
        result = calibrate_pca_counts(counts, max_comps=MAX_COMPS, p=p, n_splits=n_splits)
        rows.append((p, result.best, regret(true_curve, result.best)))
    median_umis = float(np.median(library_sizes(counts)))
    cells = " | ".join(f"{k:>3d} ({r:6.1%})" for _, k, r in rows)
    seconds = time.perf_counter() - t0
    print(f"| {name} | {median_umis:.0f} | {best_true} | {cells} | {seconds:.0f} s |", flush=True)
    return rows


def synthetic_cases(seeds):
    for depth in (100, 200, 500, 2000):
        for seed in seeds:
            adata = datasets.synthetic_counts(3000, 1000, rank=10, depth=depth, random_state=seed)
            rate = adata.layers["rate"].astype(np.float64)
            library = rate.sum(axis=1)
            yield (f"synthetic rank 10, depth {depth}, seed {seed}", adata.X,
                   rate / library[:, None], library)


def cellbench_cases(fractions, seeds, n_genes=3000):
    for protocol in ("celseq2", "dropseq"):
        if datasets.local_file(f"cellbench_{protocol}_3cl.h5ad") is None:
            print(f"(skipping CellBench {protocol}: not under $SC_NOISE2SELF_DATA)")
            continue
        deep = datasets.cellbench(protocol)
        top = np.argsort(-np.asarray(deep.X.sum(axis=0)).ravel())[:n_genes]
        deep_counts = deep.X[:, top].astype(np.int64)
        deep_library = np.asarray(deep_counts.sum(axis=1), dtype=float).ravel()
        profile = deep_counts.toarray() / deep_library[:, None]
        for fraction in fractions:
            for seed in seeds:
                low, _ = split_counts(deep_counts, fraction, random_state=seed)
                keep = np.asarray(low.sum(axis=1)).ravel() > 0
                yield (f"CellBench {protocol} at {fraction:.0%} of UMIs, seed {seed}",
                       low[keep], profile[keep], fraction * deep_library[keep])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds = range(args.seeds)
    header = " | ".join(f"p={p}: rank (regret)" for p in PS)
    print(f"| data | median UMIs/cell | best true rank | {header} | time |")
    print("|---|---|---|" + "---|" * len(PS) + "---|")
    summary: dict[float, list[float]] = {p: [] for p in PS}
    for case in [*synthetic_cases(seeds), *cellbench_cases((0.02, 0.05, 0.10), seeds)]:
        for p, _, r in evaluate(*case):
            summary[p].append(r)
    for p in PS:
        values = np.array(summary[p])
        print(f"p={p}: mean regret {values.mean():.1%}, median {np.median(values):.1%}, "
              f"worst {values.max():.1%} over {values.size} cases")


if __name__ == "__main__":
    main()
