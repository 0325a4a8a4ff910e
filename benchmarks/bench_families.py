"""Which denoiser family fits best: self-supervised against true loss (Table 1, single-cell).

For each dataset with a known truth, every family (PCA, kNN, diffusion, autoencoder) is
calibrated on the same split; then each family's full-data denoiser at its chosen setting is
scored against the truth on the sqrt scale (the expected sqrt-normalised count, as in
``bench_pca_quality.py``). The claim to check: the family with the lowest self-supervised
loss also has the lowest true loss.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_families.py
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
from bench_pca_quality import expected_sqrt

import sc_noise2self as n2s
from sc_noise2self import datasets, split_counts
from sc_noise2self.transforms import library_sizes

METHODS = ("pca", "knn", "diffusion", "autoencoder")
DENOISE = {
    "pca": lambda a, best: n2s.tl.denoise_pca(a, n_comps=max(int(best), 1), key_added="d"),
    "knn": lambda a, best: n2s.tl.denoise_knn(a, n_neighbors=int(best), key_added="d"),
    "diffusion": lambda a, best: n2s.tl.denoise_diffusion(a, t=int(best), key_added="d"),
    "autoencoder": lambda a, best: n2s.tl.denoise_autoencoder(a, width=int(best), key_added="d"),
}


def true_loss(adata, profile, library) -> float:
    depth = adata.uns["d"]["params"]["depth"]
    truth = np.sqrt(depth / library)[:, None] * expected_sqrt(profile * library[:, None])
    return float(np.mean((adata.layers["d"] - truth) ** 2))


def evaluate(name, adata, profile, library) -> None:
    table = n2s.tl.compare(adata, methods=METHODS)
    rows = []
    for _, row in table.iterrows():
        start = time.perf_counter()
        scratch = adata.copy()
        DENOISE[row["method"]](scratch, row["best"])
        rows.append((row["method"], row["best"], row["best_loss"], true_loss(scratch, profile,
                     library), row["seconds"] + time.perf_counter() - start))
    best_ss = min(rows, key=lambda r: r[2])[0]
    best_true = min(rows, key=lambda r: r[3])[0]
    print(f"\n{name}: lowest self-supervised loss: {best_ss}; lowest true loss: {best_true}")
    print("| method | chosen setting | self-supervised loss | true loss | time |")
    print("|---|---|---|---|---|")
    for method, best, ss, true, seconds in rows:
        print(f"| {method} | {best} | {ss:.5f} | {true:.5f} | {seconds:.0f} s |", flush=True)


def main() -> None:
    # Small torch and BLAS operations slow down badly when threads outnumber free cores.
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    adata = datasets.synthetic_counts(2000, 500, rank=8, depth=500, random_state=0)
    rate = adata.layers["rate"].astype(np.float64)
    library = rate.sum(axis=1)
    evaluate("synthetic 2000 x 500, rank 8, 500 UMIs/cell", adata, rate / library[:, None],
             library)
    if datasets.local_file("cellbench_celseq2_3cl.h5ad") is None:
        print("(skipping CellBench: not under $SC_NOISE2SELF_DATA)")
        return
    deep = datasets.cellbench("celseq2")
    top = np.argsort(-np.asarray(deep.X.sum(axis=0)).ravel())[:2000]
    counts = deep.X[:, top].astype(np.int64)
    deep_library = library_sizes(counts)
    low, _ = split_counts(counts, 0.1, random_state=0)
    low_adata = ad.AnnData(low.astype(np.int32).tocsr())
    low_adata.var_names = deep.var_names[top]
    evaluate("CellBench CEL-seq2 at 10% of UMIs (top 2,000 genes)", low_adata,
             counts.toarray() / deep_library[:, None], 0.1 * deep_library)


if __name__ == "__main__":
    main()
