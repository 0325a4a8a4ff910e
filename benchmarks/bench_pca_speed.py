"""Speed and memory of ``calibrate_pca`` against one ``sc.pp.pca(n_comps=100)``.

Both run on the same synthetic counts (100,000 cells x 2,000 genes, about 10% non-zero):
scanpy gets the sqrt-normalised matrix and its default sparse solver; ours does the whole job
(split, normalise and transform both halves, SVD of half A, loss at every rank 0..100),
at its defaults and in variants.
A naive calibration that refits a PCA for every rank is timed on a 10,000-cell subset.
Peak memory is measured in fresh child processes, as RSS above the level after loading.

Run:  python benchmarks/bench_pca_speed.py [--cells 100000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from scipy import sparse

N_COMPS = 100


def make_counts(n_cells: int, path: Path) -> None:
    from sc_noise2self import datasets

    adata = datasets.synthetic_counts(n_cells, 2000, rank=20, depth=250, store_truth=False)
    sparse.save_npz(path, adata.X)


def transformed(X):
    from sc_noise2self.transforms import apply_transform, library_sizes, normalize_to_depth

    depth = float(np.median(library_sizes(X)))
    return apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)


def run_job(job: str, X, **options):
    import scanpy as sc

    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    if job == "scanpy":
        return sc.pp.pca(transformed(X), n_comps=N_COMPS)
    return calibrate_pca_counts(X, max_comps=N_COMPS, **options)


def timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def naive_calibration(X, max_comps: int) -> None:
    """Refit a PCA for every rank and score it densely (what one would write by hand)."""
    from sklearn.decomposition import PCA

    from sc_noise2self.losses import prepare_halves

    halves = prepare_halves(X, p=0.5, transform="sqrt", random_state=0)
    B = halves.b.toarray()
    for k in range(1, max_comps + 1):
        pca = PCA(n_components=k, svd_solver="arpack", random_state=0)
        recon = pca.inverse_transform(pca.fit_transform(halves.a))
        np.mean((recon - B) ** 2)


def peak_memory_child(path: str, job: str) -> None:
    """Child process: print the peak RSS above the post-load level, in bytes."""
    X = sparse.load_npz(path)
    import scanpy  # noqa: F401  (imports are not the job's memory)
    import sklearn.decomposition  # noqa: F401

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    run_job(job, X)
    done.set()
    thread.join()
    print(peak[0] - baseline)


def measure_peak(path: Path, job: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(path), job],
        check=True, capture_output=True, text=True,
    )
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--naive-cells", type=int, default=10_000)
    parser.add_argument("--memory-child", nargs=2, metavar=("PATH", "JOB"))
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(*args.memory_child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "counts.npz"
        make_counts(args.cells, path)
        X = sparse.load_npz(path).tocsr()
        input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        print(f"data: {X.shape[0]} x {X.shape[1]}, {X.nnz / np.prod(X.shape):.1%} non-zero, "
              f"sparse input {input_bytes / 1e6:.0f} MB")
        run_job("scanpy", X[:2000])  # warm imports and caches
        t_scanpy = timed(run_job, "scanpy", X)
        print(f"sc.pp.pca(n_comps={N_COMPS}), default solver: {t_scanpy:.1f} s", flush=True)
        variants = {
            "defaults (p=0.7, 20,000 scored cells)": {},
            "p=0.5 (linear, every cell scored)": {"p": 0.5},
            "p=0.7, every cell scored": {"max_score_cells": None},
            "p=0.5, solver='covariance_eigh'": {"p": 0.5, "solver": "covariance_eigh"},
        }
        for label, options in variants.items():
            seconds = timed(run_job, "ours", X, **options)
            print(f"calibrate_pca(max_comps={N_COMPS}), {label}: {seconds:.1f} s, "
                  f"ratio {seconds / t_scanpy:.2f}", flush=True)

        small = X[: args.naive_cells]
        t_naive = timed(naive_calibration, small, N_COMPS)
        t_small = timed(run_job, "ours", small, p=0.5)
        print(f"{args.naive_cells} cells, p=0.5: naive refit per rank {t_naive:.1f} s, "
              f"ours {t_small:.2f} s, ratio {t_naive / t_small:.0f}x", flush=True)

        for job in ("scanpy", "ours"):
            peak = measure_peak(path, job)
            print(f"peak RSS above the loaded input, {job}: {peak / 1e6:.0f} MB = "
                  f"{peak / input_bytes:.2f} x the sparse input")


if __name__ == "__main__":
    main()
