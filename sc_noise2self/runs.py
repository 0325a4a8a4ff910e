"""Step 2 of the engine: the split options, and the run of a family's scoring over splits.

:class:`SplitSettings` checks the counts and every split option once, before any work, and
resolves ``overdispersion="estimate"``. :func:`run_splits` draws ``n_splits`` independent
splits (or K folds each), in memory or chunk by chunk on a dask array, carries what a family
needs beside the normalised halves (:class:`HalvesNeeds`: half A's raw counts, the NB sizes of
the ``"nb"`` loss, the cells' covariates), and collects one loss curve per split.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

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
from .losses import ALL_LOSSES, device_halves, halves_from_counts, prepare_halves
from .splitting import SPLIT_METHODS, gene_sizes, split_folds
from .transforms import TRANSFORMS, library_sizes

__all__ = ["DEFAULT_P", "DaskCounts", "HalvesNeeds", "SplitSettings", "nb_scoring_sizes",
           "run_splits"]

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
        ``"poisson"`` deviance on half B's counts (the default), ``"mse"`` on the
        transformed scale, or ``"nb"`` deviance at per-gene NB sizes (for the families
        whose :attr:`Family.losses` have it).
    n_splits
        Independent splits whose curves are averaged.
    random_state
        Seed; the same seed gives identical curves.
    split
        ``"negative_binomial"`` (beta-binomial shares, the default) or ``"binomial"``
        (right for Poisson counts only).
    overdispersion
        NB size per gene, one number, or ``"estimate"``; only with the NB split, where None
        means ``"estimate"``.
    sample_ratio
        MCV's overlap correction; None splits plainly.
    folds
        K-fold thinning instead of one split: each fold scored against the other K-1.

    Notes
    -----
    The defaults are the only combination whose loss chose the gene-mean baseline for every
    family on realistic nulls (library sizes log-normal, per-gene NB sizes; issue 24 in
    ``benchmarks/RESULTS.md``): a binomial split of overdispersed counts leaves each cell's
    own rate in both halves, and squared error on depth-normalised transformed values rewards
    sorting cells by depth.
    """

    p: float = DEFAULT_P
    transform: str = "sqrt"
    loss: str = "poisson"
    n_splits: int = 1
    random_state: RandomState = 0
    split: str = "negative_binomial"
    overdispersion: Any = None
    sample_ratio: float | None = None
    folds: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def take(cls, options: dict, defaults: dict | None = None) -> SplitSettings:
        """Settings from the split options in ``options`` (removed from it) over ``defaults``."""
        given = {name: options.pop(name) for name in cls.names() if name in options}
        return cls(**{**(defaults or {}), **given})

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
        if self.estimates_sizes:
            return settings.with_estimated_sizes(X)
        gene_sizes(X, self.split, self.overdispersion)  # checks shape and values
        return settings

    def check_options(self) -> None:
        """Check every option (not the data); raise naming the option and the fix."""
        check_choice(self.transform, TRANSFORMS, name="transform")
        check_choice(self.loss, ALL_LOSSES, name="loss")
        check_choice(self.split, SPLIT_METHODS, name="split")
        check_fraction(self.p)
        check_random_state(self.random_state)
        if not _is_whole(self.n_splits) or self.n_splits < 1:
            raise ValueError(f"n_splits={self.n_splits!r} must be a whole number of at least 1.")
        if self.sample_ratio:
            check_fraction(self.sample_ratio, name="sample_ratio")
            if self.split != "binomial":
                raise ValueError(
                    "sample_ratio (MCV's overlap correction) works with split='binomial' "
                    "only; pass split='binomial' with it (the default split is "
                    "'negative_binomial')."
                )
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
        if self.estimates_sizes:
            return self.with_estimated_sizes(X)  # computes only the sampled cells' rows
        gene_sizes(X, self.split, self.overdispersion)
        return self

    @property
    def estimates_sizes(self) -> bool:
        """Whether the NB split's sizes are to be estimated (``"estimate"``, or None)."""
        return self.split == "negative_binomial" and (
            self.overdispersion is None or isinstance(self.overdispersion, str))

    def with_estimated_sizes(self, X) -> SplitSettings:
        """These settings with ``overdispersion="estimate"`` replaced by per-gene sizes."""
        sizes = estimate_overdispersion(X, random_state=self.random_state)
        return dataclasses.replace(self, overdispersion=sizes)

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


@dataclass
class HalvesNeeds:
    """What a family needs carried with each split beyond the normalised halves."""

    keep_a_counts: bool = False
    nb_sizes: np.ndarray | None = None
    obs: Any = None
    device: Any = None  # a torch device: split and normalise there (Family.halves_device)
    b_values: bool = True  # False: half B as counts only (Family.scores_b_values)


def nb_scoring_sizes(X, settings: SplitSettings) -> np.ndarray | None:
    """Per-gene NB sizes of the ``"nb"`` loss (None for the other losses).

    The sizes of the NB split when it is used, else estimated once on the full counts. Any
    fixed sizes keep the NB deviance a proper loss for the mean, the same for every setting,
    so estimating them on all cells favours no setting; thinning keeps an NB's size, so
    sizes of the full counts hold for half B.
    """
    if settings.loss != "nb":
        return None
    if is_dask_array(X):
        raise ValueError("loss='nb' needs the counts in memory; use loss='poisson' on dask.")
    if settings.split == "negative_binomial":
        return gene_sizes(X, settings.split, settings.overdispersion)
    return estimate_overdispersion(X)


def run_splits(X, settings: SplitSettings, score_split, *, score_dask=None,
               progress: bool | None = None, family: str = "this family",
               needs: HalvesNeeds | None = None):
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
    needs
        What each split carries beyond the normalised halves (half A's counts, NB sizes,
        covariates).

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
        counts = prepare_dask(X)

        def curves_of(seed):
            yield score_dask(counts, seed)
    else:
        def curves_of(seed):
            for halves in _halves_of(X, settings, seed, needs or HalvesNeeds()):
                yield score_split(halves, seed)

    curves = [np.asarray(curve, dtype=np.float64)
              for seed in progress_bar(seeds, desc=f"{family}: splits", progress=progress)
              for curve in curves_of(seed)]
    return np.vstack(curves)


def prepare_dask(X) -> DaskCounts:
    """One pass over the chunks: every cell's total, the counts checked on the way."""
    X = rows_chunked(X)
    totals = checked_library_sizes(X)
    check_no_empty_cells(totals)
    return DaskCounts(X, totals, float(np.median(totals)))


def _halves_of(X, settings: SplitSettings, seed, needs: HalvesNeeds):
    """The halves one seed gives: one split, or with ``folds`` each fold against the rest."""
    if needs.device is not None:
        yield device_halves(X, p=settings.p, transform=settings.transform, random_state=seed,
                            depth=float(np.median(library_sizes(X))), device=needs.device)
        return
    for halves in _split_halves(X, settings, seed, needs):
        halves.b_sizes, halves.obs = needs.nb_sizes, needs.obs
        yield halves


def _split_halves(X, settings: SplitSettings, seed, needs: HalvesNeeds):
    keep_counts = settings.loss != "mse"
    kept = dict(keep_counts=keep_counts, keep_a_counts=needs.keep_a_counts,
                keep_b_values=needs.b_values or not keep_counts)
    if settings.folds is None:
        yield prepare_halves(
            X, p=settings.p, transform=settings.transform, random_state=seed, **kept,
            split=settings.split, overdispersion=settings.overdispersion,
            sample_ratio=settings.sample_ratio,
        )
        return
    depth = float(np.median(library_sizes(X)))
    parts = split_folds(X, settings.folds, random_state=seed, split=settings.split,
                        overdispersion=settings.overdispersion)
    for k, held_out in enumerate(parts):
        rest = sum(part for i, part in enumerate(parts) if i != k)
        yield halves_from_counts(rest, held_out.copy(), p=settings.p,
                                 transform=settings.transform, depth=depth, **kept)
