"""The documented atlas workflow, stage by stage, beside scanpy's standard pipeline (issue 28).

Ours, in one call (``--path one-call``, the default): ``tl.rank_genes_groups_split(adata)``
splits the molecules, builds half A's graph, chooses the resolution by the loss, refines and
validates the clusters and tests their markers on half B. Or as the README's three calls
(``--path readme``): ``tl.calibrate_leiden``, ``tl.validate_clusters_split`` and
``tl.rank_genes_groups_split(groupby=<validated>)``, which draw the split again in each.
scanpy's standard pipeline on the same counts: ``normalize_total``,
``log1p``, 2,000 highly variable genes, PCA 50, ``neighbors``, Leiden 1.0,
``rank_genes_groups`` (Wilcoxon).

Each side runs in a fresh child process that first pays numba's and pynndescent's
compilation on a small warm-up set (so neither side is charged a one-off compile), then
reads the counts from an ``.h5ad`` written once. A stage's seconds are exclusive: time
spent in a nested stage is counted there only. Peak memory is the child's peak RSS (after
the read) against the sparse counts' bytes in memory; each stage's row says by how much the
peak rose while it ran (a stage that ends on a new peak is charged with the rise).
Threads: BLAS, numba and scanpy use every core on both sides (``--threads`` sets them);
precision is float32 counts on both sides, float64 in our loss.

Data: ``--data sim`` (the realistic simulator: NB counts, b from 0.5 to 50, library sizes
lognormal with sd 0.5, 10 groups of 40% down to 1%) at ``--cells``; ``--data pbmc3k``
(all genes, cells filtered as in scanpy's tutorial: ``min_genes=200``, genes in 3 cells).

``--sides`` may add ``dask``: ours on a ``LocalCluster`` of two single-thread worker
processes limited to ``--worker-memory`` each, the counts read lazily from the ``.h5ad`` in
chunks of 50,000 cells (the workers' peak memory is printed too).

Run:  python benchmarks/bench_atlas_workflow.py --data sim --cells 200000
      python benchmarks/bench_atlas_workflow.py --data sim --cells 200000 --sides dask,scanpy
      SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_atlas_workflow.py --data pbmc3k
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Every PCA and every scanpy neighbour graph, wherever it is called from (the wrapper replaces
# the function in each module that imported it): the graphs, the NB sizes, the validation.
PCA_STAGE = "PCA (every one: graphs, NB sizes, validation)"
KNN_STAGE = "kNN graphs (scanpy.pp.neighbors)"
# (module, attribute, stage): wrapped in the child in every module that holds the function.
OUR_STAGES = (
    ("sc_noise2self.runs", "estimate_overdispersion", "NB sizes"),
    ("sc_noise2self.losses", "prepare_halves", "split"),
    ("sc_noise2self.denoisers.leiden", "informative_genes", "half A's genes"),
    ("sc_noise2self.denoisers.leiden_graph", "fit_pca", PCA_STAGE),
    ("sc_noise2self.denoisers.leiden_graph", "gram_pca", PCA_STAGE),
    ("sc_noise2self.denoisers.leiden_graph", "scanpy_neighbors", KNN_STAGE),
    ("sc_noise2self.denoisers.leiden_graph", "randomized_pca", PCA_STAGE),
    ("sc_noise2self.denoisers.leiden_graph", "GeneScaling.of", "graph: scaled genes"),
    ("sc_noise2self.denoisers.leiden_graph", "GeneScaling.apply", "graph: scaled genes"),
    ("sc_noise2self.denoisers.leiden", "leiden_labels", "Leiden runs"),
    ("sc_noise2self.denoisers.leiden", "leiden_sweep", "Leiden sweep (rest: worker processes)"),
    ("sc_noise2self.denoisers.leiden", "partition_deviances_of", "loss"),
    ("sc_noise2self.denoisers.leiden", "refined_clusters", "refinement (rest)"),
    ("sc_noise2self.denoisers.leiden_refine", "reassigned_by_likelihood",
     "reassignment (rest)"),
    ("sc_noise2self.denoisers.leiden", "store_clusters", "store"),
    ("sc_noise2self.denoisers.leiden_dask", "DaskSplit.of",
     "dask: split, half A's genes, chunks persisted"),
    ("sc_noise2self.denoisers.leiden_dask", "DaskSplit.graph", "dask: graph (PCA passes, kNN)"),
    ("sc_noise2self.denoisers.leiden_dask", "ChunkedTargets.deviances_of", "loss"),
    ("sc_noise2self.runs", "prepare_dask", "dask: totals pass"),
    ("sc_noise2self.tl", "calibrate_leiden", "calibrate_leiden (rest)"),
    ("sc_noise2self.inference", "replicated_clusters", "validation (rest)"),
    ("sc_noise2self.tl", "validate_clusters_split", "validation (rest)"),
    ("sc_noise2self.inference", "_test_groups", "markers on half B"),
    ("sc_noise2self.inference", "rank_genes_groups_split", "rank_genes_groups_split (rest)"),
    ("scanpy.tools", "rank_genes_groups", "markers: scanpy's test"),
)


class StageClock:
    """Exclusive seconds per stage: a nested stage's time is taken out of its caller's."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rise: dict[str, float] = {}  # GB the process's peak RSS rose by in a stage
        self._stack: list[list[float]] = []
        self._peak = _peak_gb()

    def wrap(self, function, stage: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return function(*args, **kwargs)
            finally:
                start, nested = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[stage] = self.seconds.get(stage, 0.0) + spent - nested
                peak = _peak_gb()
                if peak > self._peak:
                    self.peak_rise[stage] = self.peak_rise.get(stage, 0.0) + peak - self._peak
                    self._peak = peak
                if self._stack:
                    self._stack[-1][1] += spent
        return timed


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def install(clock: StageClock, stages) -> None:
    """Wrap each named function in every loaded module that imported it by name."""
    for module_name, name, stage in stages:
        module = importlib.import_module(module_name)
        if "." in name:  # a method: wrapped on its class, which every importer shares
            owner, method = name.split(".")
            cls = getattr(module, owner)
            original = cls.__dict__[method]
            function = original.__func__ if isinstance(original, classmethod) else original
            wrapped = clock.wrap(function, stage)
            setattr(cls, method, classmethod(wrapped) if isinstance(original, classmethod)
                    else wrapped)
            continue
        original = getattr(module, name)
        wrapped = clock.wrap(original, stage)
        for loaded in list(sys.modules.values()):
            if (getattr(loaded, "__name__", "").startswith(("sc_noise2self", "scanpy"))
                    and getattr(loaded, name, None) is original):
                setattr(loaded, name, wrapped)


def simulated(cells: int, path: Path) -> Path:
    """The realistic simulator's counts, written once to ``path``."""
    import sc_noise2self as n2s

    if not path.exists():
        shares = 0.75 ** np.arange(10)
        shares = np.maximum(shares / shares.sum(), 0.01)
        adata = n2s.simulation.simulate_counts(cells, 2000, shares / shares.sum(),
                                               depth=1000.0, depth_sd=0.5, random_state=1)
        adata.X = adata.X.astype(np.float32)
        adata.write_h5ad(path)
    return path


def pbmc(path: Path) -> Path:
    import scanpy as sc

    import sc_noise2self as n2s

    if not path.exists():
        adata = n2s.datasets.pbmc3k()
        sc.pp.filter_cells(adata, min_genes=200)
        sc.pp.filter_genes(adata, min_cells=3)
        adata.obs["group"] = "unknown"
        adata.write_h5ad(path)
    return path


def warm_up() -> None:
    """numba's and pynndescent's compilation, paid before any clock starts."""
    import anndata as ad
    import scanpy as sc

    import sc_noise2self as n2s
    from sc_noise2self.embedding import scanpy_neighbors

    # 1,500 cells: past the exact Gram PCA (1,000 cells), so ARPACK's first use is paid too
    small = n2s.simulation.simulate_counts(1500, 300, (0.5, 0.5), random_state=0)
    n2s.tl.calibrate_leiden(small)
    n2s.tl.validate_clusters_split(small)
    n2s.tl.rank_genes_groups_split(small, groupby="noise2self_leiden_validated")
    n2s.tl.rank_genes_groups_split(small)
    probe = ad.AnnData(obsm={"X_pca": np.random.default_rng(0).normal(size=(9000, 10))})
    scanpy_neighbors(probe, n_neighbors=15, use_rep="X_pca", random_state=0)
    sc.tl.leiden(probe, flavor="igraph", n_iterations=2, directed=False)


def ours(adata, clock: StageClock, path: str) -> str:
    """The workflow in one call (``"one-call"``) or as the README's three calls."""
    import sc_noise2self as n2s

    install(clock, OUR_STAGES)
    if path == "one-call":
        n2s.tl.rank_genes_groups_split(adata, random_state=0)
        return "rank_genes_groups_split_groups"
    n2s.tl.calibrate_leiden(adata, random_state=0)
    n2s.tl.validate_clusters_split(adata)
    n2s.tl.rank_genes_groups_split(adata, groupby="noise2self_leiden_validated")
    return "noise2self_leiden_validated"


def scanpys(adata, clock: StageClock, path: str) -> str:
    import scanpy as sc

    from sc_noise2self.embedding import scanpy_neighbors

    steps = (
        ("normalise, log1p", lambda: (sc.pp.normalize_total(adata, target_sum=1e4),
                                      sc.pp.log1p(adata))),
        ("highly variable genes", lambda: sc.pp.highly_variable_genes(adata,
                                                                      n_top_genes=2000)),
        ("PCA 50", lambda: sc.pp.pca(adata, n_comps=50, mask_var="highly_variable")),
        # scanpy's own neighbours; past 8,192 cells with pynndescent 0.7's output converted
        # (scanpy 1.11.5 fails there otherwise: issue 24)
        ("kNN", lambda: scanpy_neighbors(adata, n_neighbors=15, use_rep="X_pca",
                                         random_state=0)),
        ("Leiden 1.0", lambda: sc.tl.leiden(adata, resolution=1.0, flavor="igraph",
                                            n_iterations=2, directed=False)),
        ("markers (Wilcoxon)", lambda: sc.tl.rank_genes_groups(adata, "leiden",
                                                                method="wilcoxon")),
    )
    for stage, step in steps:
        clock.wrap(step, stage)()
    return "leiden"


# The dask side: a LocalCluster of DASK_WORKERS single-thread worker processes, each limited
# to --worker-memory; the counts are read lazily from the .h5ad in chunks of DASK_CHUNK cells.
DASK_WORKERS = 2
DASK_CHUNK = 50_000


def lazy_counts(path: str):
    """The .h5ad's counts as a lazy dask array of CSR chunks, with its obs and var.

    Also the bytes the sparse counts would take in memory (read from the file's metadata).
    """
    import anndata as ad
    import h5py
    from anndata.experimental import read_elem_lazy

    store = h5py.File(path, "r")
    X = read_elem_lazy(store["X"], chunks=(DASK_CHUNK, -1))
    nbytes = sum(store["X"][part].size * store["X"][part].dtype.itemsize
                 for part in ("data", "indices", "indptr"))
    return ad.AnnData(X=X, obs=ad.io.read_elem(store["obs"]),
                      var=ad.io.read_elem(store["var"])), nbytes


def labels_path(path: str, side: str) -> Path:
    """Where a side's labels of the data at ``path`` are kept, beside it."""
    return Path(path).with_name(f"{Path(path).stem}.{side}.labels.npy")


def _resolution(adata, side: str, key: str) -> float | None:
    """The Leiden resolution the side clustered at (ours: chosen by the loss)."""
    if side == "scanpy":
        return 1.0
    split = adata.uns.get("rank_genes_groups_split", {}).get("params", {}).get("count_split")
    return None if not split or "resolution" not in split else float(split["resolution"])


def child(side: str, path: str, threads: int, workflow: str, worker_memory: str) -> None:
    """One side's run in this (fresh) process; prints a JSON line."""
    import warnings

    import anndata as ad
    import scanpy as sc
    from scipy import sparse
    from sklearn.metrics import adjusted_rand_score

    warnings.filterwarnings("ignore")
    sc.settings.n_jobs = threads
    warm_up()
    cluster = client = None
    if side == "dask":
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=DASK_WORKERS, threads_per_worker=1,
                               memory_limit=worker_memory, dashboard_address=None)
        client = Client(cluster)
        adata, input_bytes = lazy_counts(path)
    else:
        adata = ad.read_h5ad(path)
        input_bytes = sum(part.nbytes for part in (adata.X.data, adata.X.indices,
                                                   adata.X.indptr))
        assert sparse.issparse(adata.X)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock = StageClock()
    start = time.perf_counter()
    key = (scanpys if side == "scanpy" else ours)(adata, clock, workflow)
    seconds = time.perf_counter() - start
    labels = adata.obs[key].to_numpy()
    truth = adata.obs["group"].to_numpy()
    # Kept for the agreement of the sides' labels (main compares ours and dask's).
    np.save(labels_path(path, side), np.unique(labels.astype(str), return_inverse=True)[1])
    workers = {}
    if client is not None:
        workers = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                             * 1024 / 1e9)
        client.close()
        cluster.close()
    print(json.dumps({
        "side": side, "seconds": seconds, "stages": clock.seconds,
        "peak_rise": clock.peak_rise,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "rss_before_gb": rss_before / 1e9,
        "input_gb": input_bytes / 1e9,
        "worker_peak_gb": sorted(workers.values()), "worker_memory": worker_memory,
        "clusters": len(set(labels)),
        "resolution": _resolution(adata, side, key),
        "ari": float(adjusted_rand_score(truth, labels)) if len(set(truth)) > 1 else None,
        "load": os.getloadavg()[0]}))


def table(rows: dict, path: str | None = None) -> None:
    for side, row in rows.items():
        print(f"\n{side}: {row['seconds']:.1f} s, {row['clusters']} clusters at resolution "
              f"{row.get('resolution')}, ARI "
              f"{row['ari'] if row['ari'] is None else round(row['ari'], 3)}, peak "
              f"{row['peak_gb']:.2f} GB ({row['peak_gb'] / row['input_gb']:.1f}x the "
              f"{row['input_gb']:.2f} GB sparse input; {row['rss_before_gb']:.2f} GB before "
              f"the run), load {row['load']:.2f}")
        if row.get("worker_peak_gb"):
            print(f"dask workers' peak RSS (GB): {row['worker_peak_gb']}, limit "
                  f"{row['worker_memory']} each")
        print("| stage | seconds | share | peak RSS raised by (GB) |")
        print("|---|---|---|---|")
        for stage, seconds in sorted(row["stages"].items(), key=lambda item: -item[1]):
            rise = row.get("peak_rise", {}).get(stage, 0.0)
            print(f"| {stage} | {seconds:.1f} | {seconds / row['seconds']:.0%} | "
                  f"{rise:.2f} |")
    if {"ours", "dask"} <= set(rows) and path is not None:
        from sklearn.metrics import adjusted_rand_score

        agreement = adjusted_rand_score(np.load(labels_path(path, "ours")),
                                        np.load(labels_path(path, "dask")))
        print(f"\nours (in memory) against dask: resolutions {rows['ours'].get('resolution')} "
              f"and {rows['dask'].get('resolution')}, ARI between their labels "
              f"{agreement:.4f}")
    for side in ("ours", "dask"):
        if {side, "scanpy"} <= set(rows):
            print(f"\nratio {side} / scanpy: "
                  f"{rows[side]['seconds'] / rows['scanpy']['seconds']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=("sim", "pbmc3k"), default="sim")
    parser.add_argument("--cells", type=int, default=30000)
    parser.add_argument("--sides", default="scanpy,ours")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--path", choices=("one-call", "readme"), default="one-call",
                        help="ours as one rank_genes_groups_split call (split, graph, "
                             "resolution, refinement, validation, markers on half B) or as "
                             "the README's calibrate_leiden, validate_clusters_split, "
                             "rank_genes_groups_split(groupby=...)")
    parser.add_argument("--cache", default="/tmp/sc_noise2self_atlas")
    parser.add_argument("--worker-memory", default="6GB",
                        help="memory limit of each of the dask side's two worker processes")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make-data", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.threads, args.path, args.worker_memory)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / (f"sim_{args.cells}.h5ad" if args.data == "sim" else "pbmc3k.h5ad")
    if args.make_data:
        simulated(args.cells, path) if args.data == "sim" else pbmc(path)
        return
    # Made in a process of its own: this one waits beside the sides' processes, and kept the
    # simulation's 3.4 GB at a million cells, which the machine's memory needed.
    subprocess.run([sys.executable, __file__, "--data", args.data, "--cells", str(args.cells),
                    "--cache", args.cache, "--make-data"], check=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.data} "
          f"({path.name}), ours as {args.path}, threads {args.threads}, load "
          f"{os.getloadavg()}")
    env = {**os.environ, **{name: str(args.threads) for name in (
        "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    rows = {}
    for side in args.sides.split(","):
        done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                               "--path", args.path, "--worker-memory", args.worker_memory,
                               "--child", side, str(path)], env=env,
                              capture_output=True,
                              text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(done.stdout[-3000:], done.stderr[-3000:])
            raise SystemExit(f"{side} failed")
        rows[side] = json.loads(lines[-1])
        print(f"{side} done: {rows[side]['seconds']:.1f} s", flush=True)
    table(rows, str(path))


if __name__ == "__main__":
    main()
