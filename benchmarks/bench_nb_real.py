"""Negative-binomial splitting on real data: estimated sizes, split diagnostics, rank shifts.

For paul15, pbmc3k and CellBench (CEL-seq2, Drop-seq), on the 3,000 most expressed genes:
- the distribution of the estimated NB size b per gene (``estimate_overdispersion``);
- the median correlation between the halves of a binomial and of an NB (estimated b) split:
  raw (``half_correlations``, includes the shared biology) and of the noise
  (``noise_correlations``, what ``pl.split_diagnostics`` draws), over all genes and over genes
  with mean > 0.5; the diagnostic plot of both, saved under ``benchmarks/figures/``;
- the same noise statistic on a null with this data's structure: counts redrawn as
  Poisson around each cell's neighbour-smoothed expression (``--null``), where a binomial
  split suits the data, so any level above 0 is the statistic's own bias;
- the PCA rank chosen with binomial and with NB (estimated b) splitting, at p = 0.5 and at
  the default p.

Run:  SC_NOISE2SELF_DATA=/work/shared/data python benchmarks/bench_nb_real.py
      (``--no-ranks`` skips the rank calibrations; ``--null`` adds the Poisson null)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
from threadpoolctl import threadpool_limits

from sc_noise2self import datasets, pl
from sc_noise2self.calibration import DEFAULT_P
from sc_noise2self.denoisers.pca import calibrate_pca_counts
from sc_noise2self.diagnostics import estimate_overdispersion

FIGURES = Path(__file__).parent / "figures"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def loaders():
    yield "paul15", datasets.paul15
    yield "pbmc3k", datasets.pbmc3k
    for protocol in ("celseq2", "dropseq"):
        yield f"CellBench {protocol}", lambda protocol=protocol: datasets.cellbench(protocol)


def top_genes(adata: ad.AnnData, n_genes: int) -> ad.AnnData:
    """The ``n_genes`` most expressed genes, and the cells with any count in them."""
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    subset = adata[:, np.sort(np.argsort(-totals)[:n_genes])]
    keep = np.asarray(subset.X.sum(axis=1)).ravel() > 0
    return ad.AnnData(subset.X[keep].astype(np.int32))


def diagnostics(adata: ad.AnnData, sizes: np.ndarray, name: str) -> Path:
    """Binomial and NB split diagnostics side by side (noise on top, raw below), as a PNG."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.2), sharex=True)
    for row, statistic in enumerate(("noise", "raw")):
        pl.split_diagnostics(adata, statistic=statistic, ax=axes[row, 0], show=False)
        pl.split_diagnostics(adata, split="negative_binomial", overdispersion=sizes,
                             statistic=statistic, ax=axes[row, 1], show=False)
        axes[row, 1].sharey(axes[row, 0])
    fig.suptitle(f"{name}: noise correlation (top), raw correlation (bottom)",
                 fontsize="medium")
    fig.tight_layout()
    path = FIGURES / f"nb_split_{name.lower().replace(' ', '_')}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def correlation_medians(X, **split) -> str:
    """Medians over genes (all; mean > 0.5) of the raw and noise correlations of one split."""
    from sc_noise2self import split_counts
    from sc_noise2self.diagnostics import half_correlations, noise_correlations

    a, b = split_counts(X, 0.5, random_state=0, **split)
    expressed = np.asarray(X.mean(axis=0)).ravel() > 0.5
    parts = []
    for label, correlation in (("raw", half_correlations(a, b)),
                               ("noise", noise_correlations(a, b))):
        parts.append(f"{label} {np.nanmedian(correlation):.3f} "
                     f"({np.nanmedian(correlation[expressed]):.3f})")
    return ", ".join(parts)


def poisson_null(X, random_state: int = 0, n_neighbors: int = 15):
    """Poisson counts around each cell's neighbour-smoothed expression (dense, a benchmark).

    The expression is the mean depth-normalised profile of the cell and its nearest cells
    (sqrt-PCA of all genes), times the cell's size; a binomial split suits these counts.
    """
    from scipy import sparse

    from sc_noise2self.diagnostics import _neighbours

    X = sparse.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    size = totals / totals.mean()
    near = np.column_stack([np.arange(X.shape[0]), _neighbours(X, n_neighbors)])
    profile = (sparse.diags(1.0 / size) @ X).toarray()[near].mean(axis=1)
    rng = np.random.default_rng(random_state)
    return sparse.csr_matrix(rng.poisson(size[:, None] * profile))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--genes", type=int, default=3000)
    parser.add_argument("--max-comps", type=int, default=50)
    parser.add_argument("--no-ranks", action="store_true", help="skip the rank calibrations")
    parser.add_argument("--null", action="store_true", help="add the Poisson null")
    args = parser.parse_args()
    matplotlib.use("Agg")
    FIGURES.mkdir(exist_ok=True)
    ps = sorted({0.5, DEFAULT_P})
    for name, load in loaders():
        t0 = time.perf_counter()
        adata = top_genes(load(), args.genes)
        X = adata.X
        sizes = estimate_overdispersion(X)
        finite = sizes[np.isfinite(sizes)]
        quantiles = ", ".join(f"{q:.0%}: {v:.2f}" for q, v in
                              zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True))
        nb = dict(split="negative_binomial", overdispersion=sizes)
        print(f"## {name}: {X.shape[0]} cells x {X.shape[1]} genes, "
              f"median {np.median(np.asarray(X.sum(axis=1))):.0f} UMIs per cell")
        print(f"- estimated b: {quantiles}; Poisson (b = inf) for "
              f"{np.mean(~np.isfinite(sizes)):.1%} of genes")
        print(f"- median correlation between halves, all genes (mean > 0.5): binomial "
              f"{correlation_medians(X)}; NB {correlation_medians(X, **nb)}")
        if args.null:
            print(f"- Poisson null, binomial split: {correlation_medians(poisson_null(X))}")
        print(f"- figure: {diagnostics(adata, sizes, name).relative_to(FIGURES.parent.parent)}")
        for p in ps if not args.no_ranks else ():
            options = dict(max_comps=args.max_comps, p=p)
            binomial = calibrate_pca_counts(X, **options).best
            negative = calibrate_pca_counts(X, split="negative_binomial", overdispersion=sizes,
                                            **options).best
            print(f"- p = {p}: chosen rank binomial {binomial}, NB (estimated b) {negative}")
        print(f"- {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    with threadpool_limits(1):
        main()
