"""The Leiden family: the clustering resolution chosen by the self-supervised loss.

A clustering is a denoiser: it replaces each cell by its cluster's mean profile. The PCA,
the neighbour graph and the Leiden clusters at every resolution are computed from half A
alone; each cell's prediction is its A-cluster's mean of half A (normalised, transformed,
moved to half B's depth by the engine's loss), scored against half B. The resolution whose
cluster means best predict fresh molecules wins. Too few clusters average distinct cell
states together; too many average too few cells, and their means keep half A's noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import write_dense_layer
from .._validation import check_real, check_whole
from ..calibration import Family, Knob, SplitSettings, counts_calibrator
from ..embedding import fit_pca, max_rank, scanpy_neighbors
from ..losses import Halves, block_loss, dense_rows, row_chunks
from ..transforms import library_sizes, normalised_values
from .pca import calibrate_pca_counts

DEFAULT_RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


def _grid(resolutions, shape: tuple[int, int], options: dict) -> np.ndarray:
    if resolutions is None:
        values = list(DEFAULT_RESOLUTIONS)
    else:  # the user's own values in messages, not numpy's repr of them
        values = [resolutions] if np.isscalar(resolutions) else list(resolutions)
    for value in values:
        check_real(value, name="resolutions (each value)", minimum=1e-9,
                   hint="Leiden's resolution, above 0")
    if not values:
        raise ValueError("resolutions is empty; give at least one Leiden resolution.")
    return np.unique(np.asarray(values, dtype=np.float64))


def _check(options: dict, X) -> None:
    if options["n_comps"] is not None:
        check_whole(options["n_comps"], name="n_comps", minimum=1,
                    hint="PCA components of the graph, or None for the calibrated rank")
    check_whole(options["n_neighbors"], name="n_neighbors", minimum=2, maximum=X.shape[0] - 1,
                hint="neighbours per cell in the graph")


def calibrated_rank(options: dict, X, settings) -> dict:
    """``n_comps=None`` becomes the PCA rank calibrated once on the counts (at least 2).

    Only that one integer is learnt from every molecule; the graphs and clusters that are
    scored come from half A alone.
    """
    if options["n_comps"] is not None:
        return options
    rank = calibrate_pca_counts(X, max_comps=min(50, max_rank(X.shape)), settings=settings).best
    return {**options, "n_comps": max(2, int(rank))}


def seed_of(seed) -> int:
    """A 31-bit integer seed (what igraph and scanpy take) from any package seed."""
    return int(np.random.default_rng(seed).integers(2**31 - 1))


def neighbour_graph(values, n_comps: int, n_neighbors: int, seed: int) -> ad.AnnData:
    """An empty AnnData holding the kNN graph of the PCA of ``values`` (scanpy's neighbors)."""
    n_comps = max(1, min(n_comps, max_rank(values.shape)))
    scores = fit_pca(values, n_comps, random_state=seed).scores
    graph = ad.AnnData(obs=pd.DataFrame(index=np.arange(values.shape[0]).astype(str)),
                       obsm={"X_pca": scores})
    scanpy_neighbors(graph, n_neighbors=n_neighbors, use_rep="X_pca", random_state=seed)
    return graph


def leiden_labels(graph: ad.AnnData, resolution: float, seed: int) -> np.ndarray:
    """Leiden clusters of ``graph`` at ``resolution``, as integer codes 0..K-1."""
    import scanpy as sc

    sc.tl.leiden(graph, resolution=float(resolution), random_state=seed, flavor="igraph",
                 n_iterations=2, directed=False, key_added="_clusters")
    return graph.obs["_clusters"].cat.codes.to_numpy().astype(np.int64)


def cluster_means(values, labels: np.ndarray) -> np.ndarray:
    """Each cluster's mean of ``values`` (dense K x genes, float64), sparse input kept sparse."""
    n_clusters = int(labels.max()) + 1
    members = sparse.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))),
                                shape=(n_clusters, labels.size))
    sizes = np.asarray(members.sum(axis=1)).ravel()
    sums = members @ values
    sums = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    return sums / sizes[:, None]


def clustering_loss(labels: np.ndarray, halves: Halves, loss: str) -> float:
    """Mean loss of predicting each cell by its half-A cluster's mean, against half B."""
    means = cluster_means(halves.a, labels)
    target = halves.target(loss)
    table = halves.conversion_table()
    total = 0.0
    for rows in row_chunks(*target.shape):
        total += block_loss(means[labels[rows]], dense_rows(target, rows), halves, rows, table,
                            loss)
    return total / np.prod(target.shape)


def score_resolutions(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                      progress: bool | None = None):
    """Loss and number of clusters at every resolution, from one graph of half A."""
    seed = seed_of(seed)
    graph = neighbour_graph(halves.a, options["n_comps"], options["n_neighbors"], seed)
    losses, n_clusters = [], []
    for resolution in grid:
        labels = leiden_labels(graph, resolution, seed)
        losses.append(clustering_loss(labels, halves, loss))
        n_clusters.append(int(labels.max()) + 1)
    return np.array(losses), {"n_clusters": np.array(n_clusters)}


@dataclass
class Clustering:
    """Leiden clusters of the full counts at one resolution."""

    labels: np.ndarray
    values: object  # the normalised, transformed counts they were found on
    depth: float
    resolution: float
    n_comps: int


def fit_clusters(counts, resolution: float, options: dict, *, transform: str, random_state,
                 max_layer_gb: float) -> Clustering:
    """Leiden on the full normalised counts at ``resolution``."""
    check_real(resolution, name="resolution", minimum=1e-9, hint="Leiden's resolution")
    # A given resolution skips the calibration, but n_comps=None still means the PCA rank
    # calibrated on these counts, as documented.
    n_comps = calibrated_rank(options, counts, SplitSettings(random_state=random_state))[
        "n_comps"]
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    seed = seed_of(random_state)
    graph = neighbour_graph(values, n_comps, options["n_neighbors"], seed)
    return Clustering(leiden_labels(graph, resolution, seed), values, depth, float(resolution),
                      int(n_comps))


def store_clusters(adata, fitted: Clustering, key: str, max_layer_gb: float) -> dict:
    """Labels to ``obs[key]`` (categorical, as ``sc.tl.leiden``); cluster means to the layer."""
    adata.obs[key] = pd.Categorical(fitted.labels.astype(str),
                                    categories=[str(k) for k in range(fitted.labels.max() + 1)])
    if max_layer_gb is not None:  # None: calibrate_leiden writes the labels only
        write_dense_layer(adata, key, max_layer_gb, values=lambda: cluster_values(
            adata, key, np.arange(adata.n_vars), fitted.values))
    adata.uns[key]["params"]["n_comps"] = fitted.n_comps
    return {"n_clusters": int(fitted.labels.max()) + 1, "resolution": fitted.resolution}


def cluster_values(adata, key: str, columns: np.ndarray, values=None) -> np.ndarray:
    """Each cell's cluster mean of the normalised values, for the chosen genes (float32)."""
    labels = adata.obs[key].cat.codes.to_numpy().astype(np.int64)
    if values is None:
        params = adata.uns[key]["params"]
        layer = None if params["layer"] in ("X", "None") else params["layer"]
        counts = adata.X if layer is None else adata.layers[layer]
        values = normalised_values(counts, params["depth"], params["transform"])
    values = values[:, columns] if sparse.issparse(values) else np.asarray(values)[:, columns]
    return cluster_means(values, labels)[labels].astype(np.float32)


LEIDEN = Family(
    name="leiden",
    grid=Knob("resolution", grid_arg="resolutions", default=None, make_grid=_grid),
    score=score_resolutions, check_options=_check, prepare_options=calibrated_rank,
    fit=fit_clusters, store=store_clusters, values=cluster_values, fit_after_calibrate=True,
    options={"n_comps": None, "n_neighbors": 15},
    fit_options=("n_comps", "n_neighbors"),
    option_docs={
        "resolutions": "Leiden resolutions to score; None uses 0.05, 0.1, 0.2, 0.3, 0.5, "
                       "0.7, 1, 1.5, 2, 3, 5 and 8.",
        "resolution": "Leiden's resolution. None calibrates it first (or reuses a matching "
                      "calibration stored under ``key_added``).",
        "n_comps": "PCA components of the neighbour graph; None uses the PCA rank calibrated "
                   "on the counts (only that integer sees every molecule; graphs and clusters "
                   "that are scored come from half A).",
        "n_neighbors": "Neighbours per cell in the graph (``sc.pp.neighbors``).",
    },
    summary="Choose the Leiden clustering resolution by molecular cross-validation.\n\n"
            "A clustering replaces each cell by its cluster's mean. PCA, neighbours and Leiden "
            "at every resolution come from half A alone; each cell's A-cluster mean is scored "
            "against half B. The labels at the best resolution are written to "
            "``obs[key_added]``, and the number of clusters at every resolution to "
            "``uns[key_added]['params']['n_clusters']``.",
    denoise_summary="Cluster by Leiden at a calibrated (or given) resolution and denoise each "
                    "cell by its cluster's mean.",
    writes="the labels to ``obs[key_added]`` (categorical, like ``sc.tl.leiden``), "
           "``uns[key_added]`` and, when it fits ``max_layer_gb``, the cluster means on the "
           "transformed scale to ``layers[key_added]``.",
)

calibrate_leiden_counts = counts_calibrator(LEIDEN)
