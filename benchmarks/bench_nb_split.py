"""Rank chosen by binomial and negative-binomial splitting on overdispersed counts, and its regret.

Synthetic rates from 6 gene programs (1,500 cells x 400 genes, 2,000 UMIs per cell), counts
drawn NB(rate, b) for b in {0.5, 2, 10, inf (Poisson)}; ranks 0..30. For each split fraction p:
the chosen rank, and in brackets its ground-truth regret, for binomial splitting, NB splitting
with the true b, and NB splitting with the estimated b (median estimate shown).

Regret is that of the FULL-data sqrt-PCA denoiser: true loss at the chosen rank over the lowest
true loss over ranks, minus 1. The truth is what that denoiser estimates, each cell's expected
sqrt-normalised count ``sqrt(depth / L_i) E[sqrt(NB(rate_ij, b))]`` (``L_i``: the expected
library size). The truth-best rank is reported too: the 6 programs are mixed with weights that
sum to one, so after per-cell normalisation and centring they span only 5 dimensions, and
strong noise can make fewer ranks worth their noise.

Run:  python benchmarks/bench_nb_split.py [--seeds 2] [--ps 0.5 0.7]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import sparse
from scipy.special import gammaln, roots_genlaguerre
from threadpoolctl import threadpool_limits

from sc_noise2self import datasets
from sc_noise2self.denoisers.pca import calibrate_pca_counts
from sc_noise2self.denoisers.rank_loss import linear_mse_curve as _linear_mse_curve
from sc_noise2self.diagnostics import estimate_overdispersion
from sc_noise2self.embedding import fit_pca
from sc_noise2self.transforms import (
    apply_transform,
    expected_transform,
    library_sizes,
    normalize_to_depth,
)

PROGRAMS = 6
MAX_COMPS = 30


def nb_counts(size: float, seed: int):
    """NB counts from the synthetic rates, and the rates of the cells kept (non-empty)."""
    adata = datasets.synthetic_counts(1500, 400, rank=PROGRAMS, depth=2000, random_state=seed)
    rate = adata.layers["rate"].astype(float)
    rng = np.random.default_rng(seed + 10)
    counts = rng.poisson(rate) if np.isinf(size) else rng.negative_binomial(
        size, size / (size + rate))
    X = sparse.csr_matrix(counts.astype(np.int32))
    keep = np.asarray(X.sum(axis=1)).ravel() > 0
    return X[keep], rate[keep]


def expected_sqrt_nb(mu: np.ndarray, size: float) -> np.ndarray:
    """``E[sqrt(NB(mu, size))]``: the exact Poisson expectation averaged over the Gamma rate.

    Generalised Gauss-Laguerre quadrature (200 nodes) on a grid of means, interpolated.
    """
    if np.isinf(size):
        return expected_transform(mu, "sqrt")
    nodes, weights = roots_genlaguerre(200, size - 1.0)
    grid = np.concatenate([[0.0], np.geomspace(1e-5, mu.max() * 1.01, 600)])
    rates = grid[:, None] * nodes[None, :] / size
    values = expected_transform(rates.ravel(), "sqrt").reshape(rates.shape) @ weights
    return np.interp(mu, grid, values * np.exp(-gammaln(size)))


def true_curve(X, rate: np.ndarray, size: float) -> np.ndarray:
    """True loss of the full-data sqrt-PCA denoiser at every rank 0..MAX_COMPS."""
    depth = float(np.median(library_sizes(X)))
    fit = fit_pca(apply_transform(normalize_to_depth(X, depth), "sqrt"), MAX_COMPS)
    truth = np.sqrt(depth / rate.sum(axis=1))[:, None] * expected_sqrt_nb(rate, size)
    return _linear_mse_curve(fit, truth, 1.0)


def chosen(X, curve: np.ndarray, **options) -> str:
    best = calibrate_pca_counts(X, max_comps=MAX_COMPS, **options).best
    return f"{best} ({curve[best] / curve.min() - 1:.1%})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ps", type=float, nargs="+", default=[0.5, 0.7])
    args = parser.parse_args()
    print("| true b | seed | p | truth-best rank | binomial | NB, true b | NB, estimated b "
          "| median estimated b |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (0.5, 2.0, 10.0, np.inf):
        for seed in range(args.seeds):
            X, rate = nb_counts(size, seed)
            curve = true_curve(X, rate, size)
            estimate = estimate_overdispersion(X)
            for p in args.ps:
                cells = [
                    chosen(X, curve, p=p),
                    chosen(X, curve, p=p, split="negative_binomial", overdispersion=size),
                    chosen(X, curve, p=p, split="negative_binomial", overdispersion=estimate),
                ]
                print(f"| {size} | {seed} | {p} | {int(np.argmin(curve))} | "
                      f"{' | '.join(cells)} | {np.median(estimate):.2f} |", flush=True)


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
