# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Out of core: 200,000 cells with dask, clusters and markers, and on a cluster
#
# Atlases do not fit in memory. `tl.calibrate_pca`, `tl.denoise_pca`, `pp.split_molecules`
# and `split_counts` also take a **dask array** of counts, such as the lazy `X` that anndata
# reads from a zarr or h5ad store. The matrix is never loaded whole: each task holds one chunk
# of cells, and only genes x genes matrices (and the rows of the cells scored) come to memory.
#
# This tutorial writes a 200,000-cell count matrix to a zarr store, opens it lazily, splits it
# without computing anything, calibrates the PCA rank out of core, checks the answer against
# the in-memory calibration, and runs the same code on a dask cluster.
#
# **Time:** about a minute on 2 idle CPU cores. *For speed* the cells have 500 genes (say, the
# highly variable ones) and a median of 150 UMIs among them; use 2,000 genes for real work
# (the genes x genes matrices grow with the square: 32 MB each at 2,000 genes). No real data
# are needed here.

# %%
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import sc_noise2self as n2s

sc.settings.verbosity = 1
sc.set_figure_params(dpi=70, frameon=False)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: text bars
print("sc_noise2self", n2s.__version__, "| data folder:", n2s.datasets.data_dir())
import tempfile
from pathlib import Path

import anndata as ad
import dask
import zarr
from anndata.experimental import read_elem_lazy
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits

# dask's default (threaded) scheduler runs one task per core: one BLAS thread per task
# keeps them from competing for the cores.
threadpool_limits(1)
print("dask", dask.__version__, "| anndata", ad.__version__)

# %% [markdown]
# ## A 200,000-cell store, written chunk by chunk
#
# `datasets.write_synthetic_counts` draws Poisson counts from 8 gene programs (the model of
# `datasets.synthetic_counts`) and appends them to a zarr store in AnnData's format, 10,000
# cells at a time, so it never holds the whole matrix either. Your own data would be an
# `.zarr` or `.h5ad` file written by anndata.

# %%
folder = Path(tempfile.mkdtemp(prefix="n2s_tutorial_"))
# For speed: 500 genes, median 150 UMIs per cell among them; use your own 2,000 HVGs for
# real work.
store = n2s.datasets.write_synthetic_counts(folder / "cells.zarr", n_obs=200_000, n_vars=500,
                                            depth=150, random_state=0)
size_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
print(f"{store.name}: {size_mb:.0f} MB on disk")

# %% [markdown]
# ## Open it lazily
#
# `read_elem_lazy` gives a dask array of CSR chunks; `chunks=(20_000, -1)` asks for 20,000
# whole cells (every gene) per chunk. Nothing is read yet but the shape. An AnnData holds it
# like any other `X`.

# %%
X = read_elem_lazy(zarr.open_group(store, mode="r")["X"], chunks=(20_000, -1))
adata = ad.AnnData(X=X)
print(adata)
X

# %% [markdown]
# ## Splitting is lazy
#
# `pp.split_molecules` builds the split as a dask graph: a dask callback counts the tasks that
# run, and none do. Asking for the first five cells of half A reads and splits one chunk only.
# Each cell draws from its own random stream, indexed by its row, so the halves equal the
# in-memory split bit for bit, whatever the chunking or the scheduler.

# %%
tasks = []
with Callback(pretask=lambda key, graph, state: tasks.append(key)):
    # Binomially, as split_counts below: these counts are Poisson by construction (see below)
    n2s.pp.split_molecules(adata, p=0.5, split="binomial", random_state=0)
print(f"tasks run while splitting 200,000 cells: {len(tasks)}")
half_a = adata.layers["noise2self_a"]
print(half_a)

with Callback(pretask=lambda key, graph, state: tasks.append(key)):
    first_cells = half_a[:5].compute()
print(f"tasks run to get 5 cells of half A: {len(tasks)}, on "
      f"{half_a[:5].numblocks[0]} of the {half_a.numblocks[0]} chunks")
in_memory, _ = n2s.split_counts(X[:5].compute(), 0.5, random_state=0)
print("same as the in-memory split:", (first_cells != in_memory).nnz == 0)

# %% [markdown]
# ## Calibrate the rank out of core
#
# `tl.calibrate_pca` on the lazy AnnData reads the chunks twice: once for every cell's total
# (checking the counts on the way), then once to split each chunk and sum half A's
# genes x genes covariance and half B's products with it. The loss at every rank follows from
# those sums; the curve goes to `adata.uns["noise2self"]` as in memory.
#
# These simulated counts are Poisson by construction, so this tutorial splits them
# binomially (`split="binomial"`), which is exact for them. On such continuous mixtures at
# 150 UMIs per cell the default (the NB split at sizes estimated from the counts) takes the
# cells' continuous variation for overdispersion, splits too conservatively and misses the
# weakest structure: on 20,000 of these cells it kept rank 0 where the truth-best rank was 2
# and the binomial split chose 2 (benchmarks/RESULTS.md, issue 24). On real counts keep the
# default.

# %%
SPLIT = dict(split="binomial")  # Poisson counts by construction (see above)
# For speed: ranks 0-30 (the data have 8 programs); keep the default max_comps=100 for
# real data.
n2s.tl.calibrate_pca(adata, max_comps=30, random_state=0, **SPLIT)
best = int(adata.uns["noise2self"]["best"])
print(f"chosen rank: {best}")
n2s.pl.calibration_curve(adata);

# %% [markdown]
# The minimum may sit below the 8 programs of the simulation: at 150 UMIs per cell the
# weakest programs are hard to tell from the noise, and components that fitted them would fit
# noise too.
#
# ## The same answer as in memory
#
# On the first 20,000 cells, which fit in memory, calibrate twice with the same seed: once
# from the lazy slice, once from the loaded CSR matrix with the exact ARPACK solver. The split
# is the same bit for bit; the curves differ only by rounding, because the dask path takes the
# components from the summed covariance (an eigendecomposition) where ARPACK runs a truncated
# SVD. (In memory, the default solver on large data is randomized: the same rank, and a curve
# equal up to the optimum to about 1e-4.)

# %%
subset = X[:20_000]
lazy = ad.AnnData(X=subset)
loaded = ad.AnnData(X=subset.compute())  # 20,000 cells as CSR in memory
n2s.tl.calibrate_pca(lazy, max_comps=30, random_state=0, **SPLIT)
n2s.tl.calibrate_pca(loaded, max_comps=30, random_state=0, solver="arpack", **SPLIT)
lazy_loss, loaded_loss = lazy.uns["noise2self"]["loss"], loaded.uns["noise2self"]["loss"]
print(f"best rank: lazy {lazy.uns['noise2self']['best']}, "
      f"in memory {loaded.uns['noise2self']['best']}")
print(f"largest relative difference of the curves: "
      f"{np.max(np.abs(lazy_loss - loaded_loss) / loaded_loss):.1e}")

# %% [markdown]
# ## On a cluster
#
# The work runs on whatever dask scheduler is active. With a `dask.distributed` client
# connected, the same call runs on its workers. Here a local cluster of two workers (threads
# in this process, `processes=False`, so that this small run pays no serialisation); the
# loss curve is the one computed above.

# %%
from dask.distributed import Client, LocalCluster

with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                   dashboard_address=None) as cluster,
      Client(cluster) as client):
    print(client)
    on_cluster = ad.AnnData(X=X)
    n2s.tl.calibrate_pca(on_cluster, max_comps=30, random_state=0, **SPLIT)
print("same curve as the threaded run:",
      np.allclose(on_cluster.uns["noise2self"]["loss"], adata.uns["noise2self"]["loss"],
                  rtol=1e-10))

# %% [markdown]
# On a real cluster, connect to its scheduler instead and run the same code. The workers need
# `sc_noise2self` installed and read access to the store (a shared file system, or an object
# store URL that zarr opens):
#
# ```python
# from dask.distributed import Client
#
# client = Client("tcp://scheduler-host:8786")   # your scheduler's address
# X = read_elem_lazy(zarr.open_group("/shared/atlas.zarr", mode="r")["X"], chunks=(20_000, -1))
# adata = ad.AnnData(X=X)
# n2s.tl.calibrate_pca(adata)                    # runs on the cluster's workers
# ```
#
# ## Denoise at the chosen rank
#
# `tl.denoise_pca` reads the chunks again to fit the components and compute the scores (here
# 200,000 x the rank, small) into `obsm["X_noise2self"]`, ready for scanpy. The dense
# denoised matrix stays a lazy dask array in `layers["noise2self"]`: compute only the slices
# you need.

# %%
n2s.tl.denoise_pca(adata, n_comps=best, **SPLIT)
scores = adata.obsm["X_noise2self"]
print(f"cell scores: {type(scores).__name__} {scores.shape}")
print(adata.layers["noise2self"])
denoised_first = adata.layers["noise2self"][:3, :5].compute()
print(np.round(denoised_first, 2))

fig, ax = plt.subplots(figsize=(4.5, 3.8))
ax.hexbin(scores[:, 0], scores[:, 1], gridsize=60, bins="log", cmap="viridis")
ax.set(xlabel="component 1", ylabel="component 2", title="200,000 cells, denoised scores");

# %% [markdown]
# ## Clusters and markers out of core
#
# `tl.rank_genes_groups_split` runs the whole clustering workflow on a dask array too: the
# split, the PCA rank, half A's graph, the resolution chosen by the loss, the refinement,
# the validation on half B, and the marker test on half B. What stays in memory is a value
# per cell, half A's PCA scores and the kNN graph that Leiden clusters; the split's two
# halves stay in their chunks (on a cluster, in the workers' memory), and every loss is a
# pass over them.
#
# Here realistic counts with known groups: 10 groups of 40% down to 1% of the cells,
# negative-binomial genes, library sizes varying several-fold (lognormal, sd 0.5). *For
# speed* 40,000 cells x 1,000 genes on a local cluster of two worker threads; set the
# environment variable `SC_NOISE2SELF_TUTORIAL_CELLS=1000000` to run this section on a
# million cells.
# `benchmarks/bench_atlas_workflow.py --sides dask,scanpy` runs the same at 200,000 and a
# million cells on two worker processes, with scanpy's pipeline beside it.

# %%
import os
import time

import pandas as pd
from sklearn.metrics import adjusted_rand_score

N_CELLS = int(os.environ.get("SC_NOISE2SELF_TUTORIAL_CELLS", 40_000))
shares = 0.75 ** np.arange(10)
shares = np.maximum(shares / shares.sum(), 0.01)
grouped = n2s.simulation.simulate_counts(N_CELLS, 1000, shares / shares.sum(), depth=1000.0,
                                         depth_sd=0.5, random_state=1)
grouped.write_zarr(folder / "groups.zarr")
counts = read_elem_lazy(zarr.open_group(folder / "groups.zarr", mode="r")["X"],
                        chunks=(10_000, -1))
atlas = ad.AnnData(X=counts, obs=grouped.obs[["group"]].copy(), var=grouped.var[[]].copy())
print(atlas)

# Worker threads in this process share its memory with everything else here, so a limit
# per worker counts the whole process: at a million cells under the default limit dask
# spilled the split's chunks to disk and read them back (1,879 s against 945 s without it).
# No limit for in-process workers; on a real cluster give each worker process its own.
with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False, memory_limit=0,
                   dashboard_address=None) as cluster,
      Client(cluster)):
    started = time.perf_counter()
    n2s.tl.rank_genes_groups_split(atlas, random_state=0)
    seconds = time.perf_counter() - started
found = atlas.obs["rank_genes_groups_split_groups"]
print(f"{seconds:.0f} s: {found.nunique()} clusters, ARI against the 10 groups "
      f"{adjusted_rand_score(atlas.obs['group'], found):.3f}")
print(atlas.uns["rank_genes_groups_split"]["params"]["count_split"])

# %% [markdown]
# The record says where the time went: the resolution (split, PCA rank, graph and the sweep's
# losses), the clusters (Leiden, refinement, reassignment), the validation on half B, and
# the marker test.

# %%
stages = pd.Series(atlas.uns["rank_genes_groups_split"]["params"]["seconds"], name="seconds")
print(stages.round(1).to_frame().assign(share=(stages / seconds).round(2)))

# %% [markdown]
# The markers were tested on half B, which the clusters never saw, in scanpy's format:

# %%
sc.get.rank_genes_groups_df(atlas, group="0", key="rank_genes_groups_split").head()

# %%
import shutil

shutil.rmtree(folder)  # the temporary stores

# %% [markdown]
# ## What you learned
#
# - `read_elem_lazy(..., chunks=(n, -1))` opens anndata's counts as a dask array of CSR
#   chunks; an AnnData holds it as `X`, and `tl.calibrate_pca` / `tl.denoise_pca` /
#   `pp.split_molecules` take it as they take a matrix in memory.
# - The split is lazy and, cell by cell, the in-memory split; calibration reads the chunks
#   twice and holds genes x genes matrices, never cells x genes.
# - The loss curve on dask equals the in-memory curve up to rounding, with the same chosen
#   rank.
# - The same code runs on a `dask.distributed` cluster: connect a `Client` first.
# - Memory and time grow with the genes squared: select genes (highly variable ones) first.
# - `tl.rank_genes_groups_split` clusters dask counts and tests their markers with the graph
#   alone in memory: the split's halves stay in their chunks.
