"""Out-of-core PCA calibration on dask against scanpy's dask PCA, on the same zarr data.

1. ``write``: synthetic counts (cells x 2,000 genes, about 7% non-zero, rank-10 structure)
   are written chunk by chunk to a zarr CSR group in AnnData's on-disk format, so that
   ``anndata.experimental.read_elem_lazy`` reads them back as a dask array of CSR chunks.
2. Each job then runs in a fresh child process (clean peak RSS, read by ``resource``), on
   the threaded dask scheduler with ``--workers`` threads, BLAS at one thread:

   - ``calibrate``: ``tl.calibrate_pca(adata, max_comps=100)`` on the lazy AnnData (split,
     normalise, Gram eigendecomposition, loss at every rank 0..100);
   - ``scanpy``: ``sc.pp.normalize_total``, ``sc.pp.log1p`` and ``sc.pp.pca(n_comps=100)`` on
     the lazy AnnData, the scores computed at the end;
   - ``memory``: the same calibration with the matrix loaded into memory (CSR) first, with
     the load time and RSS reported apart;
   - ``svd-routes``: the two SVD routes of issue 7 on half A of one split (normalised,
     sqrt): the Gram eigendecomposition (what ``calibrate`` uses) against
     ``dask.array.linalg.svd_compressed`` (dense chunks, centred), with the variance each
     route's 100 components capture.

Run:  python benchmarks/bench_dask_scale.py --n-cells 100000 [--jobs calibrate,scanpy,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_COMPS = 100
JOBS = ("calibrate", "scanpy", "memory", "svd-routes")

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "1")


def write_counts(path: Path, n_cells: int, n_genes: int, chunk: int, seed: int = 0) -> float:
    """Write the synthetic counts to ``path`` (zarr); return the share of non-zeros."""
    import zarr
    from scipy import sparse

    rng = np.random.default_rng(seed)
    rank = 10
    programs = rng.gamma(0.3, 1.0, (rank, n_genes)) * rng.lognormal(-4.0, 1.0, n_genes)
    root = zarr.open_group(str(path), mode="w")
    group = root.create_group("X")
    group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0",
                        "shape": [n_cells, n_genes]})
    data = group.create_array("data", shape=(0,), chunks=(1 << 20,), dtype="int32")
    indices = group.create_array("indices", shape=(0,), chunks=(1 << 20,), dtype="int32")
    indptr = [np.zeros(1, dtype=np.int64)]
    for start in range(0, n_cells, chunk):
        rows = min(chunk, n_cells - start)
        # Each chunk from its own seed, so a chunk's counts do not depend on the others.
        block_rng = np.random.default_rng([seed, start])
        weights = block_rng.gamma(1.0, 1.0, (rows, rank)) * block_rng.lognormal(0, 0.3, (rows, 1))
        block = sparse.csr_matrix(block_rng.poisson(weights @ programs).astype(np.int32))
        data.append(block.data)
        indices.append(block.indices)
        indptr.append(block.indptr[1:].astype(np.int64) + indptr[-1][-1])
    group.create_array("indptr", data=np.concatenate(indptr), chunks=(1 << 20,))
    return float(indptr[-1][-1]) / (n_cells * n_genes)


def lazy_counts(path: Path, chunk: int):
    """The counts as a dask array of CSR chunks of ``chunk`` rows, read lazily."""
    import zarr
    from anndata.experimental import read_elem_lazy

    return read_elem_lazy(zarr.open_group(str(path), mode="r")["X"], chunks=(chunk, -1))


def job_calibrate(path: Path, chunk: int) -> dict:
    import anndata as ad

    from sc_noise2self import tl

    adata = ad.AnnData(X=lazy_counts(path, chunk))
    tl.calibrate_pca(adata, max_comps=N_COMPS)
    return {"best": int(adata.uns["noise2self"]["best"])}


def job_scanpy(path: Path, chunk: int) -> dict:
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(X=lazy_counts(path, chunk).astype(np.float32))
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=N_COMPS)
    scores = adata.obsm["X_pca"]
    scores = scores.compute() if hasattr(scores, "compute") else scores
    return {"scores_shape": list(scores.shape)}


def job_memory(path: Path, chunk: int) -> dict:
    import anndata as ad

    from sc_noise2self import tl

    start = time.perf_counter()
    adata = ad.AnnData(X=lazy_counts(path, chunk).compute())
    loaded = time.perf_counter() - start
    rss_loaded = peak_rss_gb()
    start = time.perf_counter()
    tl.calibrate_pca(adata, max_comps=N_COMPS)
    return {"best": int(adata.uns["noise2self"]["best"]), "load_s": loaded,
            "calibrate_s": time.perf_counter() - start, "rss_after_load_gb": rss_loaded}


def job_svd_routes(path: Path, chunk: int) -> dict:
    import dask.array as da
    from scipy import sparse

    from sc_noise2self import split_counts
    from sc_noise2self.denoisers.pca_dask import _components, _gram
    from sc_noise2self.transforms import apply_transform, library_sizes, normalize_to_depth

    def normalised(block):
        values = normalize_to_depth(block, 0.7 * 100.0, library_sizes(block))
        return sparse.csr_matrix(apply_transform(values, "sqrt", inplace=True), dtype=np.float64)

    half_a, _ = split_counts(lazy_counts(path, chunk), 0.7, random_state=0)
    A = half_a.map_blocks(normalised, dtype=np.float64)
    out = {}
    start = time.perf_counter()
    per_chunk = (1,) * A.numblocks[0]
    a_sum = A.map_blocks(lambda b: np.asarray(b.sum(axis=0)), dtype=np.float64,
                         chunks=(per_chunk, (A.shape[1],))).sum(axis=0)
    gram = A.map_blocks(lambda b: _gram(b, b)[None], new_axis=1, dtype=np.float64,
                        chunks=(per_chunk, (A.shape[1],), (A.shape[1],))).sum(axis=0)
    a_sum, gram = da.compute(a_sum, gram)
    fit = _components({"n": A.shape[0], "a_sum": a_sum, "a_gram": gram}, N_COMPS, center=True)
    out["gram_s"] = time.perf_counter() - start
    covariance = gram / A.shape[0] - np.outer(fit.mean, fit.mean)
    total = np.trace(covariance)
    out["gram_captured"] = float(np.trace(fit.components @ covariance @ fit.components.T) / total)
    start = time.perf_counter()
    mean = fit.mean
    dense = A.map_blocks(lambda b: b.toarray() - mean, dtype=np.float64,
                         meta=np.empty((0, 0)))
    _, _, v = da.linalg.svd_compressed(dense, k=N_COMPS, n_power_iter=2, seed=0,
                                       compute=False)
    v = np.asarray(v.compute())
    out["svd_compressed_s"] = time.perf_counter() - start
    out["svd_compressed_captured"] = float(np.trace(v @ covariance @ v.T) / total)
    return out


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child(job: str, path: Path, chunk: int, workers: int) -> None:
    """Run one job with the threaded scheduler and print its figures as JSON."""
    import dask
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    dask.config.set(scheduler="threads", num_workers=workers)
    start = time.perf_counter()
    figures = globals()[f"job_{job.replace('-', '_')}"](path, chunk)
    figures.update(wall_s=time.perf_counter() - start, peak_rss_gb=peak_rss_gb())
    print("RESULT " + json.dumps(figures), flush=True)


def run_child(job: str, args) -> dict:
    command = [sys.executable, __file__, "--child", job, "--path", str(args.path),
               "--chunk", str(args.chunk), "--workers", str(args.workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"error": f"exit status {done.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=1_000_000)
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per dask chunk")
    parser.add_argument("--workers", type=int, default=2, help="dask threads")
    parser.add_argument("--path", type=Path, default=None,
                        help="zarr store (default /tmp/sc_noise2self_bench_<cells>.zarr)")
    parser.add_argument("--jobs", default="calibrate,scanpy",
                        help=f"comma-separated, from {', '.join(JOBS)}")
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.path is None:
        args.path = Path(f"/tmp/sc_noise2self_bench_{args.n_cells}x{args.n_genes}.zarr")
    if args.child:
        child(args.child, args.path, args.chunk, args.workers)
        return
    if not (args.path / "X" / "indptr").exists():
        start = time.perf_counter()
        density = write_counts(args.path, args.n_cells, args.n_genes, args.chunk)
        print(f"wrote {args.path}: {args.n_cells} x {args.n_genes}, {density:.1%} non-zero, "
              f"in {time.perf_counter() - start:.0f} s")
    results = {}
    for job in args.jobs.split(","):
        results[job] = run_child(job, args)
        print(f"{job}: {json.dumps(results[job])}", flush=True)
    if "wall_s" in results.get("calibrate", {}) and "wall_s" in results.get("scanpy", {}):
        ratio = results["calibrate"]["wall_s"] / results["scanpy"]["wall_s"]
        print(f"calibrate_pca / scanpy dask pca: wall {ratio:.2f}x; peak RSS "
              f"{results['calibrate']['peak_rss_gb']:.2f} GB vs "
              f"{results['scanpy']['peak_rss_gb']:.2f} GB")
    if "wall_s" in results.get("calibrate", {}) and "calibrate_s" in results.get("memory", {}):
        ratio = results["calibrate"]["wall_s"] / results["memory"]["calibrate_s"]
        print(f"dask / in memory (calibration only, load excluded): {ratio:.2f}x")


if __name__ == "__main__":
    main()
