"""scVI's latent dimension chosen by molecular cross-validation, against the truth (issue 17).

For data with a known truth (the synthetic generator, and CellBench downsampled to 5% and 10%
of its UMIs with the deep profile as truth), ``tl.calibrate_scvi`` scores each ``n_latent`` on
one split; then an scVI of every ``n_latent`` is trained on all the (shallow) counts, as
``tl.denoise_scvi`` would, and its normalised expression is scored against the truth. The
true loss is the squared error of the expected sqrt-normalised count at each cell's depth
(as in ``bench_families.py``). Reported: the chosen and the truth-best width, the regret of
the choice, the Spearman correlation of the two rankings, what the default ``n_latent=10``
loses against the chosen width, and the 15-NN cell-line accuracy of the latent space.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_scvi.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import anndata as ad
import numpy as np
from scipy import stats
from sklearn.neighbors import NearestNeighbors

import sc_noise2self as n2s
from sc_noise2self import datasets, split_counts
from sc_noise2self.transforms import expected_transform, library_sizes

GRID = (2, 5, 10, 20, 30)


def true_loss(rho: np.ndarray, profile: np.ndarray, library: np.ndarray) -> float:
    """Squared error of expected sqrt-normalised counts, prediction against truth."""
    depth = float(np.median(library))
    scale = np.sqrt(depth / library)[:, None]
    predicted = scale * expected_transform(rho * library[:, None], "sqrt")
    truth = scale * expected_transform(profile * library[:, None], "sqrt")
    return float(np.mean((predicted - truth) ** 2))


def knn_accuracy(latent: np.ndarray, labels: np.ndarray, k: int = 15) -> float:
    """Share of cells whose 15 nearest neighbours (not themselves) vote their own label."""
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(latent).kneighbors(latent)
    votes = labels[index[:, 1:]]
    predicted = np.array([max(set(row), key=list(row).count) for row in votes])
    return float(np.mean(predicted == labels))


def evaluate(name: str, adata: ad.AnnData, profile: np.ndarray, library: np.ndarray,
             labels: np.ndarray | None, max_epochs: int | None) -> dict:
    start = time.perf_counter()
    n2s.tl.calibrate_scvi(adata, n_latent=GRID, max_epochs=max_epochs, accelerator="cpu")
    seconds = time.perf_counter() - start
    record = adata.uns["noise2self_scvi"]
    ss = np.asarray(record["loss"])
    truths, accuracies = [], []
    for n_latent in GRID:
        scratch = adata.copy()
        n2s.tl.denoise_scvi(scratch, n_latent=n_latent, max_epochs=max_epochs,
                            accelerator="cpu")
        depth = float(scratch.uns["noise2self_scvi"]["params"]["depth"])
        rho = np.asarray(scratch.layers["noise2self_scvi"], dtype=np.float64) / depth
        truths.append(true_loss(rho, profile, library))
        if labels is not None:
            accuracies.append(knn_accuracy(scratch.obsm["X_noise2self_scvi"], labels))
    truths = np.asarray(truths)
    chosen, best = int(np.argmin(ss)), int(np.argmin(truths))
    default = GRID.index(10)
    row = dict(name=name, chosen=GRID[chosen], truth_best=GRID[best],
               regret=truths[chosen] / truths[best] - 1,
               spearman=stats.spearmanr(ss, truths).statistic,
               default_loss=truths[default] / truths[chosen] - 1,
               seconds_per_setting=seconds / len(GRID), ss=ss, truths=truths,
               baseline=float(record["params"]["baseline_loss"]),
               acc_chosen=accuracies[chosen] if accuracies else None,
               acc_default=accuracies[default] if accuracies else None)
    print(f"\n{name}: chosen {row['chosen']}, truth-best {row['truth_best']}, regret "
          f"{row['regret']:.1%}, Spearman {row['spearman']:.2f}, n_latent=10 loses "
          f"{row['default_loss']:+.1%} true loss against the chosen width, "
          f"{row['seconds_per_setting']:.1f} s per setting (calibration)")
    print("| n_latent | self-supervised loss | true loss | 15-NN accuracy |")
    print("|---|---|---|---|")
    for i, n_latent in enumerate(GRID):
        acc = f"{accuracies[i]:.3f}" if accuracies else "-"
        print(f"| {n_latent} | {ss[i]:.5f} | {truths[i]:.5f} | {acc} |")
    print(f"gene-mean baseline (self-supervised): {row['baseline']:.5f}", flush=True)
    return row


def cellbench_cases(fractions=(0.05, 0.10)):
    for protocol in ("celseq2", "dropseq"):
        deep = datasets.cellbench(protocol)
        top = np.argsort(-np.asarray(deep.X.sum(axis=0)).ravel())[:2000]
        counts = deep.X[:, top].astype(np.int64)
        deep_library = library_sizes(counts)
        profile = counts.toarray() / deep_library[:, None]
        for fraction in fractions:
            low, _ = split_counts(counts, fraction, random_state=0)
            adata = ad.AnnData(low.astype(np.int32).tocsr())
            adata.var_names = deep.var_names[top]
            keep = library_sizes(adata.X) > 0
            yield (f"CellBench {protocol} at {fraction:.0%} of UMIs ({int(keep.sum())} cells, "
                   "top 2,000 genes)", adata[keep].copy(), profile[keep],
                   fraction * deep_library[keep],
                   deep.obs["cell_line"].to_numpy()[keep])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 epochs, synthetic only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {args.threads}")
    epochs = 100 if args.quick else None
    rows = []
    synthetic = datasets.synthetic_counts(1000, 500, rank=8, depth=500, random_state=0)
    rate = synthetic.layers["rate"].astype(np.float64)
    library = rate.sum(axis=1)
    rows.append(evaluate("synthetic 1000 x 500, rank 8, 500 UMIs/cell", synthetic,
                         rate / library[:, None], library, None, epochs))
    if not args.quick and datasets.local_file("cellbench_celseq2_3cl.h5ad") is not None:
        for case in cellbench_cases():
            rows.append(evaluate(*case, epochs))
    print("\n| data | chosen | truth-best | regret | Spearman | n_latent=10 vs chosen (true "
          "loss) | 15-NN acc. chosen / 10 | s per setting |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = (f"{r['acc_chosen']:.3f} / {r['acc_default']:.3f}" if r["acc_chosen"] is not None
               else "-")
        print(f"| {r['name']} | {r['chosen']} | {r['truth_best']} | {r['regret']:.1%} | "
              f"{r['spearman']:.2f} | {r['default_loss']:+.1%} | {acc} | "
              f"{r['seconds_per_setting']:.1f} |")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
