"""Graph smoothing families: kNN averaging and lazy diffusion, each scored over its whole grid.

The graph is built from half A alone (PCA of half A, then scikit-learn's neighbours), so that
half B, the target, leaks into nothing. Both families are linear smoothers applied per gene,
so the loss is accumulated over blocks of genes, never holding a dense cells x genes matrix:

- :data:`KNN`, averaging over k neighbours (the cell itself first): the running sum over
  neighbours gives every k of the grid in one pass;
- :data:`DIFFUSION`, ``X_t = M^t A`` with the lazy walk ``M = (P + I) / 2``: one sparse
  product a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .._anndata import get_counts, write_dense_layer
from ..calibration import CalibrationResult, Family, calibrate_counts
from ..embedding import NeighbourGraph, build_graph
from ..losses import Halves, block_loss
from ..transforms import library_sizes, normalised_values

GENE_BLOCK_BYTES = 64e6
DEFAULT_KS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)

__all__ = ["DIFFUSION", "KNN", "build_graph", "calibrate_diffusion_counts",
           "calibrate_knn_counts", "diffusion_loss_curve", "diffusion_operator",
           "knn_loss_curve", "knn_operator"]


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


def _knn_grid(ks, shape: tuple[int, int], options: dict) -> np.ndarray:
    n_cells = shape[0]
    if ks is None:
        ks = [k for k in DEFAULT_KS if k < n_cells]
    ks = np.unique(np.asarray(ks, dtype=int))
    if ks.size == 0 or ks.min() < 1 or ks.max() >= n_cells:
        raise ValueError(
            f"ks must hold neighbour counts between 1 and n_cells - 1 = {n_cells - 1}; "
            f"got {ks.tolist()}."
        )
    return ks


def _score_knn(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
               progress: bool | None = None) -> np.ndarray:
    graph = build_graph(halves.a, int(grid.max()), n_pcs=options["n_pcs"], random_state=seed)
    return knn_loss_curve(graph, halves, grid, loss)


def _diffusion_grid(t_max: int, shape: tuple[int, int], options: dict) -> np.ndarray:
    if not isinstance(t_max, int | np.integer) or t_max < 0:
        raise ValueError(f"t_max={t_max!r} must be a non-negative number of steps.")
    return np.arange(t_max + 1)


def _check_diffusion(options: dict, X) -> None:
    n_neighbors = options["n_neighbors"]
    if not isinstance(n_neighbors, int | np.integer) or not 2 <= n_neighbors < X.shape[0]:
        raise ValueError(
            f"n_neighbors={n_neighbors!r} must lie between 2 and n_cells - 1 = "
            f"{X.shape[0] - 1}."
        )


def _check_n_pcs(options: dict, X) -> None:
    n_pcs = options["n_pcs"]
    if not isinstance(n_pcs, int | np.integer) or n_pcs < 1:
        raise ValueError(f"n_pcs={n_pcs!r} must be a positive number of components.")


def _score_diffusion(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                     progress: bool | None = None) -> np.ndarray:
    graph = build_graph(halves.a, options["n_neighbors"], n_pcs=options["n_pcs"],
                        random_state=seed)
    return diffusion_loss_curve(diffusion_operator(graph), halves, int(grid[-1]), loss)


@dataclass
class Smoother:
    """A fitted graph smoother: the operator, how often to apply it, the depth it used."""

    operator: sparse.csr_matrix
    steps: int
    depth: float
    n_neighbors: int


def _smoother(counts, n_neighbors: int, options: dict, transform: str, random_state):
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    graph = build_graph(values, n_neighbors, n_pcs=options["n_pcs"], random_state=random_state)
    return graph, depth


def _fit_knn(counts, k: int, options: dict, *, transform: str, random_state,
             max_layer_gb: float) -> Smoother:
    graph, depth = _smoother(counts, int(k), options, transform, random_state)
    return Smoother(knn_operator(graph, int(k)), 1, depth, int(k))


def _fit_diffusion(counts, t: int, options: dict, *, transform: str, random_state,
                   max_layer_gb: float) -> Smoother:
    if not isinstance(t, int | np.integer) or t < 0:
        raise ValueError(f"t={t!r} must be a non-negative number of diffusion steps.")
    graph, depth = _smoother(counts, options["n_neighbors"], options, transform, random_state)
    return Smoother(diffusion_operator(graph), int(t), depth, options["n_neighbors"])


def store_smoother(adata, fitted: Smoother, key: str, max_layer_gb: float) -> dict:
    """Write the operator to ``obsp[key + '_operator']`` and the layer when it fits.

    ``uns[key]`` already holds the record's params (layer, depth, transform); the steps are
    added first, because :func:`smoothed_values` reads them back to make the layer.
    """
    adata.obsp[f"{key}_operator"] = fitted.operator
    adata.uns[key].update(steps=fitted.steps, n_neighbors=fitted.n_neighbors)
    write_dense_layer(adata, key, max_layer_gb,
                      values=lambda: smoothed_values(adata, key, np.arange(adata.n_vars)))
    return {}


def smoothed_values(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """Apply the stored graph operator (``steps`` times) to the chosen genes' values."""
    record = adata.uns[key]
    params = record["params"]
    layer = None if params["layer"] in ("X", "None") else params["layer"]
    values = normalised_values(get_counts(adata, layer), params["depth"], params["transform"],
                               columns)
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    operator = adata.obsp[f"{key}_operator"]
    for _ in range(int(record.get("steps", 1))):
        values = operator @ values
    return np.asarray(values, dtype=np.float32)


_SMOOTHER_WRITES = ("``obsp[key_added + '_operator']`` (one step of the smoother), "
                    "``uns[key_added]`` (with ``steps``) and, when it fits ``max_layer_gb``, "
                    "``layers[key_added]`` on the transformed scale.")
_N_PCS_DOC = "Principal components of half A (of the full data when denoising) used for the "\
    "neighbour search."

KNN = Family(
    name="knn",
    knob="n_neighbors",
    grid_arg="ks",
    grid_default=None,
    make_grid=_knn_grid,
    grid_arg_from_values=list,
    score=_score_knn,
    check_options=_check_n_pcs,
    fit=_fit_knn,
    store=store_smoother,
    values=smoothed_values,
    options={"n_pcs": 30},
    fit_options=("n_pcs",),
    option_docs={
        "ks": "Neighbour counts to score, the cell itself included (1 = no smoothing). None "
              "uses 1, 2, 3, 5, 8, 10, 15, 20, 30, 50 below the number of cells.",
        "n_neighbors": "Neighbours to average over, the cell itself included. None calibrates "
                       "it first (or reuses a matching calibration stored under "
                       "``key_added``).",
        "n_pcs": _N_PCS_DOC,
    },
    summary="Choose the number of neighbours to average over by molecular cross-validation."
            "\n\nThe kNN graph is built from half A alone; each cell's prediction is the mean "
            "of half A over its k nearest cells (itself first), scored against half B.",
    denoise_summary="Denoise by averaging each cell over its nearest cells, at a calibrated "
                    "(or given) k.",
    writes=_SMOOTHER_WRITES,
)

DIFFUSION = Family(
    name="diffusion",
    knob="t",
    grid_arg="t_max",
    grid_default=12,
    make_grid=_diffusion_grid,
    grid_arg_from_values=lambda values: int(max(values)),
    score=_score_diffusion,
    check_options=lambda options, X: (_check_n_pcs(options, X), _check_diffusion(options, X)),
    fit=_fit_diffusion,
    store=store_smoother,
    values=smoothed_values,
    options={"n_neighbors": 15, "n_pcs": 30},
    fit_options=("n_neighbors", "n_pcs"),
    option_docs={
        "t_max": "Largest number of diffusion steps scored (the grid is ``0..t_max``).",
        "t": "Number of diffusion steps. None calibrates it first (or reuses a matching "
             "calibration stored under ``key_added``).",
        "n_neighbors": "Neighbours per cell in the graph, the cell itself included.",
        "n_pcs": _N_PCS_DOC,
    },
    summary="Choose the number of diffusion steps (MAGIC-style smoothing) by molecular "
            "cross-validation.\n\nThe lazy random walk ``(P + I) / 2`` on an adaptive Gaussian "
            "kNN graph of half A is applied ``t`` times to half A and scored against half B, "
            "for every t in ``0..t_max``.",
    denoise_summary="Denoise by ``t`` steps of lazy diffusion on the kNN graph, ``t`` "
                    "calibrated or given.",
    writes=_SMOOTHER_WRITES,
)


def calibrate_knn_counts(X, **options) -> CalibrationResult:
    """Array-level kNN calibration: :func:`~sc_noise2self.calibration.calibrate_counts` of KNN.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    **options
        ``ks``, ``n_pcs``, split options or ``settings=``, and ``progress``.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = ks``.
    """
    return calibrate_counts(X, KNN, **options)


def calibrate_diffusion_counts(X, **options) -> CalibrationResult:
    """Array-level diffusion calibration (:func:`~sc_noise2self.calibration.calibrate_counts`).

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    **options
        ``t_max``, ``n_neighbors``, ``n_pcs``, split options or ``settings=``, ``progress``.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = 0..t_max``.
    """
    return calibrate_counts(X, DIFFUSION, **options)
