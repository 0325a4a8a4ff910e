"""The PCA family on a dask array of counts: out of core, on any dask scheduler.

One pass over the row chunks gives every cell's total (and checks the counts). Then, per
split, one more pass splits each chunk (the in-memory halves, bit for bit: one random stream
per row), normalises and transforms both halves exactly as in memory, and sums over chunks:

- ``A^T A`` and ``A^T 1``: the covariance of half A, whose top eigenvectors are the
  components (the Gram route of scanpy's ``PCAEighDask``, exact, one pass);
- ``B^T A``, ``B^T 1`` and ``sum(B^2)``: with the components ``V``, these give
  ``B^T scores = (B^T A) V^T - (B^T 1)(V mu)^T`` and ``scores^T scores``, hence the MSE at
  every rank (:func:`~sc_noise2self.denoisers.rank_loss.linear_mse_from_products`) without the
  scores themselves;
- for a non-linear depth conversion or the Poisson loss, the rows of the cells that are
  scored (at most ``max_score_cells``), then scored in memory as
  :func:`~sc_noise2self.denoisers.rank_loss.rank_loss_curve` does.

Only genes x genes, genes x K, K x K and scored-cells x genes pieces come to memory, never
the cells x genes matrix; each task holds one chunk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import sparse

from .._dask import checked_library_sizes, row_offsets, rows_chunked, tree_reduce
from .._device import resolve_device
from .._rng import row_stream_key
from .._validation import check_no_empty_cells
from ..calibration import DaskCounts, SplitSettings
from ..embedding import PCAFit
from ..losses import Halves, halves_from_counts
from ..splitting import gene_sizes, overlap_shares, split_rows
from ..transforms import DepthConversion, apply_transform, normalize_to_depth
from .rank_loss import BProducts, linear_mse_from_products, pick_score_cells, rank_loss_curve

DASK_SOLVERS = ("auto", "covariance_eigh")


def score_pca_dask(counts: DaskCounts, settings: SplitSettings, grid: np.ndarray, seed,
                   options: dict) -> np.ndarray:
    """The PCA family's loss at every rank for one split of a dask array (its dask backend).

    Gives what scoring the in-memory halves gives on the same data and seed (the same split
    bit for bit; the curve within rounding, as the SVD route differs), computed chunk by
    chunk on whatever dask scheduler is active (a ``dask.distributed.Client`` included).

    Parameters
    ----------
    counts
        The dask counts with their checked totals (:class:`~sc_noise2self.calibration.DaskCounts`).
    settings
        Validated split options.
    grid
        Ranks ``0..max_comps``.
    seed
        This split's seed.
    options
        The PCA family's options: ``center``, ``solver`` (``"auto"`` or
        ``"covariance_eigh"``: the eigendecomposition of half A's genes x genes covariance,
        summed over chunks), ``max_score_cells`` (cells scored when the loss is non-linear;
        their rows of both halves come to memory) and ``device`` (None: numpy and scipy;
        ``"cuda"``: each chunk's genes x genes products and the eigendecomposition run in
        float64 on that torch device).

    Returns
    -------
    The loss at every rank of ``grid``.
    """
    X, n_comps = counts.X, int(grid[-1])
    device = _check_device(options.get("device"))
    _warn_large_gram(X.shape[1])
    conversion = DepthConversion(settings.transform, settings.p, 1.0 - settings.p)
    linear = settings.loss == "mse" and conversion.is_linear
    cells = None
    if not linear:
        cells = pick_score_cells(X.shape[0], options["max_score_cells"], seed)
        cells = np.arange(X.shape[0]) if cells is None else cells
    shares = overlap_shares(settings.p, settings.sample_ratio) if settings.sample_ratio else None
    sizes = gene_sizes(X, settings.split, settings.overdispersion)
    plan = ChunkPlan(settings.p, settings.transform, settings.loss, counts.depth,
                     row_stream_key(seed, "split"), sizes, shares, linear, device)
    stats = _split_statistics(X, plan, cells)
    fit = covariance_components(stats, n_comps, options["center"], device)
    return _curve(stats, fit, plan, X.shape, conversion)


def _warn_large_gram(n_genes: int, limit_gb: float = 1.0) -> None:
    """Warn when the genes x genes matrices of the Gram route would be large."""
    size_gb = 8 * n_genes**2 / 1e9
    if size_gb > limit_gb:
        warnings.warn(
            f"With {n_genes} genes each genes x genes float64 matrix takes {size_gb:.1f} GB, "
            "and a few are held per dask thread. Select genes first (e.g. 2,000 highly "
            "variable genes) to keep memory low.",
            UserWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class ChunkPlan:
    """Everything a chunk task needs to split, normalise and summarise its rows."""

    p: float
    transform: str
    loss: str
    depth: float
    key: np.ndarray  # of the rows' random streams
    sizes: np.ndarray | None  # NB sizes per gene
    shares: tuple | None  # overlap shares
    linear: bool  # the MSE has a closed form: no rows to gather
    device: str | None = None  # torch device of the products, or None for scipy


def _split_statistics(X, plan: ChunkPlan, cells: np.ndarray | None) -> dict:
    """One pass: split every chunk and sum the products the curve needs (see module doc)."""
    import dask

    blocks = X.to_delayed(optimize_graph=False).ravel()
    parts = []
    for block, first, n_rows in zip(blocks, row_offsets(X), X.chunks[0], strict=True):
        local = None  # the scored cells of this chunk, by position in it
        if cells is not None:
            local = cells[(cells >= first) & (cells < first + n_rows)] - first
        parts.append(dask.delayed(_chunk_statistics)(block, int(first), plan, local))
    (total,) = dask.compute(tree_reduce(parts, _combine))
    return total


def _chunk_statistics(chunk, first_row: int, plan: ChunkPlan, local) -> dict:
    """Split one chunk (as the whole matrix would be split) and summarise its halves."""
    half_a, half_b = split_rows(chunk, plan.p, plan.key, first_row=first_row, sizes=plan.sizes,
                                shares=plan.shares)
    halves = halves_from_counts(half_a, half_b, p=plan.p, transform=plan.transform,
                                depth=plan.depth, keep_counts=plan.loss == "poisson")
    a = _as_float64(halves.a)
    stats = {"n": a.shape[0], "a_sum": summed_columns(a),
             "a_gram": cross_products(a, a, plan.device), "max_value": halves.max_value,
             "rows": []}
    if plan.linear:
        b = _as_float64(halves.b)
        values = b.data if sparse.issparse(b) else b
        stats.update(b_sum=summed_columns(b), b_sq=float(np.sum(values * values)),
                     ba=cross_products(b, a, plan.device))
    if local is not None and local.size:
        target = halves.target(plan.loss)
        stats["rows"] = [(first_row, _rows(halves.a, local), _rows(target, local),
                          halves.totals_a[local])]
    return stats


def _combine(parts: list[dict]) -> dict:
    """Sum the products of several chunks; keep the largest value and every gathered row."""
    out = dict(parts[0])
    if "rows" in out:
        out["rows"] = list(out["rows"])
    for part in parts[1:]:
        for name, value in part.items():
            if name == "max_value":
                out[name] = max(out[name], value)
            elif name == "rows":
                out[name].extend(value)
            else:
                out[name] = out[name] + value
    return out


def _as_float64(M):
    """A float64 view of a chunk's values (sparse: CSR), so products accumulate in float64."""
    if sparse.issparse(M):
        return sparse.csr_matrix(M, dtype=np.float64)
    return np.asarray(M, dtype=np.float64)


def summed_columns(M) -> np.ndarray:
    """Each column's sum of ``M`` (dense or sparse), float64."""
    return np.asarray(M.sum(axis=0), dtype=np.float64).ravel()


# Sparse chunks at least this dense are multiplied as dense row blocks of about
# DENSE_BLOCK_BYTES: BLAS took 2.1 s for 50,000 cells x 2,000 genes at 22% density, where
# scipy's sparse product (whose result is dense anyway) took 28 s, agreeing to 1e-14. Dense
# work grows with rows x genes^2 whatever the density, sparse work with its square, so
# sparser chunks keep scipy's product.
DENSE_PRODUCT_DENSITY = 0.05
DENSE_BLOCK_BYTES = 2**25


def cross_products(left, right, device: str | None = None) -> np.ndarray:
    """``left^T right`` as a dense genes x genes float64 array (on a torch device if given)."""
    if device is not None:
        return _torch_gram(left, right, device)
    if sparse.issparse(left) and _density(left) >= DENSE_PRODUCT_DENSITY:
        return _blocked_products(left, right)
    product = left.T @ right
    return product.toarray() if sparse.issparse(product) else np.asarray(product)


def _density(M) -> float:
    return M.nnz / max(M.shape[0] * M.shape[1], 1)


def _blocked_products(left, right) -> np.ndarray:
    """``left^T right`` from dense row blocks of :data:`DENSE_BLOCK_BYTES` (float64)."""
    step = max(1, DENSE_BLOCK_BYTES // (8 * max(left.shape[1], right.shape[1], 1)))
    out = np.zeros((left.shape[1], right.shape[1]))
    for start in range(0, left.shape[0], step):
        rows = slice(start, start + step)
        block = _dense(left[rows])
        out += block.T @ (block if right is left else _dense(right[rows]))
    return out


def _dense(M) -> np.ndarray:
    return M.toarray() if sparse.issparse(M) else np.asarray(M)


def _rows(M, rows: np.ndarray):
    """The chosen rows, as CSR (sparse) or a dense array."""
    return sparse.csr_matrix(M)[rows] if sparse.issparse(M) else np.asarray(M)[rows]


def _check_device(device: str | None) -> str | None:
    """None, or a torch device name that exists and computes in float64."""
    if device is None:
        return None
    resolved = resolve_device(device)
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device={device!r}: the products need float64, which only 'cpu' and 'cuda' "
            "torch devices offer; pass device='cuda', 'cpu' or None."
        )
    return str(resolved)


def _torch_tensor(M, device: str):
    """A float64 dense torch tensor of a chunk, densified on the device (not the host)."""
    import torch

    if not sparse.issparse(M):
        return torch.as_tensor(np.ascontiguousarray(M), device=device)
    M = sparse.csr_matrix(M)
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta": it only carries data
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        tensor = torch.sparse_csr_tensor(
            torch.as_tensor(M.indptr.astype(np.int64)),
            torch.as_tensor(M.indices.astype(np.int64)),
            torch.as_tensor(M.data), size=M.shape, dtype=torch.float64,
            check_invariants=False,  # scipy's CSR is valid; checking costs a pass
        )
    return tensor.to(device).to_dense()


def _torch_gram(left, right, device: str) -> np.ndarray:
    first = _torch_tensor(left, device)
    second = first if right is left else _torch_tensor(right, device)
    return (first.T @ second).cpu().numpy()


def covariance_components(stats: dict, n_comps: int, center: bool,
                          device: str | None = None) -> PCAFit:
    """Top ``n_comps`` eigenvectors of half A's covariance (or second moment), descending.

    The fit's scores hold only the gathered rows' scores (or nothing): the curve needs no
    more.
    """
    n = stats["n"]
    mean = stats["a_sum"] / n if center else np.zeros_like(stats["a_sum"])
    covariance = stats["a_gram"] / n - np.outer(mean, mean)
    n_genes = covariance.shape[0]
    if device is None:
        _, vectors = scipy.linalg.eigh(covariance,
                                       subset_by_index=[n_genes - n_comps, n_genes - 1])
    else:
        import torch

        _, every = torch.linalg.eigh(torch.as_tensor(covariance, device=device))
        vectors = every[:, n_genes - n_comps :].cpu().numpy()  # ascending, like scipy's
    components = np.ascontiguousarray(vectors[:, ::-1].T)
    return PCAFit(np.zeros((0, n_comps)), components, mean)


def _curve(stats: dict, fit: PCAFit, plan: ChunkPlan, shape, conversion) -> np.ndarray:
    """The loss at every rank from the summed statistics (and gathered rows)."""
    V, mu = fit.components, fit.mean
    if plan.linear:
        return linear_mse_from_products(mu, V, _products(stats, V, mu), shape, conversion.scale)
    rows = sorted(stats["rows"], key=lambda part: part[0])
    stack = sparse.vstack if sparse.issparse(rows[0][1]) else np.vstack
    a_rows = _as_float64(stack([part[1] for part in rows]))
    target = stack([part[2] for part in rows])
    scores = np.asarray(a_rows @ V.T) - V @ mu
    halves = Halves(None, target, target, np.concatenate([part[3] for part in rows]), plan.p,
                    plan.depth, plan.transform, stats["max_value"])
    return rank_loss_curve(PCAFit(scores, V, mu), halves, plan.loss)


def _products(stats: dict, V: np.ndarray, mu: np.ndarray) -> BProducts:
    """Half B's products with the scores ``a = A V^T - 1 (V mu)^T``, from the Gram sums."""
    n = stats["n"]
    v_mu, v_a = V @ mu, V @ stats["a_sum"]
    gram = V @ stats["a_gram"] @ V.T
    gram += n * np.outer(v_mu, v_mu) - np.outer(v_a, v_mu) - np.outer(v_mu, v_a)
    return BProducts(
        b_sq=stats["b_sq"],
        b_colsum=stats["b_sum"],
        bt_scores=stats["ba"] @ V.T - np.outer(stats["b_sum"], v_mu),
        scores_sum=v_a - n * v_mu,
        scores_gram=gram,
    )


def fit_pca_dask(X, n_comps: int, *, transform: str = "sqrt", max_scores_gb: float = 1.0):
    """PCA of normalised, transformed dask counts, for ``tl.denoise_pca``; one pass to fit.

    Parameters
    ----------
    X
        Dask array of raw counts, cells x genes.
    n_comps
        Number of components.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"`` after normalising to the median total.
    max_scores_gb
        The cell scores are computed when they take at most this many GB (float64), and
        left as a lazy dask array otherwise.

    Returns
    -------
    fit, depth, denoised
        :class:`~sc_noise2self.denoisers.pca.PCAFit` (scores: numpy or dask), the median
        total count, and the dense denoised matrix as a lazy float32 dask array (never
        computed here).
    """
    import dask

    X = rows_chunked(X)
    _warn_large_gram(X.shape[1])
    totals = checked_library_sizes(X)
    check_no_empty_cells(totals)
    depth = float(np.median(totals))
    meta = X._meta.astype(np.float32)
    values = X.map_blocks(_normalised_chunk, depth=depth, transform=transform,
                          dtype=np.float32, meta=meta)
    parts = [dask.delayed(value_statistics)(block)
             for block in values.to_delayed(optimize_graph=False).ravel()]
    (stats,) = dask.compute(tree_reduce(parts, _combine))
    fit = covariance_components(stats, n_comps, center=True)
    V, mu = fit.components, fit.mean
    scores = values.map_blocks(_chunk_scores, V=V, mu=mu, chunks=(values.chunks[0], (n_comps,)),
                               dtype=np.float64, meta=np.empty((0, 0)))
    if X.shape[0] * n_comps * 8 / 1e9 <= max_scores_gb:  # float64 scores
        scores = scores.compute()
    fit.scores = scores
    denoised = values.map_blocks(_chunk_denoised, V=V, mu=mu, dtype=np.float32,
                                 meta=np.empty((0, 0), dtype=np.float32))
    return fit, depth, denoised


def _normalised_chunk(chunk, *, depth: float, transform: str):
    return apply_transform(normalize_to_depth(chunk, depth), transform, inplace=True)


def value_statistics(chunk) -> dict:
    """A chunk's rows, column sums and ``X^T X``: what :func:`covariance_components` sums."""
    values = _as_float64(chunk)
    return {"n": values.shape[0], "a_sum": summed_columns(values),
            "a_gram": cross_products(values, values)}


def _chunk_scores(chunk, *, V: np.ndarray, mu: np.ndarray) -> np.ndarray:
    return np.asarray(_as_float64(chunk) @ V.T) - V @ mu


def _chunk_denoised(chunk, *, V: np.ndarray, mu: np.ndarray) -> np.ndarray:
    return (_chunk_scores(chunk, V=V, mu=mu) @ V + mu).astype(np.float32)
