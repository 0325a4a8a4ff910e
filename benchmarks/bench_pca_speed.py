"""Speed and memory of ``calibrate_pca`` and ``denoise_pca`` against scanpy's PCA (issue 19).

The references, run in this process on the same sqrt-normalised matrix (the normalisation
is not timed): one ``sc.pp.pca(n_comps=100, svd_solver="randomized", zero_center=False)``,
the fastest solver scanpy has, and one ``sc.pp.pca(n_comps=100)`` at scanpy's defaults
(ARPACK, centred). Ours does the whole job at its defaults: split, normalise and transform
both halves, randomized PCA of half A, the loss at every rank 0..100 (p = 0.7: a non-linear
conversion, scored on 20,000 cells). ``denoise_pca`` then runs after ``calibrate_pca`` on the
same AnnData (no dense layer), starting from the calibration's components. Timings are the
minimum over ``--repeats`` runs, the tools alternating (the other runs measure the
machine's other load). Peak memory is measured in fresh child processes, as RSS above the
level after loading the counts.

Data: synthetic counts (rank 20, median depth 250, about 10% non-zero), 2,000 genes;
``--cells 1000000`` builds them chunk by chunk (:func:`datasets.write_synthetic_counts`).
``--data pbmc3k``: the PBMC 3k counts, every gene detected in at least 3 cells (13,714),
as a new user's first run.

Run:  python benchmarks/bench_pca_speed.py [--cells 100000 | --data pbmc3k] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
from scipy import sparse

N_COMPS = 100
N_GENES = 2000


def make_counts(n_cells: int, path: Path, data: str = "sim") -> None:
    import anndata as ad

    from sc_noise2self import datasets

    if data == "pbmc3k":
        import scanpy as sc

        adata = datasets.pbmc3k()
        sc.pp.filter_genes(adata, min_cells=3)
        X = adata.X
    elif n_cells <= 200_000:
        X = datasets.synthetic_counts(n_cells, N_GENES, rank=20, depth=250,
                                      store_truth=False).X
    else:
        store = datasets.write_synthetic_counts(path.with_suffix(".zarr"), n_cells, N_GENES,
                                                rank=20, depth=250, chunk_size=50_000)
        X = ad.read_zarr(store).X
    sparse.save_npz(path, sparse.csr_matrix(X), compressed=False)


def transformed(X):
    from sc_noise2self.transforms import apply_transform, library_sizes, normalize_to_depth

    depth = float(np.median(library_sizes(X)))
    return apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)


def scanpy_pca(values, solver: str) -> None:
    import scanpy as sc

    if solver == "randomized":
        sc.pp.pca(values, n_comps=N_COMPS, svd_solver="randomized", zero_center=False)
    else:
        sc.pp.pca(values, n_comps=N_COMPS)


# Split options of our side: {} is the package's defaults (NB split at estimated sizes,
# Poisson deviance); --former-defaults times MSE on a binomial split (before issue 24).
OPTIONS: dict = {}


def ours(X, job: str):
    import anndata as ad

    from sc_noise2self import tl

    adata = ad.AnnData(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        tl.calibrate_pca(adata, max_comps=N_COMPS, progress=False, **OPTIONS)
        calibrate = time.perf_counter() - start
        if job == "calibrate":
            return calibrate, None
        start = time.perf_counter()
        tl.denoise_pca(adata, max_comps=N_COMPS, max_layer_gb=0, progress=False, **OPTIONS)
        return calibrate, time.perf_counter() - start


def peak_memory_child(path: str, job: str) -> None:
    """Child process: print the peak RSS above the post-load level, in bytes."""
    X = sparse.load_npz(path).tocsr()
    import scanpy  # noqa: F401  (imports are not the job's memory)

    from sc_noise2self import tl  # noqa: F401

    ours(X[:3000], "calibrate")  # compile and warm up outside the measurement
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
    if job == "scanpy-randomized":
        scanpy_pca(transformed(X), "randomized")
    else:
        ours(X, job)
    done.set()
    thread.join()
    print(peak[0] - baseline)


def measure_peak(path: Path, job: str) -> int:
    former = ["--former-defaults"] if OPTIONS else []
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), job, *former],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", choices=("sim", "pbmc3k"), default="sim")
    parser.add_argument("--skip-default", action="store_true",
                        help="skip scanpy's default (ARPACK) solver, slow at a million cells")
    parser.add_argument("--memory-child", nargs=2, metavar=("PATH", "JOB"))
    parser.add_argument("--former-defaults", action="store_true",
                        help="our side with loss='mse', split='binomial' (before issue 24)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS runs")
    args = parser.parse_args()
    if args.former_defaults:
        OPTIONS.update(loss="mse", split="binomial")
    if args.memory_child:
        peak_memory_child(*args.memory_child)
        return
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "counts.npz"
        make_counts(args.cells, path, args.data)
        X = sparse.load_npz(path).tocsr()
        input_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
        print(f"data: {X.shape[0]} x {X.shape[1]}, {X.nnz / np.prod(X.shape):.1%} non-zero, "
              f"sparse input {input_bytes / 1e6:.0f} MB", flush=True)
        values = transformed(X)
        scanpy_pca(values[:3000], "randomized")  # warm imports and compiled kernels
        ours(X[:3000], "denoise")
        print(threads_and_precision(), flush=True)  # now that every library is loaded
        times: dict[str, float] = {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            scanpy_pca(values, "randomized")
            reference = time.perf_counter() - start
            calibrate, denoise = ours(X, "denoise")
            for name, seconds in (("randomized", reference), ("calibrate", calibrate),
                                  ("denoise", denoise)):
                times[name] = min(times.get(name, np.inf), seconds)
            print(f"  run: scanpy randomized {reference:.1f} s, calibrate {calibrate:.1f} s, "
                  f"denoise {denoise:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
        if not args.skip_default:
            start = time.perf_counter()
            scanpy_pca(values, "default")
            times["default"] = time.perf_counter() - start
        del values
        print(f"sc.pp.pca randomized, uncentred: {times['randomized']:.1f} s")
        if "default" in times:
            print(f"sc.pp.pca at its defaults (ARPACK, centred): {times['default']:.1f} s; "
                  f"calibrate_pca / it = {times['calibrate'] / times['default']:.2f}")
        print(f"calibrate_pca at its defaults: {times['calibrate']:.1f} s; / randomized = "
              f"{times['calibrate'] / times['randomized']:.2f}")
        print(f"denoise_pca after calibrate_pca: {times['denoise']:.1f} s; / calibration = "
              f"{times['denoise'] / times['calibrate']:.2f}", flush=True)
        del X
        for job in () if args.skip_memory else ("calibrate", "denoise", "scanpy-randomized"):
            peak = measure_peak(path, job)
            print(f"peak RSS above the loaded input, {job}: {peak / 1e6:.0f} MB = "
                  f"{peak / input_bytes:.2f} x the sparse input", flush=True)
    print(f"load average at end: {os.getloadavg()}")


def threads_and_precision() -> str:
    """What both sides run on: the same process, so the same BLAS and OpenMP threads."""
    import numba
    from threadpoolctl import threadpool_info

    pools = sorted({f"{pool['internal_api']} {pool['num_threads']}"
                    for pool in threadpool_info()})
    return (f"threads (both sides, one process): numba {numba.get_num_threads()}, "
            f"{', '.join(pools)}; precision: float32 values on both sides (scanpy's PCA of "
            "float32, our halves float32 with float64 loss sums)")


if __name__ == "__main__":
    main()
