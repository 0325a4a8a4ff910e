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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._validation import is_dask_array
from .losses import LOSSES, Halves, prediction_loss
from .referee import Referee, checked
from .results import CalibrationResult, expand_grid
from .runs import DEFAULT_P, DaskCounts, HalvesNeeds, SplitSettings, nb_scoring_sizes, run_splits

__all__ = ["DEFAULT_P", "CalibrationResult", "DaskCounts", "Family", "HalvesNeeds", "Knob",
           "SplitSettings", "WarmStart", "calibrate_callable_counts", "calibrate_counts",
           "counts_calibrator", "expand_grid", "run_splits"]


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
class WarmStart:
    """How a family's warm start is kept in the AnnData from ``calibrate_*`` to ``denoise_*``.

    ``save(adata, start, key)`` writes it (a None start removes an older one),
    ``load(adata, key)`` reads it back (None when absent or not of this data).
    """

    save: Callable
    load: Callable


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
    losses
        The losses the family can score (``"nb"`` needs predictions of every gene at once).
    needs_counts
        The family fits half A's raw counts (``Halves.a_counts``), not its normalised values.
    scores_b_values
        The family reads half B's normalised values (``Halves.b``). False (the Leiden
        family, which scores half B's counts) leaves them unmade when the loss is on counts:
        half B is held once, as counts.
    covariates
        Options that name ``obs`` columns (scVI's ``batch_key``): the front passes those
        columns as ``obs=``, which reach ``score`` as ``Halves.obs`` and ``fit`` as ``obs=``.
    returns_model
        The fronts take ``return_model=``: the model of the best setting (the first split's,
        from ``score``'s ``"fitted"`` extras) or of the final fit (``fitted.model``).
    halves_device
        ``halves_device(options, X, settings) -> torch device or None``: where the family
        wants each split made and scored (PCA's ``device`` option); None keeps numpy.
    split_defaults
        Split options whose default differs for this family (the Leiden family scores
        counts, so its ``loss`` defaults to ``"poisson"``).
    warm_start
        A :class:`WarmStart` when the final fit can start from the calibration's (PCA: from
        half A's components, so ``denoise_*`` pays for no second full SVD); ``score``
        returns it under the ``"start"`` extra and ``fit`` receives it as ``start=``.

    Notes
    -----
    A family's ``score`` may return ``(losses, extras)``. ``extras`` maps a name to one value
    per grid point (e.g. the number of clusters), averaged over splits into the params. Its
    entry ``"fitted"`` may hold one fitted model per grid point; the first split's are kept
    in ``CalibrationResult.fitted`` and never written to ``uns``; its entry ``"start"`` (one
    value, not per grid point) is the first split's warm start, kept in
    ``CalibrationResult.start``.
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
    losses: tuple[str, ...] = LOSSES
    needs_counts: bool = False
    scores_b_values: bool = True
    covariates: tuple[str, ...] = ()
    returns_model: bool = False
    warm_start: WarmStart | None = None
    halves_device: Callable | None = None
    split_defaults: dict = field(default_factory=dict)

    def default_settings(self, **changes) -> SplitSettings:
        """:class:`SplitSettings` with the family's own defaults, then ``changes``."""
        return SplitSettings(**{**self.split_defaults, **changes})

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
    obs=None,
    keep_fitted: bool = False,
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
    obs
        The cells' covariates (a DataFrame holding the columns that the family's
        :attr:`~Family.covariates` options name), for families that use them.
    keep_fitted
        Keep the models the family fitted on the first split in
        :attr:`CalibrationResult.fitted` (families whose ``score`` returns them).
    **options
        The family's grid argument (e.g. ``max_comps``), its own options and split options.

    Returns
    -------
    :class:`CalibrationResult` over the family's grid.
    """
    options = dict(options)
    from_keywords = SplitSettings.take(options, defaults=family.split_defaults)
    if settings is None:
        settings = from_keywords
    elif dataclasses.asdict(from_keywords) != dataclasses.asdict(family.default_settings()):
        raise TypeError("Pass split options either in settings= or as keywords, not both.")
    grid_value = options.pop(family.grid_arg, family.grid_default)
    own = family.take_options(options)
    if options:
        raise TypeError(
            f"Unexpected option(s) {sorted(options)} for the {family.name!r} family; it takes "
            f"{[family.grid_arg, *family.options, *SplitSettings.names()]}."
        )
    settings.check_options()
    if settings.loss not in family.losses:
        raise ValueError(
            f"loss={settings.loss!r} is not available for the {family.name} family; choose "
            f"one of {list(family.losses)}."
        )
    settings = settings.validate(X)
    if family.check_options is not None:
        family.check_options(own, X)
    obs = _checked_covariates(family, own, obs, X.shape[0])
    grid = family.grid.make_grid(grid_value, X.shape, own)
    if family.prepare_options is not None:
        own = family.prepare_options(own, X, settings)
    index = None if family.baseline_index is None else family.baseline_index(grid, own)
    referee = Referee(settings.loss, index)
    device = (None if family.halves_device is None or is_dask_array(X)
              else family.halves_device(own, X, settings))
    needs = HalvesNeeds(family.needs_counts, nb_scoring_sizes(X, settings), obs, device,
                        b_values=family.scores_b_values)
    extras: list[dict] = []
    fitted: list = []
    starts: list = []

    def kept(scored):
        if isinstance(scored, tuple):  # (losses, {name: one value per grid point})
            scored, extra = scored
            models = extra.pop("fitted", None)
            if models is not None and keep_fitted and not fitted:  # the first split's
                fitted.extend(models)
            start = extra.pop("start", None)
            if not starts:  # the first split's: later ones would only hold memory
                starts.append(start)
            extras.append(extra)
        return scored

    def score(halves: Halves, seed) -> np.ndarray:
        return referee.scored(halves, kept(family.score(referee.before(halves), grid, seed, own,
                                                        settings.loss, progress=progress)))

    score_dask = None
    if family.score_dask is not None:
        def score_dask(counts: DaskCounts, seed) -> np.ndarray:
            return referee.scored(None, kept(family.score_dask(counts, settings, grid, seed,
                                                               own)))

    curves = run_splits(X, settings, score, score_dask=score_dask, progress=progress,
                        family=family.name, needs=needs)
    params = dict(settings.params(), **{family.grid_arg: _plain(grid_value)}, **_plain(own))
    for name in extras[0] if extras else ():  # averaged over splits, one per grid point
        params[name] = np.mean([np.asarray(e[name], dtype=np.float64) for e in extras], axis=0)
    if is_dask_array(X):
        params["backend"] = "dask"
    if needs.nb_sizes is not None:
        params["nb_size"] = needs.nb_sizes
    result = CalibrationResult(family.knob, np.asarray(grid), curves, params,
                               fitted=fitted or None, start=starts[0] if starts else None)
    return checked(result, referee)


def _checked_covariates(family: Family, own: dict, obs, n_cells: int):
    """The ``obs`` columns that the family's covariate options name, checked; or None."""
    columns = [own[name] for name in family.covariates if own.get(name) is not None]
    if not columns:
        return None
    if obs is None or not hasattr(obs, "columns"):
        raise ValueError(
            f"The {family.name} family's {list(family.covariates)} name obs columns; pass the "
            "cells' covariates as obs= (a DataFrame), or use the tl function on an AnnData."
        )
    missing = [c for c in columns if c not in obs.columns]
    if missing:
        raise KeyError(f"obs has no column {missing[0]!r}; it has {list(obs.columns)[:10]}.")
    if len(obs) != n_cells:
        raise ValueError(f"obs has {len(obs)} rows for {n_cells} cells; pass one row per cell.")
    empty = [c for c in columns if obs[c].isna().any()]
    if empty:
        raise ValueError(f"obs[{empty[0]!r}] has missing values; fill them (e.g. 'unknown').")
    return obs[columns]


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
    needs = HalvesNeeds(nb_sizes=nb_scoring_sizes(X, settings))
    referee = Referee(settings.loss)

    def score(halves: Halves, seed) -> np.ndarray:
        referee.before(halves)
        return referee.scored(halves, [_scored(denoiser, combo, halves, settings.loss)
                                       for combo in combos])

    curves = run_splits(X, settings, score, progress=progress, family="a callable denoiser",
                        needs=needs)
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
