"""Leaf: the calibration record of both domains, and the grid helpers they share.

A calibration of counts (:mod:`sc_noise2self.calibration`) and of an image
(:mod:`sc_noise2self.image`) both end in a :class:`CalibrationResult`: the grid, the loss of
every grid point on every split, and the settings, so that a curve can be redrawn and a run
repeated. A non-finite loss marks a failed setting, which never wins.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BaselineWarning", "CalibrationResult", "expand_grid", "finite_argmin", "json_ready"]


class GridEdgeWarning(UserWarning):
    """A best parameter value is the lowest or highest of its grid's.

    The loss may fall further beyond it, so a grid that reaches past that end may do better.
    """


class BaselineWarning(UserWarning):
    """An output's self-supervised loss does not beat the trivial J-invariant baseline.

    The baseline is the gene means for counts and the neighbour mean for images: a
    denoiser that cannot beat it found no structure above the noise.
    """


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


def finite_argmin(losses: np.ndarray) -> int:
    """Index of the lowest finite loss; raises when no loss is finite.

    A NaN or infinite loss means the setting failed (a denoiser returning NaN, an overflow):
    it must never be chosen, and it is skipped, not propagated.
    """
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError(
            "No setting gave a finite self-supervised loss (all are NaN or infinite): the "
            "denoiser failed on every setting. Check its output on this data, or the grid."
        )
    return int(np.argmin(np.where(finite, losses, np.inf)))


@dataclass
class CalibrationResult:
    """The whole loss curve of one calibration, and everything needed to repeat it.

    The record type of both domains: single-cell calibrations use it as it is, and
    :class:`~sc_noise2self.image.ImageCalibration` extends it.

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
    fitted
        Models fitted on the first split's half A, one per grid point, when the family kept
        them (scVI with ``return_model=True``); never written by :meth:`to_dict`.
    start
        What the first split's fit offers the final fit as a warm start (PCA: half A's
        components), for families that declare one; never written by :meth:`to_dict`.
    """

    param: str
    grid: np.ndarray
    loss_per_split: np.ndarray
    params: dict = field(default_factory=dict)
    fitted: list | None = field(default=None, repr=False, compare=False)
    start: Any = field(default=None, repr=False, compare=False)

    @property
    def loss(self) -> np.ndarray:
        """The loss curve, averaged over splits."""
        return np.asarray(self.loss_per_split, dtype=np.float64).mean(axis=0)

    @property
    def loss_std(self) -> np.ndarray:
        """Spread of the loss across splits (zeros for a single split)."""
        return np.asarray(self.loss_per_split, dtype=np.float64).std(axis=0)

    @property
    def failed(self) -> np.ndarray:
        """Indices of grid points whose loss is not finite (they never win)."""
        return np.flatnonzero(~np.isfinite(self.loss))

    @property
    def best_index(self) -> int:
        """Index of the lowest finite mean loss in ``grid``."""
        return finite_argmin(self.loss)

    @property
    def best(self):
        """The knob value with the lowest mean loss."""
        value = self.grid[self.best_index]
        return value.item() if isinstance(value, np.generic) else value

    def to_dict(self, *, json_safe: bool = False) -> dict:
        """A record for ``adata.uns`` (survives h5ad) or, with ``json_safe``, for JSON."""
        record = {
            "params": {**_h5ad_safe(self.params), "param": self.param},
            "grid": np.asarray(self.grid),
            "loss": self.loss,
            "loss_std": self.loss_std,
            "loss_per_split": np.asarray(self.loss_per_split),
            "best": self.best,
        }
        return json_ready(record) if json_safe else record

    def to_json(self) -> str:
        """The record as a JSON string (NaN losses written as ``NaN``)."""
        return json.dumps(self.to_dict(json_safe=True))

    @classmethod
    def from_dict(cls, record: dict) -> CalibrationResult:
        """Rebuild a result from what :meth:`to_dict` wrote (e.g. read back from ``uns``)."""
        params = {k: (None if isinstance(v, str) and v == "None" else v)
                  for k, v in dict(record.get("params", {})).items()}
        param = str(params.pop("param", "n_comps"))
        per_split = record.get("loss_per_split")
        if per_split is None:
            per_split = np.asarray(record["loss"], dtype=np.float64)[None, :]
        return cls(param, np.asarray(record["grid"]),
                   np.atleast_2d(np.asarray(per_split, dtype=np.float64)), params)

    @classmethod
    def from_json(cls, text: str) -> CalibrationResult:
        """Rebuild a result from :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _h5ad_safe(params: dict) -> dict:
    # h5ad cannot store None; keep the key so a run can be repeated.
    return {k: ("None" if v is None else v) for k, v in params.items()}


def json_ready(value):
    """numpy arrays and scalars as lists and Python numbers, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
