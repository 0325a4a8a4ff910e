"""Step 4, the engine: score a denoiser family's whole grid over splits and keep the curve.

Every single-cell family is a :class:`Family` record (its knob, its grid, how to score the
grid from one fit, how to denoise and store). :func:`calibrate_counts` runs any record the
same way, on any backend:

1. :class:`SplitSettings` checks the counts and the options once, before any work, and
   resolves ``overdispersion="estimate"``;
2. :func:`run_splits` draws ``n_splits`` independent splits (or K folds each), in memory or
   chunk by chunk on a dask array, and asks the record to score its grid on each;
3. the curves become one :class:`CalibrationResult`, the record type of both domains (the
   image calibration subclasses it). A non-finite loss never wins.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._compat import moved_names
from ._dask import check_dask_counts, checked_library_sizes, rows_chunked
from ._progress import progress_bar
from ._rng import RandomState, check_random_state, spawn_seeds
from ._validation import (
    check_choice,
    check_counts,
    check_fraction,
    check_matrix,
    check_no_empty_cells,
    is_dask_array,
)
from .diagnostics import estimate_overdispersion
from .losses import LOSSES, Halves, halves_from_counts, prediction_loss, prepare_halves
from .referee import Referee, checked
from .results import CalibrationResult, expand_grid
from .splitting import SPLIT_METHODS, gene_sizes, split_folds
from .transforms import TRANSFORMS, library_sizes

__all__ = ["DEFAULT_P", "CalibrationResult", "DaskCounts", "Family", "Knob",
           "SplitSettings", "calibrate_callable_counts", "calibrate_counts", "counts_calibrator",
           "expand_grid", "run_splits"]

# The share of molecules in the fitted half. Measured over 30 synthetic and CellBench cases
# (benchmarks/RESULTS.md, "The split fraction p"): the paper's 0.5 picks ranks that suit
# half the depth and runs low on shallow data; MCV's 0.9 leaves a 10% target so noisy that it
# over-picks on small data; 0.7 had the lowest mean, median and worst regret.
DEFAULT_P = 0.7


@dataclass(frozen=True, kw_only=True)
class SplitSettings:
    """The options every calibration shares: how to split, transform and score.

    Attributes
    ----------
    p
        Share of molecules in half A, the half that is fitted.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"`` after library-size normalisation.
    loss
        ``"mse"`` on the transformed scale, or ``"poisson"`` deviance on half B's counts.
    n_splits
        Independent splits whose curves are averaged.
    random_state
        Seed; the same seed gives identical curves.
    split
        ``"binomial"`` (Poisson counts) or ``"negative_binomial"`` (beta-binomial shares).
    overdispersion
        NB size per gene, one number, or ``"estimate"``; only with the NB split.
    sample_ratio
        MCV's overlap correction; None splits plainly.
    folds
        K-fold thinning instead of one split: each fold scored against the other K-1.
    """

    p: float = DEFAULT_P
    transform: str = "sqrt"
    loss: str = "mse"
    n_splits: int = 1
    random_state: RandomState = 0
    split: str = "binomial"
    overdispersion: Any = None
    sample_ratio: float | None = None
    folds: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def take(cls, options: dict) -> SplitSettings:
        """Settings from the split options in ``options``, which are removed from it."""
        return cls(**{name: options.pop(name) for name in cls.names() if name in options})

    def validate(self, X) -> SplitSettings:
        """Check ``X`` and every option before any work; return settings ready to split ``X``.

        In memory the counts are checked whole and ``overdispersion="estimate"`` is estimated
        once, for every split. For a dask array what can be known without computing is
        checked here; the counts themselves are checked chunk by chunk on the first pass.
        """
        self.check_options()
        check_matrix(X)
        if X.shape[0] < 2:
            raise ValueError(
                f"X has {X.shape[0]} cell(s); calibration needs at least 2 cells to fit on "
                "one half and score on the other."
            )
        if X.shape[1] < 1:
            raise ValueError("X has no genes; pass counts with at least one gene.")
        settings = self
        if self.folds is not None:
            # K-fold thinning: each fold is scored against the rest, a share (K-1)/K.
            settings = dataclasses.replace(self, p=(self.folds - 1) / self.folds)
        if is_dask_array(X):
            return settings._validate_dask(X)
        check_counts(X)
        check_no_empty_cells(library_sizes(X))
        if isinstance(self.overdispersion, str):
            return dataclasses.replace(settings, overdispersion=estimate_overdispersion(X))
        gene_sizes(X, self.split, self.overdispersion)  # checks shape and values
        return settings

    def check_options(self) -> None:
        """Check every option (not the data); raise naming the option and the fix."""
        check_choice(self.transform, TRANSFORMS, name="transform")
        check_choice(self.loss, LOSSES, name="loss")
        check_choice(self.split, SPLIT_METHODS, name="split")
        check_fraction(self.p)
        check_random_state(self.random_state)
        if not _is_whole(self.n_splits) or self.n_splits < 1:
            raise ValueError(f"n_splits={self.n_splits!r} must be a whole number of at least 1.")
        if self.sample_ratio:
            check_fraction(self.sample_ratio, name="sample_ratio")
            if self.split != "binomial":
                raise ValueError("sample_ratio (the overlap correction) needs split='binomial'.")
        if self.folds is not None:
            if not _is_whole(self.folds) or self.folds < 2:
                raise ValueError(f"folds={self.folds!r} must be an integer of at least 2.")
            if self.sample_ratio:
                raise ValueError("folds and sample_ratio cannot be combined; drop one of them.")
        if isinstance(self.overdispersion, str):
            check_choice(self.overdispersion, ("estimate",), name="overdispersion")
            if self.split != "negative_binomial":
                raise ValueError(
                    "overdispersion='estimate' applies to split='negative_binomial' only."
                )

    def _validate_dask(self, X) -> SplitSettings:
        check_dask_counts(X)
        if self.folds is not None:
            raise ValueError("folds is not supported on dask arrays; use n_splits instead.")
        if isinstance(self.overdispersion, str):
            raise ValueError(
                "overdispersion='estimate' needs every cell in memory; on a dask array pass "
                "the NB sizes per gene, e.g. "
                "sc_noise2self.diagnostics.estimate_overdispersion(adata[:20000].X.compute())."
            )
        gene_sizes(X, self.split, self.overdispersion)
        return self

    def params(self) -> dict:
        """The settings as a dict for the result record."""
        seed = self.random_state
        record = {name: getattr(self, name) for name in self.names()}
        record["random_state"] = (
            int(seed) if isinstance(seed, numbers.Integral) else (None if seed is None else
                                                                  "custom")
        )
        return record


def _is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class DaskCounts:
    """A dask array of counts prepared once for every split: whole rows, checked totals."""

    X: Any
    totals: np.ndarray
    depth: float


def best_value(result: CalibrationResult):
    """The knob value a calibration chose (a family's default ``choose``)."""
    return result.best


@dataclass(frozen=True)
class Knob:
    """The parameter a family's loss chooses, and how its grid is given.

    Attributes
    ----------
    name
        The knob (``"n_comps"``); ``denoise_*`` takes it, None meaning "calibrate first".
    grid_arg
        How ``calibrate_*`` takes the grid (``"max_comps"``, ``"ks"``).
    default
        The default of ``grid_arg`` (None: the family's default grid).
    make_grid
        ``make_grid(grid_arg_value, shape, options) -> grid``: the checked grid to score.
    from_values
        ``tl.calibrate(param_grid={knob: values})`` to the value of ``grid_arg``.
    """

    name: str
    grid_arg: str
    default: Any
    make_grid: Callable
    from_values: Callable = list


def largest(values: list) -> int:
    """The largest of a list of grid values (for knobs whose grid is ``0..largest``)."""
    return int(max(values))


@dataclass(frozen=True)
class Family:
    """A single-cell denoiser family, declared once; the engine and ``tl`` do the rest.

    Attributes
    ----------
    name
        Method name (``"pca"``, ``"knn"``, ...), also the key suffix in ``uns``.
    grid
        The :class:`Knob` and its grid.
    score
        ``score(halves, grid, seed, options, loss, progress=) -> losses``: fit once on half
        A, score every grid point against half B.
    fit
        ``fit(counts, value, options, transform=, random_state=, max_layer_gb=) -> fitted``:
        denoise the full counts at the chosen knob value (``fitted.depth`` is recorded).
    store
        ``store(adata, fitted, key, max_layer_gb) -> dict``: write the fit into the AnnData
        and return extra entries for ``uns[key]``.
    values
        ``values(adata, key, columns) -> array``: denoised values of chosen genes, read back
        from what ``store`` wrote (for :func:`~sc_noise2self.tl.denoised_values`).
    options
        The family's own options and their defaults.
    option_docs
        Docstring text of the knob, the grid argument and each option, by name.
    summary, denoise_summary, writes
        Texts of the generated ``calibrate_*`` and ``denoise_*`` docstrings.
    check_options
        ``check_options(options, X)`` raises on bad options before any work, or None.
    score_dask
        ``score_dask(counts: DaskCounts, settings, grid, seed, options) -> losses`` for dask
        arrays, or None when the family needs counts in memory.
    choose
        ``choose(result) -> value``: the knob value ``denoise_*`` uses from a calibration.
    fit_options
        The options that also shape the final fit (the rest only shape the calibration).
    denoise_losses
        The losses whose calibration ``denoise_*`` can use.
    baseline_index
        ``baseline_index(grid, options) -> int | None``: the grid point that IS the gene-mean
        baseline (PCA's rank 0), so the referee reads it off the curve instead of scoring it
        again; None scores the baseline on every split.
    prepare_options
        ``prepare_options(options, X, settings) -> options``: resolve options that depend on
        the data once, before the splits (the Leiden family's calibrated PCA rank), or None.
    fit_after_calibrate
        ``calibrate_*`` also fits at the best value and stores it (clustering writes its
        labels at the best resolution).

    A family's ``score`` may return ``(losses, extras)``: ``extras`` maps a name to one value
    per grid point (e.g. the number of clusters), averaged over splits into the params.
    """

    name: str
    grid: Knob
    score: Callable
    fit: Callable
    store: Callable
    values: Callable
    options: dict = field(default_factory=dict)
    option_docs: dict = field(default_factory=dict)
    summary: str = ""
    denoise_summary: str = ""
    writes: str = ""
    check_options: Callable | None = None
    score_dask: Callable | None = None
    choose: Callable = best_value
    fit_options: tuple[str, ...] = ()
    denoise_losses: tuple[str, ...] = LOSSES
    baseline_index: Callable | None = None
    prepare_options: Callable | None = None
    fit_after_calibrate: bool = False

    @property
    def knob(self) -> str:
        """The parameter the loss chooses."""
        return self.grid.name

    @property
    def grid_arg(self) -> str:
        """How ``calibrate_*`` takes the grid."""
        return self.grid.grid_arg

    @property
    def grid_default(self):
        """The default of :attr:`grid_arg`."""
        return self.grid.default

    @property
    def key(self) -> str:
        """Default ``key_added``: ``"noise2self"`` for PCA, ``"noise2self_<name>"`` else."""
        return "noise2self" if self.name == "pca" else f"noise2self_{self.name}"

    def take_options(self, options: dict) -> dict:
        """The family's options from ``options`` (removed from it), defaults filled in."""
        return {name: options.pop(name, default) for name, default in self.options.items()}


def calibrate_counts(
    X,
    family: Family,
    /,
    *,
    settings: SplitSettings | None = None,
    progress: bool | None = None,
    **options,
) -> CalibrationResult:
    """Self-supervised loss of a family over its whole grid, on raw counts.

    Parameters
    ----------
    X
        Raw counts, cells x genes: numpy, scipy.sparse, or dask (for families with a dask
        backend).
    family
        The :class:`Family` record.
    settings
        Split options; alternatively pass them as keywords (``p=0.5``).
    progress
        A progress bar over splits; None shows it only on a terminal.
    **options
        The family's grid argument (e.g. ``max_comps``), its own options and split options.

    Returns
    -------
    :class:`CalibrationResult` over the family's grid.
    """
    options = dict(options)
    from_keywords = SplitSettings.take(options)
    if settings is None:
        settings = from_keywords
    elif dataclasses.asdict(from_keywords) != dataclasses.asdict(SplitSettings()):
        raise TypeError("Pass split options either in settings= or as keywords, not both.")
    grid_value = options.pop(family.grid_arg, family.grid_default)
    own = family.take_options(options)
    if options:
        raise TypeError(
            f"Unexpected option(s) {sorted(options)} for the {family.name!r} family; it takes "
            f"{[family.grid_arg, *family.options, *SplitSettings.names()]}."
        )
    settings = settings.validate(X)
    if family.check_options is not None:
        family.check_options(own, X)
    grid = family.grid.make_grid(grid_value, X.shape, own)
    if family.prepare_options is not None:
        own = family.prepare_options(own, X, settings)
    index = None if family.baseline_index is None else family.baseline_index(grid, own)
    referee = Referee(settings.loss, index)
    extras: list[dict] = []

    def score(halves: Halves, seed) -> np.ndarray:
        scored = family.score(referee.before(halves), grid, seed, own, settings.loss,
                              progress=progress)
        if isinstance(scored, tuple):  # (losses, {name: one value per grid point})
            scored, extra = scored
            extras.append(extra)
        return referee.scored(halves, scored)

    score_dask = None
    if family.score_dask is not None:
        def score_dask(counts: DaskCounts, seed) -> np.ndarray:
            return referee.scored(None, family.score_dask(counts, settings, grid, seed, own))

    curves = run_splits(X, settings, score, score_dask=score_dask, progress=progress,
                        family=family.name)
    params = dict(settings.params(), **{family.grid_arg: _plain(grid_value)}, **_plain(own))
    for name in extras[0] if extras else ():  # averaged over splits, one per grid point
        params[name] = np.mean([np.asarray(e[name], dtype=np.float64) for e in extras], axis=0)
    if is_dask_array(X):
        params["backend"] = "dask"
    return checked(CalibrationResult(family.knob, np.asarray(grid), curves, params), referee)


def counts_calibrator(family: Family) -> Callable:
    """The array-level ``calibrate_<family>_counts(X, **options)`` of a family.

    Parameters
    ----------
    family
        The family's record.

    Returns
    -------
    A function ``(X, **options) -> CalibrationResult``, :func:`calibrate_counts` with the
    family bound.
    """

    def calibrate(X, **options) -> CalibrationResult:
        return calibrate_counts(X, family, **options)

    calibrate.__name__ = calibrate.__qualname__ = f"calibrate_{family.name}_counts"
    calibrate.__doc__ = (
        f"Array-level {family.name} calibration: :func:`calibrate_counts` with its record.\n\n"
        "Parameters\n----------\nX\n    Raw counts, cells x genes.\n**options\n"
        f"    ``{family.grid_arg}``, the family's options "
        f"({', '.join(family.options) or 'none'}), split options or ``settings=``, and "
        "``progress``.\n\nReturns\n-------\nThe :class:`CalibrationResult` over the "
        f"{family.knob} grid.\n"
    )
    return calibrate


def _plain(value):
    """Options as plain Python for the record (tuples to lists, None kept for h5ad later)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def run_splits(X, settings: SplitSettings, score_split, *, score_dask=None,
               progress: bool | None = None, family: str = "this family"):
    """Score each of ``settings.n_splits`` independent splits of ``X`` (validated already).

    Parameters
    ----------
    X
        Raw counts, cells x genes, in memory or a dask array.
    settings
        How to split, transform and score (from :meth:`SplitSettings.validate`).
    score_split
        ``score_split(halves, seed) -> losses`` for counts in memory.
    score_dask
        ``score_dask(DaskCounts, seed) -> losses`` for a dask array, or None when the
        family needs counts in memory.
    progress
        A progress bar over splits; None shows it only on a terminal.
    family
        Name used in the error for a dask array without a dask backend.

    Returns
    -------
    Array ``(n_splits * max(folds, 1), n_grid)`` of losses.
    """
    seeds = spawn_seeds(settings.random_state, settings.n_splits)
    if is_dask_array(X):
        if score_dask is None:
            raise ValueError(
                f"{family} needs the counts in memory and got a dask array; compute them "
                "(e.g. adata.X = adata.X.compute()) or calibrate PCA, which runs on dask."
            )
        counts = _prepare_dask(X)

        def curves_of(seed):
            yield score_dask(counts, seed)
    else:
        def curves_of(seed):
            for halves in _halves_of(X, settings, seed):
                yield score_split(halves, seed)

    curves = [np.asarray(curve, dtype=np.float64)
              for seed in progress_bar(seeds, desc=f"{family}: splits", progress=progress)
              for curve in curves_of(seed)]
    return np.vstack(curves)


def _prepare_dask(X) -> DaskCounts:
    """One pass over the chunks: every cell's total, the counts checked on the way."""
    X = rows_chunked(X)
    totals = checked_library_sizes(X)
    check_no_empty_cells(totals)
    return DaskCounts(X, totals, float(np.median(totals)))


def _halves_of(X, settings: SplitSettings, seed):
    """The halves one seed gives: one split, or with ``folds`` each fold against the rest."""
    keep_counts = settings.loss == "poisson"
    if settings.folds is None:
        yield prepare_halves(
            X, p=settings.p, transform=settings.transform, random_state=seed,
            keep_counts=keep_counts, split=settings.split,
            overdispersion=settings.overdispersion, sample_ratio=settings.sample_ratio,
        )
        return
    depth = float(np.median(library_sizes(X)))
    parts = split_folds(X, settings.folds, random_state=seed, method=settings.split,
                        overdispersion=settings.overdispersion)
    for k, held_out in enumerate(parts):
        rest = sum(part for i, part in enumerate(parts) if i != k)
        yield halves_from_counts(rest, held_out.copy(), p=settings.p,
                                 transform=settings.transform, depth=depth,
                                 keep_counts=keep_counts)


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
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable, got {type(denoiser).__name__}.")
    combos = expand_grid(param_grid)
    settings = (settings or SplitSettings()).validate(X)

    referee = Referee(settings.loss)

    def score(halves: Halves, seed) -> np.ndarray:
        referee.before(halves)
        return referee.scored(halves, [_scored(denoiser, combo, halves, settings.loss)
                                       for combo in combos])

    curves = run_splits(X, settings, score, progress=progress, family="a callable denoiser")
    names = list(param_grid)
    params = dict(settings.params(), grid_params=[repr(c) for c in combos])
    if len(names) == 1:
        grid = np.asarray([c[names[0]] for c in combos])
        return checked(CalibrationResult(names[0], grid, curves, params), referee)
    return checked(CalibrationResult("combination", np.arange(len(combos)), curves, params),
                   referee)


def _scored(denoiser, combo: dict, halves: Halves, loss: str) -> float:
    """The loss of one setting of a user's denoiser (NaN, never the winner, if not finite)."""
    prediction = denoiser(halves.a, **combo)
    if not hasattr(prediction, "shape"):
        raise TypeError(
            f"The denoiser returned {type(prediction).__name__} for {combo}; it must return a "
            "cells x genes array like its input."
        )
    return prediction_loss(prediction, halves, loss)


__getattr__ = moved_names(__name__, {
    name: f"sc_noise2self.losses:{name}"
    for name in ("block_loss", "poisson_deviance", "dense_rows", "row_chunks")
})
