"""Marker tests from sparse group sums and ranks against ``sc.tl.rank_genes_groups`` (issue 28).

The counts of the realistic simulator (10 groups of 40% down to 1%, NB, depth varying) are
normalised to 10,000 per cell and log1p-transformed, as scanpy tests them, and each test
runs on the same sparse matrix and groups on both sides, alternating, in one process:
Wilcoxon with and without the tie correction, and the t-test. Printed: the median seconds
of each side, their ratio, and the largest difference of the adjusted p-values and of the
scores (float32 in scanpy's record). Threads: numba and BLAS on every core on both sides;
precision float64 on both sides.

With ``--dask ROWS`` the same values also run as a dask array of CSR chunks of ROWS cells
(the threaded scheduler, every core), and a second table gives our dask path against our
in-memory path and scanpy, with the largest difference of the dask record from ours.

Run:  python benchmarks/bench_markers.py --cells 30000 [--repeats 3] [--dask 20000]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import anndata as ad
import numpy as np
import scanpy as sc

import sc_noise2self as n2s
from sc_noise2self import markers

TESTS = (("wilcoxon", {"tie_correct": True}), ("wilcoxon", {}), ("t-test", {}))


def normalised(cells: int) -> ad.AnnData:
    shares = 0.75 ** np.arange(10)
    shares = np.maximum(shares / shares.sum(), 0.01)
    adata = n2s.simulation.simulate_counts(cells, 2000, shares / shares.sum(), depth=1000.0,
                                           random_state=1)
    adata.X = adata.X.astype(np.float32)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.obs["g"] = adata.obs["group"].astype("category")
    return adata


def largest_difference(mine: dict, theirs: dict, column: str) -> float:
    return max(float(np.max(np.abs(np.asarray(mine[column][g], dtype=np.float64)
                                   - np.asarray(theirs[column][g], dtype=np.float64))))
               for g in theirs[column].dtype.names)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dask", type=int, default=0, help="rows per dask chunk (0: none)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    adata = normalised(args.cells)
    labels = adata.obs["g"].array
    markers.rank_genes_groups(adata.X[:500], labels[:500], adata.var_names, method="wilcoxon",
                              key_params={})  # numba's compilation, paid before the clocks
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.cells} cells x 2,000 "
          f"genes, {adata.X.nnz:,} non-zeros, load {os.getloadavg()}")
    print("| test | ours: median s | scanpy: median s | scanpy / ours | largest difference: "
          "pvals_adj, scores |")
    print("|---|---|---|---|---|")
    for method, options in TESTS:
        mine, theirs = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = markers.rank_genes_groups(adata.X, labels, adata.var_names, method=method,
                                             key_params={}, **options)
            mine.append(time.perf_counter() - start)
            start = time.perf_counter()
            sc.tl.rank_genes_groups(adata, "g", method=method, **options)
            theirs.append(time.perf_counter() - start)
        reference = adata.uns["rank_genes_groups"]
        a, b = float(np.median(mine)), float(np.median(theirs))
        name = f"{method} {options}" if options else method
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.1f} | "
              f"{largest_difference(ours, reference, 'pvals_adj'):.1e}, "
              f"{largest_difference(ours, reference, 'scores'):.1e} |", flush=True)
    print(f"load {os.getloadavg()}")
    if args.dask:
        dask_table(adata, labels, args.dask, args.repeats)


def dask_table(adata: ad.AnnData, labels, rows: int, repeats: int) -> None:
    """Our test on a dask array of the same values, against ours in memory and scanpy's."""
    import dask.array as da
    from scipy import sparse

    lazy = da.from_array(sparse.csr_matrix(adata.X), chunks=(rows, -1), asarray=False)
    print(f"\ndask: CSR chunks of {rows} cells, threaded scheduler, load {os.getloadavg()}")
    print("| test | ours on dask: median s | ours in memory: median s | scanpy: median s | "
          "dask / in memory | scanpy / dask | largest difference from in memory: pvals_adj, "
          "scores |")
    print("|---|---|---|---|---|---|---|")
    for method, options in TESTS:
        times = {"dask": [], "memory": [], "scanpy": []}
        for _ in range(repeats):
            start = time.perf_counter()
            on_dask = markers.rank_genes_groups(lazy, labels, adata.var_names, method=method,
                                                key_params={}, **options)
            times["dask"].append(time.perf_counter() - start)
            start = time.perf_counter()
            ours = markers.rank_genes_groups(adata.X, labels, adata.var_names, method=method,
                                             key_params={}, **options)
            times["memory"].append(time.perf_counter() - start)
            start = time.perf_counter()
            sc.tl.rank_genes_groups(adata, "g", method=method, **options)
            times["scanpy"].append(time.perf_counter() - start)
        d, m, s = (float(np.median(times[k])) for k in ("dask", "memory", "scanpy"))
        name = f"{method} {options}" if options else method
        print(f"| {name} | {d:.2f} | {m:.2f} | {s:.2f} | {d / m:.2f} | {s / d:.1f} | "
              f"{largest_difference(on_dask, ours, 'pvals_adj'):.1e}, "
              f"{largest_difference(on_dask, ours, 'scores'):.1e} |", flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
