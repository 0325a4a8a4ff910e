"""Graph smoothing denoisers: kNN averaging and lazy diffusion, each scored over its whole grid.

The graph is built from half A alone (PCA of half A, then scikit-learn's neighbours), so that
half B, the target, leaks into nothing. Both families are linear smoothers applied per gene,
so the loss is accumulated over blocks of genes, never holding a dense cells x genes matrix:

- kNN averaging with k neighbours (the cell itself first): the running sum over neighbours
  gives every k of the grid in one pass;
- diffusion ``X_t = M^t A`` with the lazy walk ``M = (P + I) / 2``: one sparse product a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from ..calibration import CalibrationResult, Halves, SplitSettings, block_loss, run_splits

GENE_BLOCK_BYTES = 64e6


@dataclass
class NeighbourGraph:
    """Neighbours of each cell, nearest first and the cell itself at position 0."""

    indices: np.ndarray  # cells x n_neighbors
    distances: np.ndarray  # cells x n_neighbors

    @property
    def n_neighbors(self) -> int:
        """Neighbours stored per cell, the cell itself included."""
        return self.indices.shape[1]


def build_graph(values, n_neighbors: int, *, n_pcs: int = 30, random_state=0) -> NeighbourGraph:
    """kNN graph of cells from their transformed values (PCA, then exact Euclidean neighbours).

    Parameters
    ----------
    values
        Cells x genes transformed values (numpy or CSR); for calibration, half A only.
    n_neighbors
        Neighbours per cell, the cell itself included.
    n_pcs
        Principal components that the distances use (clipped to what the data allow).
    random_state
        Seed of the PCA solver.

    Returns
    -------
    The :class:`NeighbourGraph`.
    """
    from .pca import fit_pca, max_rank

    n_cells = values.shape[0]
    if n_neighbors > n_cells:
        raise ValueError(
            f"n_neighbors={n_neighbors} exceeds the {n_cells} cells; use at most {n_cells}."
        )
    n_pcs = max(1, min(n_pcs, max_rank(values.shape)))
    embedding = fit_pca(values, n_pcs, random_state=random_state).scores
    search = NearestNeighbors(n_neighbors=n_neighbors).fit(embedding)
    distances, indices = search.kneighbors(embedding)
    _put_self_first(indices, distances)
    return NeighbourGraph(indices, distances)


def _put_self_first(indices: np.ndarray, distances: np.ndarray) -> None:
    # Duplicated cells can tie at distance 0, so the cell itself is not always returned first.
    own = np.arange(indices.shape[0])
    not_first = indices[:, 0] != own
    for i in np.flatnonzero(not_first):
        where = np.flatnonzero(indices[i] == own[i])
        j = where[0] if where.size else indices.shape[1] - 1
        indices[i, 1 : j + 1] = indices[i, :j].copy()
        distances[i, 1 : j + 1] = distances[i, :j].copy()
        indices[i, 0], distances[i, 0] = i, 0.0


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

    _over_gene_blocks(halves, loss, score_block)
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

    _over_gene_blocks(halves, loss, score_block)
    return totals / np.prod(halves.b.shape)


def _over_gene_blocks(halves: Halves, loss: str, score_block) -> None:
    a = halves.a.tocsc() if sparse.issparse(halves.a) else np.asarray(halves.a)
    target = halves.target(loss)
    target = target.tocsc() if sparse.issparse(target) else np.asarray(target)
    for genes in gene_blocks(*a.shape):
        score_block(_dense(a[:, genes]), _dense(target[:, genes]))


def _dense(block) -> np.ndarray:
    block = block.toarray() if sparse.issparse(block) else block
    return np.asarray(block, dtype=np.float64)


DEFAULT_KS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)


def calibrate_knn_counts(
    X,
    *,
    ks=None,
    n_pcs: int = 30,
    settings: SplitSettings | None = None,
    progress: bool | None = None,
) -> CalibrationResult:
    """Self-supervised loss of kNN averaging for every neighbour count in ``ks``.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    ks
        Neighbour counts to score, the cell itself included (1 = no smoothing); None uses
        ``DEFAULT_KS`` below the number of cells.
    n_pcs
        Principal components of half A that the neighbour search uses.
    settings
        Split, transform and loss options (:class:`~sc_noise2self.calibration.SplitSettings`).
    progress
        A progress bar over splits; None shows it only on a terminal.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = ks``.
    """
    settings = settings or SplitSettings()
    settings = settings.validate(X)
    if ks is None:
        ks = [k for k in DEFAULT_KS if k < X.shape[0]]
    ks = np.unique(np.asarray(ks, dtype=int))
    if ks.size == 0 or ks.min() < 1 or ks.max() >= X.shape[0]:
        raise ValueError(
            f"ks must hold neighbour counts between 1 and n_cells - 1 = {X.shape[0] - 1}; "
            f"got {ks.tolist()}."
        )

    def score(halves: Halves, seed) -> np.ndarray:
        graph = build_graph(halves.a, int(ks.max()), n_pcs=n_pcs, random_state=seed)
        return knn_loss_curve(graph, halves, ks, settings.loss)

    curves = run_splits(X, settings, score, progress=progress)
    return CalibrationResult("n_neighbors", ks, curves, dict(settings.params(), n_pcs=n_pcs))


def calibrate_diffusion_counts(
    X,
    *,
    t_max: int = 12,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    settings: SplitSettings | None = None,
    progress: bool | None = None,
) -> CalibrationResult:
    """Self-supervised loss of lazy diffusion for every number of steps ``0..t_max``.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    t_max
        Largest number of diffusion steps scored.
    n_neighbors
        Neighbours per cell in the graph, the cell itself included.
    n_pcs
        Principal components of half A that the neighbour search uses.
    settings
        Split, transform and loss options (:class:`~sc_noise2self.calibration.SplitSettings`).
    progress
        A progress bar over splits; None shows it only on a terminal.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = 0..t_max``.
    """
    settings = settings or SplitSettings()
    settings = settings.validate(X)
    if t_max < 0:
        raise ValueError(f"t_max={t_max} must be a non-negative number of steps.")
    if not 2 <= n_neighbors < X.shape[0]:
        raise ValueError(
            f"n_neighbors={n_neighbors} must lie between 2 and n_cells - 1 = {X.shape[0] - 1}."
        )

    def score(halves: Halves, seed) -> np.ndarray:
        graph = build_graph(halves.a, n_neighbors, n_pcs=n_pcs, random_state=seed)
        return diffusion_loss_curve(diffusion_operator(graph), halves, t_max, settings.loss)

    curves = run_splits(X, settings, score, progress=progress)
    params = dict(settings.params(), n_neighbors=n_neighbors, n_pcs=n_pcs, t_max=t_max)
    return CalibrationResult("t", np.arange(t_max + 1), curves, params)
