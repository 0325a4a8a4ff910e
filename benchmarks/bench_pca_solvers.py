"""Does the randomized solver choose the exact solver's rank?

For each dataset, ``calibrate_pca`` runs at its defaults (p = 0.7, one split, seed 0) with
the exact ARPACK solver and with the randomized solver at several numbers of power
iterations; the table gives the chosen ranks and the largest relative difference between
the loss curves. Real sets: paul15, pbmc3k, the two CellBench sets (max_comps=100); synthetic
sets: those of ``bench_pca_quality.py`` (3,000 x 1,000, rank 10, four depths, max_comps=60).

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_pca_solvers.py [--iters 4 6]
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
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
