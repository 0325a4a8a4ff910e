"""Steps 2-4 shared by every single-cell denoiser family.

Prepare the two halves, score predictions of half B made from half A, and keep the whole
loss curve.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import sparse

from ._validation import check_choice, check_counts, check_fraction, check_no_empty_cells
from .splitting import RandomState, spawn_seeds, split_counts
from .transforms import (
    DepthConversion,
    Transform,
    apply_transform,
    library_sizes,
    normalize_to_depth,
)

# The share of molecules in the fitted half. Measured over 30 synthetic and CellBench cases
# (benchmarks/RESULTS.md, "The split fraction p"): the paper's 0.5 picks ranks that suit
# half the depth and runs low on shallow data; MCV's 0.9 leaves a 10% target so noisy that it
# over-picks on small data; 0.7 had the lowest mean, median and worst regret.
DEFAULT_P = 0.7

Loss = Literal["mse", "poisson"]
LOSSES: tuple[str, ...] = ("mse", "poisson")


@dataclass
class Halves:
    """Half A (the input) and half B (the target) of one molecule split, ready to score.

    ``a`` and ``b`` are library-size normalised to depths ``p * depth`` and ``(1 - p) * depth``
    and transformed; ``b_counts`` keeps half B's raw counts for the Poisson loss (else None);
    ``max_value`` is the largest transformed value in either half.
    """

    a: Any
    b: Any
    b_counts: Any
    totals_a: np.ndarray
    p: float
    depth: float
    transform: str
    max_value: float

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
        """What a prediction is scored against: half B transformed, or its counts (Poisson)."""
        return self.b_counts if loss == "poisson" else self.b

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
        Keep half B's raw counts (needed by the Poisson loss).
    split, overdispersion, sample_ratio
        Passed to :func:`~sc_noise2self.split_counts` (``split`` as ``method``).

    Returns
    -------
    The prepared :class:`Halves`.
    """
    if depth is None:
        depth = float(np.median(library_sizes(X)))
    counts_a, counts_b = split_counts(
        X, p, random_state=random_state, method=split, overdispersion=overdispersion,
        sample_ratio=sample_ratio,
    )
    return halves_from_counts(counts_a, counts_b, p=p, transform=transform, depth=depth,
                              keep_counts=keep_counts)


def halves_from_counts(counts_a, counts_b, *, p: float, transform: str, depth: float,
                       keep_counts: bool = False) -> Halves:
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
        Keep half B's raw counts (needed by the Poisson loss).

    Returns
    -------
    The prepared :class:`Halves`.
    """
    totals_a = library_sizes(counts_a)
    # The halves are ours: normalise them in place, so no copy of their patterns is made.
    a = normalize_to_depth(counts_a, p * depth, totals_a, inplace=True)
    b_counts = None
    if keep_counts:  # CSR (or dense), so that rows can be sliced for scoring
        b_counts = counts_b.tocsr(copy=True) if sparse.issparse(counts_b) else counts_b.copy()
    b = normalize_to_depth(counts_b, (1.0 - p) * depth, inplace=True)
    del counts_a, counts_b
    apply_transform(a, transform, inplace=True)
    apply_transform(b, transform, inplace=True)
    max_value = max(_max_value(a), _max_value(b))
    return Halves(a, b, b_counts, totals_a, p, depth, transform, max_value)


def _max_value(X) -> float:
    values = X.data if sparse.issparse(X) else X
    return float(values.max()) if values.size else 0.0


@dataclass(frozen=True)
class SplitSettings:
    """The options every calibrate function shares: how to split, transform and score."""

    p: float = DEFAULT_P
    transform: str = "sqrt"
    loss: str = "mse"
    n_splits: int = 1
    random_state: RandomState = 0
    split: str = "binomial"
    overdispersion: Any = None
    sample_ratio: float | None = None
    folds: int | None = None

    def validate(self, X) -> SplitSettings:
        """Check the counts ``X`` and every setting; return the settings ready to split ``X``.

        Raises with a hint on what to pass. ``overdispersion="estimate"`` is estimated here,
        once for every split.
        """
        from .splitting import SPLIT_METHODS, estimate_overdispersion

        check_calibration_input(X, p=self.p, transform=self.transform, loss=self.loss)
        if self.n_splits < 1:
            raise ValueError(f"n_splits={self.n_splits} must be at least 1.")
        check_choice(self.split, SPLIT_METHODS, name="split")
        if self.folds is not None:
            if not isinstance(self.folds, int | np.integer) or self.folds < 2:
                raise ValueError(f"folds={self.folds!r} must be an integer of at least 2.")
            if self.sample_ratio:
                raise ValueError("folds and sample_ratio cannot be combined.")
            # K-fold thinning: each fold is scored against the rest, a share (K-1)/K.
            self = dataclasses.replace(self, p=(self.folds - 1) / self.folds)
        if isinstance(self.overdispersion, str) and self.split == "negative_binomial":
            check_choice(self.overdispersion, ("estimate",), name="overdispersion")
            return dataclasses.replace(self, overdispersion=estimate_overdispersion(X))
        return self

    def params(self) -> dict:
        """The settings as a dict for the result record."""
        seed = self.random_state
        return dict(
            p=self.p, transform=self.transform, loss=self.loss, n_splits=self.n_splits,
            split=self.split, overdispersion=self.overdispersion, sample_ratio=self.sample_ratio,
            folds=self.folds,
            random_state=int(seed) if isinstance(seed, numbers.Integral) else (
                None if seed is None else "custom"
            ),
        )


def run_splits(X, settings: SplitSettings, score_split, *, progress: bool | None = None):
    """Score each of ``settings.n_splits`` independent splits of ``X`` (validated already).

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    settings
        How to split, transform and score.
    score_split
        ``score_split(halves, seed) -> losses``: fits on ``halves.a``, returns one loss per
        grid point against ``halves.b``.
    progress
        A progress bar over splits; None shows it only on a terminal.

    Returns
    -------
    Array ``(n_splits, n_grid)`` of losses.
    """
    from tqdm.auto import tqdm

    seeds = spawn_seeds(settings.random_state, settings.n_splits)
    hide = True if settings.n_splits == 1 else (None if progress is None else not progress)
    curves = []
    for seed in tqdm(seeds, desc="splits", disable=hide):
        for halves in _halves_of(X, settings, seed):
            curves.append(np.asarray(score_split(halves, seed), dtype=np.float64))
    return np.vstack(curves)


def _halves_of(X, settings: SplitSettings, seed):
    """The halves one seed gives: one split, or with ``folds`` each fold against the rest."""
    if settings.folds is None:
        yield prepare_halves(
            X, p=settings.p, transform=settings.transform, random_state=seed,
            keep_counts=settings.loss == "poisson", split=settings.split,
            overdispersion=settings.overdispersion, sample_ratio=settings.sample_ratio,
        )
        return
    from .splitting import split_folds

    depth = float(np.median(library_sizes(X)))
    parts = split_folds(X, settings.folds, random_state=seed, method=settings.split,
                        overdispersion=settings.overdispersion)
    for k, held_out in enumerate(parts):
        rest = sum(part for i, part in enumerate(parts) if i != k)
        yield halves_from_counts(rest, held_out.copy(), p=settings.p,
                                 transform=settings.transform, depth=depth,
                                 keep_counts=settings.loss == "poisson")


def calibrate_callable_counts(
    X,
    denoiser,
    param_grid: dict[str, Iterable],
    *,
    settings: SplitSettings | None = None,
    progress: bool | None = None,
) -> CalibrationResult:
    """Self-supervised loss of any denoiser of counts, over a grid of its parameters.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    denoiser
        ``denoiser(train_half, **params) -> prediction``: ``train_half`` is half A, library-size
        normalised and transformed (cells x genes, the input's sparse or dense kind); the
        prediction is a cells x genes array on the same scale.
    param_grid
        ``{name: values}``, expanded as a product.
    settings
        Split, transform and loss options.
    progress
        A progress bar over splits; None shows it only on a terminal.

    Returns
    -------
    :class:`CalibrationResult`. With one parameter its values are the grid; with several the
    grid is ``0..n-1`` and ``params['grid_params']`` lists each combination.
    """
    settings = settings or SplitSettings()
    settings = settings.validate(X)
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable, got {type(denoiser).__name__}.")
    combos = expand_grid(param_grid)

    def score(halves: Halves, seed) -> np.ndarray:
        return np.array([prediction_loss(denoiser(halves.a, **c), halves, settings.loss)
                         for c in combos])

    curves = run_splits(X, settings, score, progress=progress)
    names = list(param_grid)
    params = dict(settings.params(), grid_params=[repr(c) for c in combos])
    if len(names) == 1:
        return CalibrationResult(names[0], np.asarray([c[names[0]] for c in combos]), curves,
                                 params)
    return CalibrationResult("combination", np.arange(len(combos)), curves, params)


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


def check_calibration_input(X, *, p: float, transform: str, loss: str, name: str = "X") -> float:
    """Validate counts and options shared by every calibrate function; return ``p``."""
    from .transforms import TRANSFORMS

    check_choice(transform, TRANSFORMS, name="transform")
    check_choice(loss, LOSSES, name="loss")
    p = check_fraction(p)
    check_counts(X, name=name)
    if X.shape[0] < 2:
        raise ValueError(
            f"{name} has {X.shape[0]} cell(s); calibration needs at least 2 cells to fit on one "
            "half and score on the other."
        )
    check_no_empty_cells(library_sizes(X), name=name)
    return p


def expand_grid(param_grid: dict[str, Iterable]) -> list[dict[str, Any]]:
    """Every combination of a dict of lists, as a list of dicts (a Cartesian product).

    Parameters
    ----------
    param_grid
        ``{name: values}``; every list must be non-empty.

    Returns
    -------
    One dict per combination, in ``itertools.product`` order.
    """
    if not isinstance(param_grid, dict) or not param_grid:
        raise ValueError(
            f"param_grid={param_grid!r} is empty or not a dict; pass a dict of lists, e.g. "
            "{'weight': [0.05, 0.1, 0.2]}."
        )
    values = {
        name: list(np.atleast_1d(v)) if np.isscalar(v) else list(v)
        for name, v in param_grid.items()
    }
    empty = [name for name, v in values.items() if not v]
    if empty:
        raise ValueError(f"param_grid has no values for {empty}; give each parameter a list.")
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def poisson_deviance(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Elementwise Poisson deviance ``2 * (y log(y / mu) - (y - mu))``, with ``0 log 0 = 0``."""
    expected = np.maximum(expected, 1e-8)
    ratio = np.where(observed > 0, observed / expected, 1.0)
    return 2.0 * (observed * np.log(ratio) - (observed - expected))


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
        ``"mse"`` or ``"poisson"``.

    Returns
    -------
    The sum of elementwise losses over the block.
    """
    conversion = halves.conversion
    if loss == "poisson":
        expected = halves.expected_b_counts(conversion.to_mean(prediction, table), rows)
        return float(poisson_deviance(observed, expected).sum())
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


@dataclass
class CalibrationResult:
    """The whole loss curve of one calibration, and everything needed to repeat it.

    Attributes
    ----------
    param
        Name of the knob (e.g. ``"n_comps"``).
    grid
        Values of the knob that were scored.
    loss_per_split
        Array ``(n_splits, len(grid))`` of self-supervised losses.
    params
        The settings of the run.
    """

    param: str
    grid: np.ndarray
    loss_per_split: np.ndarray
    params: dict = field(default_factory=dict)

    @property
    def loss(self) -> np.ndarray:
        """The loss curve, averaged over splits."""
        return self.loss_per_split.mean(axis=0)

    @property
    def loss_std(self) -> np.ndarray:
        """Spread of the loss across splits (zeros for a single split)."""
        return self.loss_per_split.std(axis=0)

    @property
    def best_index(self) -> int:
        """Index of the lowest mean loss in ``grid``."""
        return int(np.argmin(self.loss))

    @property
    def best(self):
        """The knob value with the lowest mean loss."""
        value = self.grid[self.best_index]
        return value.item() if isinstance(value, np.generic) else value

    def to_dict(self) -> dict:
        """A dict for ``adata.uns`` that survives writing to h5ad."""
        return {
            "params": {**_h5ad_safe(self.params), "param": self.param},
            "grid": np.asarray(self.grid),
            "loss": self.loss,
            "loss_std": self.loss_std,
            "loss_per_split": self.loss_per_split,
            "best": self.best,
        }

    @classmethod
    def from_dict(cls, record: dict) -> CalibrationResult:
        """Rebuild a result from what :meth:`to_dict` wrote (e.g. read back from ``uns``)."""
        params = dict(record.get("params", {}))
        param = str(params.pop("param", "n_comps"))
        per_split = record.get("loss_per_split")
        if per_split is None:
            per_split = np.asarray(record["loss"])[None, :]
        return cls(param, np.asarray(record["grid"]), np.atleast_2d(per_split), params)


def _h5ad_safe(params: dict) -> dict:
    # h5ad cannot store None; keep the key so a run can be repeated.
    return {k: ("None" if v is None else v) for k, v in params.items()}
