"""Step 3 for counts: the self-supervised loss of a prediction of one half against the other.

A split gives half A (what a denoiser sees) and half B (what it is scored against). Each is
library-size normalised to its share of the median depth and transformed on its own
(:class:`Halves`); a prediction of half A's values is moved to half B's depth
(:class:`~sc_noise2self.transforms.DepthConversion`) and scored by squared error on the
transformed scale or by Poisson deviance on half B's counts, in bounded dense blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse

from ._device import free_device_bytes
from ._rng import row_stream_key
from ._validation import check_counts, check_fraction
from .splitting import RandomState, check_split_range, half_a_values, split_counts
from .transforms import (
    DepthConversion,
    Transform,
    apply_transform,
    library_sizes,
    normalize_to_depth,
)

Loss = Literal["mse", "poisson", "nb"]
# What every family can score; "nb" needs predictions of every gene at once (the per-gene
# sizes), so a family declares it (``Family.losses``) when its predictions come whole.
LOSSES: tuple[str, ...] = ("mse", "poisson")
COUNT_LOSSES: tuple[str, ...] = ("poisson", "nb")
ALL_LOSSES: tuple[str, ...] = ("mse", "poisson", "nb")


@dataclass
class Halves:
    """Half A (the input) and half B (the target) of one molecule split, ready to score.

    ``a`` and ``b`` are library-size normalised to depths ``p * depth`` and ``(1 - p) * depth``
    and transformed; ``b_counts`` keeps half B's raw counts for the Poisson loss (else None);
    ``max_value`` is the largest transformed value in either half; ``b`` is None where the
    family scores half B's counts only (``keep_b_values=False``). ``b_sizes`` holds the
    per-gene NB sizes of the ``"nb"`` loss, ``a_counts`` half A's raw counts for families
    that model counts (scVI), and ``obs`` the cells' covariates for families that use them.
    """

    a: Any
    b: Any
    b_counts: Any
    totals_a: np.ndarray
    p: float
    depth: float
    transform: str
    max_value: float
    b_sizes: np.ndarray | None = None
    a_counts: Any = None
    obs: Any = None
    device: Any = None  # a torch device when ``a`` and ``b`` are torch CSR matrices there

    @property
    def conversion(self) -> DepthConversion:
        """Moves a prediction of half A's transformed values to half B's depth."""
        return DepthConversion(self.transform, self.p, 1.0 - self.p)

    @functools.cached_property
    def _table(self):
        return self.conversion.table(2.0 * self.max_value + 1.0)

    def conversion_table(self):
        """Interpolation table of :attr:`conversion` covering every value of either half."""
        return self._table

    def target(self, loss: str):
        """What a prediction is scored against: half B transformed, or its counts."""
        return self.b if loss == "mse" else self.b_counts

    def expected_b_counts(self, mean_a_normalised: np.ndarray, rows: slice) -> np.ndarray:
        """Expected raw counts of half B from predicted normalised means of half A.

        Uses half A's library sizes, not half B's, so the prediction sees nothing of B.
        """
        size = self.totals_a[rows, None] / (self.p * self.depth)
        return mean_a_normalised * size * ((1.0 - self.p) / self.p)


def prepare_halves(
    X,
    *,
    p: float,
    transform: Transform,
    random_state: RandomState,
    depth: float | None = None,
    keep_counts: bool = False,
    keep_a_counts: bool = False,
    keep_b_values: bool = True,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
) -> Halves:
    """Split ``X`` into molecule halves, then normalise and transform each on its own.

    Parameters
    ----------
    X
        Raw counts, cells x genes (numpy or scipy.sparse).
    p
        Share of molecules in half A.
    transform
        ``"sqrt"`` (the paper), ``"log1p"`` (scanpy) or ``"none"``.
    random_state
        Seed of the split.
    depth
        Median total count of the full data; computed from ``X`` when not given.
    keep_counts
        Keep half B's raw counts (needed by the count losses).
    keep_a_counts
        Keep half A's raw counts too (for families that model counts).
    keep_b_values
        Normalise and transform half B; False (with ``keep_counts``) keeps half B as counts
        only, for families that score counts, and ``b`` is None.
    split, overdispersion, sample_ratio
        Passed to :func:`~sc_noise2self.split_counts` (``split`` as ``method``).

    Returns
    -------
    The prepared :class:`Halves`.
    """
    _check_half_b_kept(keep_counts, keep_b_values)
    if depth is None:
        depth = float(np.median(library_sizes(X)))
    if _fusable(X, keep_counts or keep_a_counts, split, sample_ratio):
        return _fused_halves(X, p, transform, random_state, depth)
    counts_a, counts_b = split_counts(
        X, p, random_state=random_state, split=split, overdispersion=overdispersion,
        sample_ratio=sample_ratio,
    )
    return halves_from_counts(counts_a, counts_b, p=p, transform=transform, depth=depth,
                              keep_counts=keep_counts, keep_a_counts=keep_a_counts,
                              keep_b_values=keep_b_values)


def _fusable(X, keep_counts: bool, split: str, sample_ratio) -> bool:
    return (sparse.issparse(X) and X.format == "csr" and not keep_counts
            and split == "binomial" and not sample_ratio)


def _fused_halves(X, p: float, transform: str, random_state, depth: float) -> Halves:
    """Split, normalise and transform a CSR matrix in compiled passes, with no count copies.

    The same counter-based draws as :func:`split_counts` followed by
    :func:`halves_from_counts`, and the same float32 arithmetic: bit-identical under
    ``sqrt`` and ``none``, within one float32 ulp under ``log1p`` (computed in float64 and
    rounded once, where numpy's float32 ``log1p`` may differ by an ulp). Only half A's share
    of each count is held besides the two float32 halves.
    """
    from ._count_kernels import normalised_halves

    check_counts(X)
    p = check_fraction(p)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    # Half A's counts fit 16 bits on any UMI data; the widest temporary of the split.
    narrow = X.nnz and X.data.max() < np.iinfo(np.uint16).max
    a_values, _ = half_a_values(X, p, row_stream_key(random_state, "split"),
                                dtype=np.uint16 if narrow else None)
    totals_a, a_parts, b_parts = normalised_halves(
        X.data, a_values, X.indptr, X.indices, (p * depth, (1.0 - p) * depth), transform
    )
    del a_values
    a, b = (sparse.csr_matrix(parts, shape=X.shape) for parts in (a_parts, b_parts))
    max_value = max(_max_value(a), _max_value(b))
    return Halves(a, b, None, totals_a, p, depth, transform, max_value)


# Device memory the split needs per stored count: values, row and column indices, counts,
# half A and the draws' states, most of them 64-bit.
DEVICE_BYTES_PER_COUNT = 64


def device_halves(X, *, p: float, transform: str, random_state, depth: float,
                  device) -> Halves:
    """:func:`prepare_halves` on a torch device: split, normalise and transform there.

    The draws and the float32 arithmetic are those of the CPU path
    (:mod:`sc_noise2self._count_kernels_torch`), so the halves are the same; ``a`` and ``b``
    are float32 torch CSR matrices on ``device``. When the split would not fit in the
    device's free memory (:data:`DEVICE_BYTES_PER_COUNT` per stored count), the halves are
    made on the host instead, as scipy CSR matrices, and ``device`` reads them in row
    blocks. Binomial splitting of a CSR matrix only.
    """
    from ._count_kernels_torch import csr_to_device, normalised_halves, split_values

    X = sparse.csr_matrix(X)
    if X.nnz * DEVICE_BYTES_PER_COUNT > free_device_bytes(device):
        # Too large for the device: the same halves made (and the counts checked) on the
        # host, with the same draws; the device then reads them in row blocks.
        halves = prepare_halves(X, p=p, transform=transform, random_state=random_state,
                                depth=depth)
        halves.device = device
        return halves
    check_counts(X)
    p = check_fraction(p)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    check_split_range(X.data)
    values, crow, col = csr_to_device(X, device)
    a_values = split_values(values, crow, col, row_stream_key(random_state, "split"), p)
    totals_a, a, b = normalised_halves(values, a_values, crow, col,
                                       (p * depth, (1.0 - p) * depth), transform, X.shape)
    del values, a_values
    max_value = max((float(half.values().max()) for half in (a, b) if half.values().numel()),
                    default=0.0)
    return Halves(a, b, None, totals_a.cpu().numpy(), p, depth, transform, max_value,
                  device=device)


def halves_from_counts(counts_a, counts_b, *, p: float, transform: str, depth: float,
                       keep_counts: bool = False, keep_a_counts: bool = False,
                       keep_b_values: bool = True) -> Halves:
    """Normalise and transform two halves that are already split (and owned by the caller).

    Parameters
    ----------
    counts_a, counts_b
        Half A (share ``p`` of the molecules) and half B, raw counts; modified in place.
    p
        Share of molecules in half A.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"``.
    depth
        Median total count of the full data.
    keep_counts
        Keep half B's raw counts (needed by the count losses).
    keep_a_counts
        Keep half A's raw counts too (for families that model counts).
    keep_b_values
        As in :func:`prepare_halves`.

    Returns
    -------
    The prepared :class:`Halves`.
    """
    _check_half_b_kept(keep_counts, keep_b_values)
    totals_a = library_sizes(counts_a)
    a_counts = _owned_rows(counts_a) if keep_a_counts else None
    # The halves are ours: normalise them in place, so no copy of their patterns is made.
    a = normalize_to_depth(counts_a, p * depth, totals_a, inplace=True)
    b = b_counts = None
    if keep_counts:  # without its values, half B's counts are kept as they came
        b_counts = _owned_rows(counts_b) if keep_b_values else _rows(counts_b)
    if keep_b_values:
        b = normalize_to_depth(counts_b, (1.0 - p) * depth, inplace=True)
        apply_transform(b, transform, inplace=True)
    del counts_a, counts_b
    apply_transform(a, transform, inplace=True)
    max_value = max(_max_value(a), 0.0 if b is None else _max_value(b))
    return Halves(a, b, b_counts, totals_a, p, depth, transform, max_value, a_counts=a_counts)


def _check_half_b_kept(keep_counts: bool, keep_b_values: bool) -> None:
    if not (keep_counts or keep_b_values):
        raise ValueError("keep_b_values=False keeps half B as counts only: pass "
                         "keep_counts=True with it, or nothing of half B is kept.")


def _owned_rows(counts):
    """A copy of raw counts' values as CSR (or dense), so that rows can be sliced for scoring.

    A CSR copy shares the index arrays: the caller normalises the original's values in
    place and keeps its pattern, so both matrices have one pattern (4 bytes a count saved).
    """
    if not sparse.issparse(counts):
        return counts.copy()
    counts = _rows(counts)
    return sparse.csr_matrix((counts.data.copy(), counts.indices, counts.indptr),
                             shape=counts.shape)


def _rows(counts):
    """Counts as CSR (itself when it is CSR), or dense as they are."""
    return counts.tocsr() if sparse.issparse(counts) else counts


def _max_value(X) -> float:
    values = X.data if sparse.issparse(X) else X
    return float(values.max()) if values.size else 0.0


def prediction_loss(prediction, halves: Halves, loss: str) -> float:
    """Mean loss of a full cells x genes prediction of half A's values against half B."""
    if prediction.shape != halves.b.shape:
        raise ValueError(
            f"The denoiser returned shape {prediction.shape}; expected {halves.b.shape} "
            "(cells x genes, like its input)."
        )
    target = halves.target(loss)
    table = halves.conversion_table()
    total = 0.0
    for rows in row_chunks(*target.shape):
        total += block_loss(dense_rows(prediction, rows), dense_rows(target, rows), halves,
                            rows, table, loss)
    return total / np.prod(target.shape)


def column_means(values) -> np.ndarray:
    """Each gene's mean over cells (float64), sparse or dense, without densifying."""
    return np.asarray(values.mean(axis=0), dtype=np.float64).ravel()


def baseline_loss(means: np.ndarray, halves: Halves, loss: str) -> float:
    """The loss of the trivial J-invariant predictor: every cell predicted by half A's means.

    It sees nothing of half B, so it is the floor any denoiser must beat to show that it
    found structure above noise: the referee of every calibration.
    """
    target = halves.target(loss)
    table = halves.conversion_table()
    total = 0.0
    for rows in row_chunks(*target.shape):
        block = dense_rows(target, rows)
        prediction = np.broadcast_to(means, block.shape)
        total += block_loss(prediction, block, halves, rows, table, loss)
    return total / np.prod(target.shape)


def poisson_deviance(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Elementwise Poisson deviance ``2 * (y log(y / mu) - (y - mu))``, with ``0 log 0 = 0``."""
    expected = np.maximum(expected, 1e-8)
    ratio = np.where(observed > 0, observed / expected, 1.0)
    return 2.0 * (observed * np.log(ratio) - (observed - expected))


def nb_deviance(observed: np.ndarray, expected: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Elementwise NB deviance at fixed sizes ``b`` (the last axis is genes), ``0 log 0 = 0``.

    ``2 * (y log(y / mu) - (y + b) log((y + b) / (mu + b)))``. With ``b`` fixed it is a
    Bregman divergence in the mean, so its expectation is lowest at the true mean: a proper
    loss for a predicted mean, whichever sizes are used.
    """
    expected = np.maximum(expected, 1e-8)
    poisson = np.isinf(sizes)  # an infinite size is the Poisson limit
    finite = np.where(poisson, 1.0, sizes)
    nb = 2.0 * (observed * np.log(np.where(observed > 0, observed / expected, 1.0))
                - (observed + finite) * np.log((observed + finite) / (expected + finite)))
    if not poisson.any():
        return nb
    return np.where(poisson, poisson_deviance(observed, expected), nb)


def count_deviance(observed: np.ndarray, expected: np.ndarray, halves: Halves,
                   loss: str) -> np.ndarray:
    """The Poisson or NB deviance of expected counts of half B (a block of all genes)."""
    if loss == "poisson":
        return poisson_deviance(observed, expected)
    if halves.b_sizes is None or halves.b_sizes.size != observed.shape[-1]:
        raise ValueError("The 'nb' loss scores blocks of every gene against the per-gene NB "
                         "sizes of the halves; none (or another number of genes) were given.")
    return nb_deviance(observed, expected, halves.b_sizes)


def means_loss(means_a, observed, halves: Halves, rows, table, loss: str) -> float:
    """Summed loss of predicted Poisson means of half A's normalised counts, for cells ``rows``.

    For a family that predicts means (scVI's normalised expression times half A's depth): the
    count losses score the expected counts of half B that they imply; ``"mse"`` scores the
    expected transformed value of a count with that mean, the scale every family predicts.
    """
    if loss in COUNT_LOSSES:
        expected = halves.expected_b_counts(means_a, rows)
        return float(count_deviance(observed, expected, halves, loss).sum())
    values = np.interp(means_a, table.means, table.grid)
    return block_loss(values, observed, halves, rows, table, loss)


def block_loss(prediction, observed, halves: Halves, rows, table, loss: str) -> float:
    """Summed loss of a dense block of predictions of half A's values against half B.

    Parameters
    ----------
    prediction
        Predictions on half A's transformed scale, for cells ``rows`` (all genes, or the
        genes of ``observed``).
    observed
        The matching dense block of :meth:`Halves.target`.
    halves
        The split, which knows the depth conversion and half A's library sizes.
    rows
        The cells of the block, to look up library sizes for the Poisson loss.
    table
        :meth:`Halves.conversion_table`, built once per calibration.
    loss
        ``"mse"``, ``"poisson"`` or ``"nb"`` (``"nb"`` only for blocks of every gene).

    Returns
    -------
    The sum of elementwise losses over the block.
    """
    conversion = halves.conversion
    if loss in COUNT_LOSSES:
        expected = halves.expected_b_counts(conversion.to_mean(prediction, table), rows)
        return float(count_deviance(observed, expected, halves, loss).sum())
    return float(np.sum((conversion.convert(prediction, table) - observed) ** 2))


def dense_rows(X, rows: slice) -> np.ndarray:
    """Rows of ``X`` as a dense float64 block (a bounded chunk, never the whole matrix)."""
    block = X[rows]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def row_chunks(n_rows: int, n_cols: int, budget_bytes: float = 64e6) -> list[slice]:
    """Slices of rows whose dense float64 blocks stay within ``budget_bytes``."""
    step = max(1, int(budget_bytes // (8 * max(n_cols, 1))))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


