"""One front for every family: ``tl.calibrate(adata, method=...)`` and ``tl.compare``."""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd

from .._anndata import get_counts, target
from .._validation import check_choice
from ..calibration import CalibrationResult, SplitSettings, calibrate_callable_counts
from .autoencoder import calibrate_autoencoder
from .common import store_calibration
from .graph import calibrate_diffusion, calibrate_knn
from .pca import calibrate_pca

METHODS = ("pca", "knn", "diffusion", "autoencoder")
_SPLIT_OPTIONS = ("p", "transform", "loss", "n_splits", "random_state", "split",
                  "overdispersion", "sample_ratio", "folds")


def _grid_options(method: str, param_grid: dict | None) -> dict:
    """Translate a ``{knob: values}`` grid into each family's own arguments."""
    if not param_grid:
        return {}
    knob, calls = {
        "pca": ("n_comps", lambda v: {"max_comps": int(max(v))}),
        "knn": ("n_neighbors", lambda v: {"ks": list(v)}),
        "diffusion": ("t", lambda v: {"t_max": int(max(v))}),
        "autoencoder": ("width", lambda v: {"widths": list(v)}),
    }[method]
    if set(param_grid) != {knob}:
        raise ValueError(f"For method={method!r}, param_grid takes one key, {knob!r}; got "
                         f"{sorted(param_grid)}.")
    return calls(list(np.atleast_1d(param_grid[knob])))


def calibrate(
    adata: ad.AnnData,
    method="pca",
    *,
    param_grid: dict | None = None,
    layer: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
    **kwargs,
) -> ad.AnnData | None:
    """Calibrate any denoiser family, or your own denoiser, by the self-supervised loss.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    method
        ``"pca"``, ``"knn"``, ``"diffusion"``, ``"autoencoder"``, or a callable
        ``f(train_half, **params) -> prediction`` that denoises half A's normalised,
        transformed values (cells x genes) and returns a prediction of the same shape.
    param_grid
        For a callable: ``{name: values}``, expanded as a product (required). For a family:
        its knob, ``{"n_comps": ...}``, ``{"n_neighbors": ...}``, ``{"t": ...}`` or
        ``{"width": ...}`` (optional; default grids otherwise).
    layer
        Layer with the raw counts; None means ``X``.
    key_added
        Where the record goes in ``uns``; default ``"noise2self"`` for PCA,
        ``"noise2self_<method>"`` for the others and ``"noise2self_custom"`` for a callable.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **kwargs
        Split options (``p``, ``transform``, ``loss``, ``n_splits``, ``random_state``) and the
        family's own options.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. The record has the same keys for every
    method: ``params``, ``grid``, ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    if callable(method):
        return _calibrate_callable(adata, method, param_grid, layer, key_added, copy, kwargs)
    check_choice(method, METHODS, name="method")
    function = {"pca": calibrate_pca, "knn": calibrate_knn, "diffusion": calibrate_diffusion,
                "autoencoder": calibrate_autoencoder}[method]
    key = key_added or ("noise2self" if method == "pca" else f"noise2self_{method}")
    return function(adata, layer=layer, key_added=key, copy=copy,
                    **_grid_options(method, param_grid), **kwargs)


def _calibrate_callable(adata, denoiser, param_grid, layer, key_added, copy, options):
    if not param_grid:
        raise ValueError("A callable method needs param_grid, e.g. {'n_comps': [5, 10, 20]}.")
    unknown = set(options) - set(_SPLIT_OPTIONS)
    if unknown:
        raise TypeError(f"Unexpected options {sorted(unknown)} for a callable method.")
    result = calibrate_callable_counts(
        get_counts(adata, layer), denoiser, param_grid, settings=SplitSettings(**options)
    )
    adata = target(adata, copy)
    store_calibration(adata, result, key_added or "noise2self_custom", layer)
    return adata if copy else None


def compare(
    adata: ad.AnnData,
    methods=("pca", "knn", "diffusion"),
    *,
    layer: str | None = None,
    key_added: str = "noise2self",
    **kwargs,
) -> pd.DataFrame:
    """Calibrate several families on the same split and tabulate their best losses.

    Every family sees the same split (same ``random_state``), so the losses compare
    directly: the lowest is the family that predicts held-out molecules best.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    methods
        Families to run, from ``"pca"``, ``"knn"``, ``"diffusion"``, ``"autoencoder"``.
    layer
        Layer with the raw counts; None means ``X``.
    key_added
        Each record goes to ``uns[f"{key_added}_{method}"]``.
    **kwargs
        Split options shared by all families (``p``, ``transform``, ``loss``, ``n_splits``,
        ``random_state``).

    Returns
    -------
    A DataFrame with one row per method: ``method``, ``param``, ``best``, ``best_loss``,
    ``seconds``, ``key``, sorted by ``best_loss``.
    """
    rows = []
    for method in methods:
        check_choice(method, METHODS, name="method")
        key = f"{key_added}_{method}"
        start = time.perf_counter()
        calibrate(adata, method, layer=layer, key_added=key, **kwargs)
        result = CalibrationResult.from_dict(adata.uns[key])
        rows.append(dict(method=method, param=result.param, best=result.best,
                         best_loss=float(result.loss.min()),
                         seconds=time.perf_counter() - start, key=key))
    return pd.DataFrame(rows).sort_values("best_loss", ignore_index=True)
