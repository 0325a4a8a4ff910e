"""Clusters by the loss on realistic simulations and labelled real data, beside scanpy.

Tables (issues 16 and 24); scanpy's standard pipeline (normalise to 10^4, log1p, 2,000
highly variable genes, 50 PCs, neighbours, Leiden at 1.0) and its best fixed resolution of
the same grid are run on the same data in the same run:
1. null: one population from the realistic simulator (Poisson and NB; depth sd 0.3 and
   0.6): the seeds in which ``calibrate_leiden`` keeps one cluster;
2. known groups: K = 2, 4, 8, 12 unequal groups, depth varying, NB: seeds with exactly K
   clusters and ARI >= 0.9, and the time against one scanpy sweep of the grid; nested
   subtypes (20 genes apart) against their effect size: where they are found;
3. type I error of the marker tests (count split against double dipping);
4. CellBench (needs $SC_NOISE2SELF_DATA) at 100, 20, 10 and 5% depth, and PBMC 3k;
5. cost: ``calibrate_leiden`` against one scanpy sweep of the same grid, alternating, on
   the known-groups data (K = 4 and 12), after one call that pays numba's compilation.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_leiden.py [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scanpy as sc
from scipy import stats
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_clustering import homogeneous, naive_pvalues, split_pvalues

import sc_noise2self as n2s
from sc_noise2self.denoisers.leiden import DEFAULT_RESOLUTIONS
from sc_noise2self.embedding import scanpy_neighbors

warnings.filterwarnings("ignore")


def scanpy_sweep(adata) -> tuple[dict, float]:
    """scanpy's standard pipeline, Leiden at every resolution of our grid: labels, seconds."""
    copy = adata.copy()
    start = time.perf_counter()
    sc.pp.normalize_total(copy, target_sum=1e4)
    sc.pp.log1p(copy)
    sc.pp.highly_variable_genes(copy, n_top_genes=min(2000, copy.n_vars))
    sc.pp.pca(copy, n_comps=min(50, min(copy.shape) - 1), mask_var="highly_variable")
    # sc.pp.neighbors as scanpy builds it, with pynndescent 0.7's csr_array converted past
    # 8,192 cells (scanpy 1.11.5 fails there otherwise: issue 24).
    scanpy_neighbors(copy, n_neighbors=15, use_rep="X_pca", random_state=0)
    labels = {}
    for resolution in (*DEFAULT_RESOLUTIONS, 1.0):
        sc.tl.leiden(copy, resolution=resolution, flavor="igraph", n_iterations=2,
                     directed=False)
        labels[resolution] = copy.obs["leiden"].to_numpy()
    return labels, time.perf_counter() - start


def ours(adata, seed: int = 0) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    n2s.tl.calibrate_leiden(adata, random_state=seed)
    return adata.obs["noise2self_leiden"].to_numpy(), time.perf_counter() - start


def validated(adata) -> np.ndarray:
    """calibrate_leiden's labels after validate_clusters_split (unchanged for one cluster)."""
    labels = adata.obs["noise2self_leiden"]
    if labels.nunique() < 2:
        return labels.to_numpy()
    n2s.tl.validate_clusters_split(adata)
    return adata.obs["noise2self_leiden_validated"].to_numpy()


def compared(adata, truth, seed: int = 0) -> dict:
    """Our clusters and scanpy's (default and best fixed resolution) against the truth."""
    mine, seconds = ours(adata, seed)
    checked = validated(adata)
    theirs, sweep = scanpy_sweep(adata)
    ari = {r: adjusted_rand_score(truth, labels) for r, labels in theirs.items()}
    best = max(ari, key=ari.get)
    return dict(k=len(set(mine)), ari=adjusted_rand_score(truth, mine), seconds=seconds,
                val_k=len(set(checked)), val_ari=adjusted_rand_score(truth, checked),
                sc_k=len(set(theirs[1.0])), sc_ari=ari[1.0], best_r=best, best_ari=ari[best],
                sweep=sweep)


def null_table(seeds: int) -> None:
    print("| counts | depth sd | seeds with one cluster | after validation | "
          "scanpy default: median clusters (seeds 0-2) |")
    print("|---|---|---|---|---|")
    for name, size in (("Poisson", None), ("NB, b 0.5-50", (0.5, 50.0))):
        for sd in (0.3, 0.6):
            ones, after, theirs = 0, 0, []
            for seed in range(seeds):
                adata = n2s.simulation.simulate_counts(2000, 1000, (1.0,), depth_sd=sd,
                                                       nb_size=size, random_state=seed)
                mine, _ = ours(adata, seed)
                ones += len(set(mine)) == 1
                after += len(set(validated(adata))) == 1
                if seed < 3:
                    theirs.append(len(set(scanpy_sweep(adata)[0][1.0])))
            print(f"| {name} | {sd} | {ones} / {seeds} | {after} / {seeds} | "
                  f"{np.median(theirs):.0f} |", flush=True)


def unequal(k: int) -> np.ndarray:
    """Group shares from about 40% down to 1% or more."""
    shares = 0.75 ** np.arange(k)
    shares = np.maximum(shares / shares.sum(), 0.01)
    return shares / shares.sum()


def groups_table(seeds: int) -> None:
    print("| K | seeds with exactly K and ARI >= 0.9 | mean K, ARI | validated: seeds, mean ARI "
          "| scanpy 1.0: mean K, ARI | scanpy best fixed: mean ARI | time / scanpy sweep |")
    print("|---|---|---|---|---|---|---|")
    for k in (2, 4, 8, 12):
        rows = []
        for seed in range(seeds):
            adata = n2s.simulation.simulate_counts(3000, 1000, unequal(k), depth_sd=0.5,
                                                   random_state=seed)
            rows.append(compared(adata, adata.obs["group"].to_numpy(), seed))
        hits = sum(r["k"] == k and r["ari"] >= 0.9 for r in rows)
        checked = sum(r["val_k"] == k and r["val_ari"] >= 0.9 for r in rows)
        mean = {key: np.mean([r[key] for r in rows]) for key in rows[0]}
        print(f"| {k} | {hits} / {seeds} | {mean['k']:.1f}, {mean['ari']:.2f} | {checked} / "
              f"{seeds}, {mean['val_ari']:.2f} | {mean['sc_k']:.1f}, "
              f"{mean['sc_ari']:.2f} | {mean['best_ari']:.2f} | "
              f"{mean['seconds'] / mean['sweep']:.2f} |", flush=True)


def nested_table(seeds: int) -> None:
    """Power against effect size: 3 groups of 2 subtypes that differ in 20 genes only."""
    print("| subtype log fold change | mean clusters | seeds with all 6 subtypes (ARI >= 0.9) | "
          "mean ARI to subtypes | validated: mean clusters, ARI |")
    print("|---|---|---|---|---|")
    for effect in (0.5, 1.0, 1.5, 2.0, 3.0):
        rows = []
        for seed in range(seeds):
            adata = n2s.simulation.simulate_counts(
                3000, 1000, (0.5, 0.3, 0.2), depth_sd=0.5, n_subtypes=2, sub_effect=effect,
                sub_genes=20, effect=2.0, random_state=seed)
            mine, _ = ours(adata, seed)
            checked = validated(adata)
            truth = adata.obs["subgroup"].to_numpy()
            rows.append((len(set(mine)), adjusted_rand_score(truth, mine), len(set(checked)),
                         adjusted_rand_score(truth, checked)))
        rows = np.array(rows)
        found = int(np.sum((rows[:, 0] == 6) & (rows[:, 1] >= 0.9)))
        print(f"| {effect} | {rows[:, 0].mean():.1f} | {found} / {seeds} | "
              f"{rows[:, 1].mean():.2f} | {rows[:, 2].mean():.1f}, {rows[:, 3].mean():.2f} |",
              flush=True)


def large_table() -> None:
    """The issue's atlas-sized case: 10 NB groups, 30,000 cells, depth varying, one call."""
    print("| data | ours (one call, validated): K, ARI (s) | scanpy 1.0: K, ARI | "
          "scanpy best fixed: ARI | time / scanpy sweep |")
    print("|---|---|---|---|---|")
    adata = n2s.simulation.simulate_counts(30_000, 2000, unequal(10), depth_sd=0.5,
                                           random_state=0)
    truth = adata.obs["group"].to_numpy()
    start = time.perf_counter()
    n2s.tl.rank_genes_groups_split(adata)
    seconds = time.perf_counter() - start
    mine = adata.obs["rank_genes_groups_split_groups"].to_numpy()
    theirs, sweep = scanpy_sweep(adata)
    ari = {r: adjusted_rand_score(truth, labels) for r, labels in theirs.items()}
    print(f"| 10 NB groups, 30,000 cells | {len(set(mine))}, "
          f"{adjusted_rand_score(truth, mine):.2f} ({seconds:.0f}) | {len(set(theirs[1.0]))}, "
          f"{ari[1.0]:.2f} | {max(ari.values()):.2f} | {seconds / sweep:.2f} |", flush=True)


def type_one_table() -> None:
    print("| counts | test | seed | share p < 0.05 | KS p | time (s) | ratio to scanpy sweep |")
    print("|---|---|---|---|---|---|---|")
    for label, size, options in (("Poisson", None, {"split": "binomial"}),
                                 ("NB b=2", 2.0, {"split": "binomial"}),
                                 ("NB b=2", 2.0, {"split": "negative_binomial",
                                                  "overdispersion": "estimate"})):
        for seed in range(3):
            adata = homogeneous(1500, 600, seed, size=size)
            reference = scanpy_sweep(adata)[1]
            start = time.perf_counter()
            split = split_pvalues(adata.copy(), random_state=seed, **options)
            seconds = time.perf_counter() - start
            name = f"count split ({options.get('split', 'binomial')})"
            print(f"| {label} | {name} | {seed} | {np.mean(split < 0.05):.3f} | "
                  f"{stats.kstest(split, 'uniform').pvalue:.2g} | {seconds:.1f} | "
                  f"{seconds / reference:.1f} |")
            if label == "Poisson":
                naive = naive_pvalues(adata)
                print(f"| {label} | double dipping | {seed} | {np.mean(naive < 0.05):.3f} | "
                      f"{stats.kstest(naive, 'uniform').pvalue:.2g} | | |")


def warm_up() -> None:
    """Both sides once on small data: numba's compilation and the imports, paid once."""
    warm = n2s.simulation.simulate_counts(3000, 1000, unequal(4), depth_sd=0.5, random_state=99)
    ours(warm.copy(), 99)
    scanpy_sweep(warm)


def cellbench_table(seeds: int = 1) -> None:
    """CellBench at four depths; with ``seeds`` > 1, ``random_state`` 0..seeds-1 of ours."""
    if not os.environ.get("SC_NOISE2SELF_DATA"):
        print("CellBench and PBMC 3k: skipped ($SC_NOISE2SELF_DATA is not set)")
        return
    warm_up()
    print("| data | depth | ours: seeds with 3 and ARI >= 0.9; K; mean ARI (s) | validated: K, "
          "mean ARI | scanpy 1.0: K, ARI | scanpy best fixed: resolution, ARI | our time / "
          "scanpy sweep |")
    print("|---|---|---|---|---|---|---|")
    for protocol in ("celseq2", "dropseq"):
        deep = n2s.datasets.cellbench(protocol)
        truth = deep.obs["cell_line"].to_numpy()
        for share in (1.0, 0.2, 0.1, 0.05):
            thinned = deep.copy()
            if share < 1:
                thinned.X = n2s.split_counts(deep.X, share, random_state=0)[0]
            rows = [compared(thinned.copy(), truth, seed) for seed in range(seeds)]
            r = rows[0]
            hits = sum(x["k"] == 3 and x["ari"] >= 0.9 for x in rows)
            ks = ",".join(str(x["k"]) for x in rows)
            val_ks = ",".join(str(x["val_k"]) for x in rows)
            mean = {name: float(np.mean([x[name] for x in rows]))
                    for name in ("ari", "val_ari", "seconds", "sweep")}
            print(f"| CellBench {protocol} | {share:.0%} | {hits}/{seeds}; {ks}; "
                  f"{mean['ari']:.2f} ({mean['seconds']:.0f}) | {val_ks}, "
                  f"{mean['val_ari']:.2f} | {r['sc_k']}, {r['sc_ari']:.2f} | {r['best_r']:g}, "
                  f"{r['best_ari']:.2f} | {mean['seconds'] / mean['sweep']:.2f} |", flush=True)
    pbmc = n2s.datasets.pbmc3k()
    sc.pp.filter_genes(pbmc, min_cells=3)
    mine, seconds = ours(pbmc)
    checked = validated(pbmc)
    theirs, sweep = scanpy_sweep(pbmc)
    print(f"| PBMC 3k | 100% | {len(set(mine))} clusters ({seconds:.0f} s) | "
          f"{len(set(checked))} clusters | {len(set(theirs[1.0]))} clusters | - | - | "
          f"{seconds / sweep:.2f} |", flush=True)


def cost_table(seeds: int, repeats: int = 3) -> None:
    """Median seconds of ``calibrate_leiden`` and of one scanpy sweep, run in turn."""
    print("| K | seed | ours: median s | scanpy sweep: median s | ratio | load at the end |")
    print("|---|---|---|---|---|---|")
    warm_up()
    for k in (4, 12):
        for seed in range(1, seeds + 1):
            adata = n2s.simulation.simulate_counts(3000, 1000, unequal(k), depth_sd=0.5,
                                                   random_state=seed)
            mine, theirs = [], []
            for _ in range(repeats):
                mine.append(ours(adata.copy(), seed)[1])
                theirs.append(scanpy_sweep(adata)[1])
            a, b = float(np.median(mine)), float(np.median(theirs))
            print(f"| {k} | {seed} | {a:.2f} | {b:.2f} | {a / b:.2f} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20, help="seeds of the null table")
    parser.add_argument("--group-seeds", type=int, default=10)
    parser.add_argument("--cellbench-seeds", type=int, default=1,
                        help="random_state values of calibrate_leiden per CellBench depth")
    parser.add_argument("--tables", default="null,groups,nested,large,type1,real")
    args = parser.parse_args()
    print(f"load {os.getloadavg()}, threads: numba {os.environ.get('NUMBA_NUM_THREADS')}, "
          f"scanpy n_jobs {sc.settings.n_jobs}")
    tables = args.tables.split(",")
    if "null" in tables:
        null_table(args.seeds)
    if "groups" in tables:
        groups_table(args.group_seeds)
    if "nested" in tables:
        nested_table(min(args.group_seeds, 5))
    if "large" in tables:
        large_table()
    if "type1" in tables:
        type_one_table()
    if "real" in tables:
        cellbench_table(args.cellbench_seeds)
    if "cost" in tables:
        cost_table(min(args.group_seeds, 3))
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
