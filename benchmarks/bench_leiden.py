"""Clustering resolution by the loss, and marker p-values with and without count splitting.

Three tables (issue 16), each timed against one ``sc.tl.leiden`` on the same data:
1. resolution: simulated K well-separated groups (K = 3, 6, 10; seeds 0-2): clusters at the
   calibrated resolution;
2. type I error: one homogeneous population (Poisson, and NB with size 2): the share of
   gene x cluster p-values below 0.05 and a KS test against the uniform, for the count-split
   test and for the double-dipping workflow;
3. CellBench (needs $SC_NOISE2SELF_DATA): deep counts downsampled to 5%; the true loss of
   each resolution's cluster means against the deep profile, at the resolution the
   self-supervised curve picks and at the truly best one.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_leiden.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scanpy as sc
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_clustering import groups, homogeneous, naive_pvalues, split_pvalues

import sc_noise2self as n2s
from sc_noise2self.denoisers.leiden import (
    cluster_means,
    leiden_labels,
    neighbour_graph,
)
from sc_noise2self.transforms import normalised_values

warnings.filterwarnings("ignore")


def one_leiden_seconds(adata) -> float:
    """Time of scanpy's usual path: normalise, log1p, PCA, neighbours, one Leiden."""
    copy = adata.copy()
    start = time.perf_counter()
    sc.pp.normalize_total(copy, target_sum=1e4)
    sc.pp.log1p(copy)
    sc.pp.pca(copy, n_comps=min(50, min(copy.shape) - 1))
    sc.pp.neighbors(copy)
    sc.tl.leiden(copy, flavor="igraph", n_iterations=2, directed=False)
    return time.perf_counter() - start


def resolution_table() -> None:
    print("| K | seed | chosen resolution | clusters | time (s) | one sc.tl.leiden (s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for k in (3, 6, 10):
        for seed in range(3):
            adata, _ = groups(k, seed)
            start = time.perf_counter()
            n2s.tl.calibrate_leiden(adata, random_state=seed)
            seconds = time.perf_counter() - start
            reference = one_leiden_seconds(adata)
            record = adata.uns["noise2self_leiden"]
            print(f"| {k} | {seed} | {record['best']:g} | "
                  f"{adata.obs['noise2self_leiden'].nunique()} | {seconds:.1f} | "
                  f"{reference:.1f} | {seconds / reference:.1f} |")


def type_one_table() -> None:
    print("| counts | test | seed | share p < 0.05 | KS p | time (s) | ratio to one leiden |")
    print("|---|---|---|---|---|---|---|")
    for label, size, options in (("Poisson", None, {}),
                                 ("NB b=2", 2.0, {}),
                                 ("NB b=2", 2.0, {"split": "negative_binomial",
                                                  "overdispersion": "estimate"})):
        for seed in range(3):
            adata = homogeneous(1500, 600, seed, size=size)
            reference = one_leiden_seconds(adata)
            start = time.perf_counter()
            split = split_pvalues(adata.copy(), random_state=seed, **options)
            seconds = time.perf_counter() - start
            name = f"count split ({options.get('split', 'binomial')})"
            print(f"| {label} | {name} | {seed} | {np.mean(split < 0.05):.3f} | "
                  f"{stats.kstest(split, 'uniform').pvalue:.2g} | {seconds:.1f} | "
                  f"{seconds / reference:.1f} |")
            if not options:
                naive = naive_pvalues(adata)
                print(f"| {label} | double dipping | {seed} | {np.mean(naive < 0.05):.3f} | "
                      f"{stats.kstest(naive, 'uniform').pvalue:.2g} | | |")


def cellbench_table() -> None:
    if n2s.datasets.data_dir() is None:
        print("CellBench: skipped ($SC_NOISE2SELF_DATA is not set)")
        return
    print("| data | chosen by the loss | true best | true loss there / at the true best |")
    print("|---|---|---|---|")
    for protocol in ("celseq2", "dropseq"):
        deep = n2s.datasets.cellbench(protocol)
        deep = deep[:, np.argsort(-np.asarray(deep.X.sum(axis=0)).ravel())[:3000]].copy()
        shallow, _ = n2s.split_counts(deep.X, 0.05, random_state=0)
        adata = deep.copy()
        adata.X = shallow
        n2s.tl.calibrate_leiden(adata, random_state=0)
        record = adata.uns["noise2self_leiden"]
        depth = float(np.median(np.asarray(shallow.sum(axis=1)).ravel()))
        values = normalised_values(shallow, depth, "sqrt")
        truth = normalised_values(deep.X, depth, "sqrt")
        truth = truth.toarray() if hasattr(truth, "toarray") else truth
        graph = neighbour_graph(values, int(record["params"]["n_comps"]), 15, seed=0)
        true_loss = []
        for resolution in record["grid"]:
            labels = leiden_labels(graph, resolution, 0)
            true_loss.append(np.mean((cluster_means(values, labels)[labels] - truth) ** 2))
        true_loss = np.array(true_loss)
        chosen = int(np.flatnonzero(record["grid"] == record["best"])[0])
        best = int(np.argmin(true_loss))
        print(f"| CellBench {protocol} at 5% | {record['grid'][chosen]:g} | "
              f"{record['grid'][best]:g} | {true_loss[chosen] / true_loss[best]:.3f} |")


def main() -> None:
    print(f"load {os.getloadavg()}")
    resolution_table()
    type_one_table()
    cellbench_table()
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
