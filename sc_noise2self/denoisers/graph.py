"""Graph smoothing, shared by the kNN and diffusion families: graphs, operators, losses, storage.

The graph is built from half A alone (PCA of half A, then scikit-learn's neighbours), so that
half B, the target, leaks into nothing. Both families are linear smoothers applied per gene,
so the loss is accumulated over blocks of genes, never holding a dense cells x genes matrix:

- kNN averaging over k neighbours (the cell itself first, :mod:`.knn`): the running sum over
  neighbours gives every k of the grid in one pass;
- diffusion ``X_t = M^t A`` with the lazy walk ``M = (P + I) / 2`` (:mod:`.diffusion`): one
  sparse product a step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .._anndata import get_counts, write_dense_layer
from .._validation import check_whole
from ..embedding import NeighbourGraph, build_graph
from ..losses import Halves, block_loss
from ..transforms import library_sizes, normalised_values

GENE_BLOCK_BYTES = 64e6

__all__ = ["Smoother", "build_graph", "diffusion_loss_curve", "diffusion_operator",
           "knn_loss_curve", "knn_operator", "smoothed_values", "store_smoother"]


def diffusion_operator(graph: NeighbourGraph, *, bandwidth_rank: int | None = None):
    """Lazy random walk ``(P + I) / 2`` on a symmetrised Gaussian-kernel kNN graph.

    Parameters
    ----------
    graph
        Neighbours from :func:`build_graph`.
    bandwidth_rank
        Each cell's kernel width is the distance to this neighbour (default: a third of the
        neighbours), an adaptive bandwidth as in MAGIC.

    Returns
    -------
    Row-stochastic CSR matrix, cells x cells.
    """
    n_cells, k = graph.indices.shape
    rank = max(1, k // 3) if bandwidth_rank is None else min(bandwidth_rank, k - 1)
    sigma = np.maximum(graph.distances[:, rank], 1e-12)
    weights = np.exp(-((graph.distances / sigma[:, None]) ** 2))
    rows = np.repeat(np.arange(n_cells), k)
    affinity = sparse.csr_matrix((weights.ravel(), (rows, graph.indices.ravel())), (n_cells,) * 2)
    affinity = (affinity + affinity.T) * 0.5
    walk = sparse.diags(1.0 / np.asarray(affinity.sum(axis=1)).ravel()) @ affinity
    return ((walk + sparse.identity(n_cells, format="csr")) * 0.5).tocsr()


def knn_operator(graph: NeighbourGraph, k: int):
    """Row-stochastic CSR matrix that averages each cell's ``k`` nearest neighbours."""
    n_cells = graph.indices.shape[0]
    rows = np.repeat(np.arange(n_cells), k)
    data = np.full(n_cells * k, 1.0 / k)
    return sparse.csr_matrix((data, (rows, graph.indices[:, :k].ravel())), (n_cells,) * 2)


def gene_blocks(n_cells: int, n_genes: int) -> list[slice]:
    """Slices of genes whose dense cells x genes float64 blocks stay within a fixed budget."""
    step = max(1, int(GENE_BLOCK_BYTES // (8 * max(n_cells, 1))))
    return [slice(j, min(j + step, n_genes)) for j in range(0, n_genes, step)]


def knn_loss_curve(graph: NeighbourGraph, halves: Halves, ks, loss: str = "mse") -> np.ndarray:
    """Mean self-supervised loss of kNN averaging of half A, for each k in ``ks``.

    Parameters
    ----------
    graph
        Neighbours built from half A.
    halves
        The prepared split.
    ks
        Neighbour counts to score (1 = no smoothing); at most ``graph.n_neighbors``.
    loss
        ``"mse"`` or ``"poisson"``.

    Returns
    -------
    Array with one loss per entry of ``ks``.
    """
    ks = np.asarray(ks, dtype=int)
    wanted = {int(k): i for i, k in enumerate(ks)}
    totals = np.zeros(ks.size)
    table = halves.conversion_table()

    def score_block(a_block, observed):
        running = np.zeros_like(a_block)
        for r in range(int(ks.max())):
            running += a_block[graph.indices[:, r]]
            if r + 1 in wanted:
                prediction = running / (r + 1)
                totals[wanted[r + 1]] += block_loss(
                    prediction, observed, halves, slice(None), table, loss
                )

    over_gene_blocks(halves, loss, score_block)
    return totals / np.prod(halves.b.shape)


def diffusion_loss_curve(operator, halves: Halves, t_max: int, loss: str = "mse") -> np.ndarray:
    """Mean self-supervised loss of ``operator^t @ A`` for t = 0..t_max.

    Parameters
    ----------
    operator
        The lazy walk from :func:`diffusion_operator`, built from half A.
    halves
        The prepared split.
    t_max
        Largest number of diffusion steps.
    loss
        ``"mse"`` or ``"poisson"``.

    Returns
    -------
    Array of ``t_max + 1`` losses.
    """
    totals = np.zeros(t_max + 1)
    table = halves.conversion_table()

    def score_block(a_block, observed):
        smoothed = a_block
        for t in range(t_max + 1):
            if t:
                smoothed = operator @ smoothed
            totals[t] += block_loss(smoothed, observed, halves, slice(None), table, loss)

    over_gene_blocks(halves, loss, score_block)
    return totals / np.prod(halves.b.shape)


def over_gene_blocks(halves: Halves, loss: str, score_block) -> None:
    """Call ``score_block(a_block, target_block)`` on dense blocks of genes of both halves."""
    a = halves.a.tocsc() if sparse.issparse(halves.a) else np.asarray(halves.a)
    target = halves.target(loss)
    target = target.tocsc() if sparse.issparse(target) else np.asarray(target)
    for genes in gene_blocks(*a.shape):
        score_block(dense_block(a[:, genes]), dense_block(target[:, genes]))


def dense_block(block) -> np.ndarray:
    """A sparse or dense block as a dense float64 array."""
    block = block.toarray() if sparse.issparse(block) else block
    return np.asarray(block, dtype=np.float64)


def check_n_pcs(options: dict, X) -> None:
    """Refuse an ``n_pcs`` option that is not a positive integer."""
    check_whole(options["n_pcs"], name="n_pcs", minimum=1,
                hint="principal components for the neighbour search")


@dataclass
class Smoother:
    """A fitted graph smoother: the operator, how often to apply it, the depth it used."""

    operator: sparse.csr_matrix
    steps: int
    depth: float
    n_neighbors: int


def neighbour_graph(counts, n_neighbors: int, options: dict, transform: str, random_state):
    """The kNN graph of the full normalised counts, and the depth they were normalised to."""
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    graph = build_graph(values, n_neighbors, n_pcs=options["n_pcs"], random_state=random_state)
    return graph, depth


def store_smoother(adata, fitted: Smoother, key: str, max_layer_gb: float) -> dict:
    """Write the operator to ``obsp[key + '_operator']`` and the layer when it fits.

    ``uns[key]`` already holds the record's params (layer, depth, transform); the steps are
    added first, because :func:`smoothed_values` reads them back to make the layer.
    """
    adata.obsp[f"{key}_operator"] = fitted.operator
    adata.uns[key].update(steps=fitted.steps, n_neighbors=fitted.n_neighbors,
                          data=data_digest(adata))
    write_dense_layer(adata, key, max_layer_gb,
                      values=lambda: smoothed_values(adata, key, np.arange(adata.n_vars)))
    return {}


def smoothed_values(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """Apply the stored graph operator (``steps`` times) to the chosen genes' values."""
    record = adata.uns[key]
    if "data" in record and record["data"] != data_digest(adata):
        raise ValueError(
            f"The smoother under {key!r} was fitted on other cells or genes: this AnnData is "
            "a subset (or reordering) of that one. Each cell's value averages its neighbours "
            "and is normalised by its total over all genes, so a subset cannot reproduce "
            "them. Call denoised_values on the AnnData the smoother ran on, then take the "
            "subset of the result."
        )
    params = record["params"]
    layer = None if params["layer"] in ("X", "None") else params["layer"]
    values = normalised_values(get_counts(adata, layer), params["depth"], params["transform"],
                               columns)
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    operator = adata.obsp[f"{key}_operator"]
    for _ in range(int(record.get("steps", 1))):
        values = operator @ values
    return np.asarray(values, dtype=np.float32)


def data_digest(adata) -> str:
    """A digest of the cells' and genes' names, in order: which data a fit belongs to."""
    digest = hashlib.sha1()
    for names in (adata.obs_names, adata.var_names):
        digest.update(str(len(names)).encode())
        digest.update("\n".join(map(str, names)).encode())
    return digest.hexdigest()


SMOOTHER_WRITES = ("``obsp[key_added + '_operator']`` (one step of the smoother), "
                    "``uns[key_added]`` (with ``steps``) and, when it fits ``max_layer_gb``, "
                    "``layers[key_added]`` on the transformed scale.")
N_PCS_DOC = "Principal components of half A (of the full data when denoising) used for the "\
    "neighbour search."
