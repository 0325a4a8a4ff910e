"""The referee: every calibration is graded against a trivial J-invariant baseline.

The baseline predicts every cell by half A's gene means. It sees nothing of half B and
nothing of any structure, so a denoiser that cannot beat it has found nothing above noise,
and the user is told so with both losses. A non-finite loss marks a failed setting: it never
wins, it is named, and a calibration in which every setting failed is refused.
"""

from __future__ import annotations

import warnings

import numpy as np

from .losses import Halves, baseline_loss, column_means
from .results import BaselineWarning, CalibrationResult, finite_argmin

__all__ = ["Referee", "checked"]


class Referee:
    """Scores the gene-mean baseline on every split, so each calibration is graded against it.

    The baseline predicts every cell by half A's gene means: J-invariant, and blind to any
    structure. A denoiser whose best loss does not beat it found nothing above noise.
    """

    def __init__(self, loss: str, index: int | None = None):
        self.loss, self.index, self.losses, self._means = loss, index, [], None

    def before(self, halves: Halves) -> Halves:
        """Note half A's gene means before a family frees half A; return the halves."""
        if self.index is None:
            self._means = column_means(halves.a)
        return halves

    def scored(self, halves: Halves | None, curve) -> np.ndarray:
        """Record the baseline of the split that gave ``curve``; return the curve."""
        curve = np.asarray(curve, dtype=np.float64)
        if self.index is not None:
            self.losses.append(float(curve[self.index]))
        elif halves is not None and self._means is not None:
            self.losses.append(baseline_loss(self._means, halves, self.loss))
        return curve

    @property
    def loss_value(self) -> float | None:
        """The baseline's loss averaged over splits (None when it was not scored)."""
        return float(np.mean(self.losses)) if self.losses else None


def checked(result: CalibrationResult, referee: Referee | None = None) -> CalibrationResult:
    """``result`` graded: non-finite settings named, the baseline recorded and compared.

    Raises when no setting gave a finite loss. Warns, with both losses, when the best setting
    does not beat the gene-mean baseline.
    """
    finite_argmin(result.loss)
    baseline = None if referee is None else referee.loss_value
    if baseline is not None:
        result.params["baseline_loss"] = baseline
        best = float(result.loss[result.best_index])
        if referee.index == result.best_index:
            warnings.warn(
                f"The baseline itself ({result.param}={result.best}) has the lowest "
                f"self-supervised loss, {best:.6g}: no setting finds structure above noise "
                "in these counts. Try another family or a wider grid, or deeper data.",
                BaselineWarning,
                stacklevel=4,
            )
        elif best >= baseline:
            warnings.warn(
                f"The best {result.param}={result.best} has a self-supervised loss of "
                f"{best:.6g}, no better than {baseline:.6g} of the gene-mean baseline (every "
                "cell predicted by the genes' means): it finds no structure above noise in "
                "these counts. Try another family or a wider grid, or deeper data.",
                BaselineWarning,
                stacklevel=4,
            )
    _warn_at_the_edge(result)
    if result.failed.size:
        failed = [result.grid[i].item() if isinstance(result.grid[i], np.generic)
                  else result.grid[i] for i in result.failed]
        warnings.warn(
            f"{result.param}={failed} gave a non-finite self-supervised loss (NaN or "
            "infinite), so they cannot be chosen; the best is taken among the others.",
            UserWarning,
            stacklevel=3,
        )
    return result


def _warn_at_the_edge(result: CalibrationResult) -> None:
    """Say so when the best of an ordered numeric grid is its largest value.

    The minimum may then lie beyond the grid; the remedy is a wider grid, which only the
    user can ask for (it costs time).
    """
    grid = np.asarray(result.grid)
    if grid.dtype.kind not in "iuf" or grid.size < 3 or not np.all(np.diff(grid) > 0):
        return
    if result.best_index == grid.size - 1:
        warnings.warn(
            f"The self-supervised loss is lowest at the largest {result.param} scored "
            f"({result.best}): the minimum may lie beyond the grid. Score larger values "
            "(e.g. a larger max_comps, ks, t_max, widths, resolutions or n_latent) to be sure.",
            UserWarning,
            stacklevel=4,
        )
