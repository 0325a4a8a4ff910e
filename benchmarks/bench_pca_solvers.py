"""Does the randomized solver choose the exact solver's rank?

For each dataset, ``calibrate_pca`` runs at its defaults (p = 0.7, one split, seed 0) with
the exact ARPACK solver and with the randomized solver at several numbers of power
iterations; the table gives the chosen ranks and the largest relative difference between
the loss curves. Real sets: paul15, pbmc3k, the two CellBench sets (max_comps=100); synthetic
sets: those of ``bench_pca_quality.py`` (3,000 x 1,000, rank 10, four depths, max_comps=60).

With ``--warm``, instead: how close ``denoise_pca``'s warm-started randomized fit (from the
calibration's components of half A) comes to ARPACK's components of the full data, against
a cold start, at 1, 2 and 4 power iterations (the smallest principal-angle cosine over the
calibrated rank), on 100,000 x 2,000 and 30,000 x 2,000 synthetic counts.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_pca_solvers.py [--iters 4 6]
      python benchmarks/bench_pca_solvers.py --warm
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_pca_quality import synthetic_cases

from sc_noise2self import datasets, embedding
from sc_noise2self.denoisers.pca import calibrate_pca_counts


def real_cases():
    loaders = {"paul15": datasets.paul15, "pbmc3k": datasets.pbmc3k,
               "CellBench celseq2": lambda: datasets.cellbench("celseq2"),
               "CellBench dropseq": lambda: datasets.cellbench("dropseq")}
    for name, load in loaders.items():
        try:
            adata = load()
        except Exception as error:
            print(f"(skipping {name}: {error})")
            continue
        X = adata.X.tocsr()
        keep = np.asarray((X > 0).sum(axis=0)).ravel() >= 3  # genes seen in 3+ cells
        yield name, X[:, keep], 100


def ranks(X, max_comps: int, iters) -> tuple[int, list[tuple[int, float, float]]]:
    start = time.perf_counter()
    exact = calibrate_pca_counts(X, max_comps=max_comps, solver="arpack")
    t_exact = time.perf_counter() - start
    rows = []
    for n_iter in iters:
        embedding.RANDOMIZED_ITERATIONS = n_iter
        start = time.perf_counter()
        fast = calibrate_pca_counts(X, max_comps=max_comps, solver="randomized")
        seconds = time.perf_counter() - start
        diff = float(np.max(np.abs(fast.loss - exact.loss) / exact.loss))
        rows.append((fast.best, diff, seconds))
    return exact.best, t_exact, rows


def warm_start_table() -> None:
    from sc_noise2self.embedding import fit_pca, randomized_pca
    from sc_noise2self.transforms import library_sizes, normalised_values

    sets = {"100,000 cells, rank 20, depth 250": (100_000, 250),
            "30,000 cells, rank 20, depth 1,500": (30_000, 1500)}
    print("| data | calibrated rank | iterations | warm: smallest cosine | cold |")
    print("|---|---|---|---|---|")
    for name, (n_cells, depth) in sets.items():
        X = datasets.synthetic_counts(n_cells, 2000, rank=20, depth=depth,
                                      store_truth=False).X
        result = calibrate_pca_counts(X, max_comps=100)
        k = max(result.best, 1)
        values = normalised_values(X, float(np.median(library_sizes(X))), "sqrt")
        exact = fit_pca(values, k, solver="arpack").components
        for n_iter in (1, 2, 4):
            cosines = [np.linalg.svd(exact @ randomized_pca(values, k, 0, start=start,
                                                            n_iter=n_iter).components.T,
                                     compute_uv=False).min()
                       for start in (result.start, None)]
            print(f"| {name} | {k} | {n_iter} | {cosines[0]:.6f} | {cosines[1]:.6f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="the warm start's accuracy")
    args = parser.parse_args()
    if args.warm:
        warm_start_table()
        return
    cases = [*real_cases(),
             *((name, X, 60) for name, X, *_ in synthetic_cases(range(args.seeds)))]
    head = " | ".join(f"randomized, {n} iterations: rank (curve diff, s)" for n in args.iters)
    print(f"| data | cells x genes | exact rank (s) | {head} |")
    print("|---|---|---|" + "---|" * len(args.iters))
    for name, X, max_comps in cases:
        best, t_exact, rows = ranks(X, max_comps, args.iters)
        cells = " | ".join(f"{'**' if r != best else ''}{r}{'**' if r != best else ''} "
                           f"({d:.1e}, {s:.1f})" for r, d, s in rows)
        print(f"| {name} | {X.shape[0]} x {X.shape[1]} | {best} ({t_exact:.1f}) | {cells} |",
              flush=True)


if __name__ == "__main__":
    main()
