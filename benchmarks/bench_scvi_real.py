"""scVI beside the other families on real data: paul15 and pbmc3k (issue 17).

``tl.compare`` calibrates PCA, kNN, diffusion, our autoencoder and scVI on the same split
(same ``random_state``), so their best self-supervised losses compare directly; the scVI
curve, its chosen ``n_latent`` and the time per setting are printed. pbmc3k keeps its 2,000
genes with the most counts (scVI is trained on selected genes in practice).

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_scvi_real.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import sc_noise2self as n2s
from sc_noise2self import datasets

METHODS = ("pca", "knn", "diffusion", "autoencoder", "scvi")


def top_genes(adata, n: int = 2000):
    totals = np.asarray(adata.X.sum(axis=0)).ravel()
    keep = np.sort(np.argsort(-totals)[:n])
    adata = adata[:, keep].copy()
    cells = np.asarray(adata.X.sum(axis=1)).ravel() > 0
    return adata[cells].copy()


def run(name: str, adata, accelerator: str) -> None:
    print(f"\n{name}: {adata.n_obs} cells x {adata.n_vars} genes, load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    table = n2s.tl.compare(adata, methods=METHODS,
                           options={"scvi": {"accelerator": accelerator}})
    print("| method | knob | best | self-supervised loss | gene-mean baseline | time |")
    print("|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        print(f"| {r['method']} | {r['param']} | {r['best']} | {r['best_loss']:.5f} | "
              f"{r['baseline_loss']:.5f} | {r['seconds']:.0f} s |")
    record = adata.uns["noise2self_scvi"]
    seconds = float(table.loc[table["method"] == "scvi", "seconds"].iloc[0])
    print("scVI curve (n_latent: loss): " + ", ".join(
        f"{int(g)}: {v:.5f}" for g, v in zip(record["grid"], record["loss"], strict=True)))
    print(f"scVI chose n_latent={record['best']}; {seconds / len(record['grid']):.0f} s per "
          f"setting; load average {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {args.threads}; accelerator {args.accelerator}")
    run("paul15", datasets.paul15(), args.accelerator)
    if datasets.local_file("pbmc3k_raw.h5ad") is not None:
        run("pbmc3k (top 2,000 genes by count)", top_genes(datasets.pbmc3k()), args.accelerator)


if __name__ == "__main__":
    main()
