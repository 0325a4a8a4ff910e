"""Tools: calibrate a denoiser by the self-supervised loss, then denoise, writing into AnnData."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np

from .._anndata import get_counts, target
from .._validation import is_dask_array
from ..calibration import DEFAULT_P, CalibrationResult
from ..denoisers.pca import Solver, calibrate_pca_counts, clip_n_comps, fit_pca
from ..splitting import RandomState
from ..transforms import library_sizes
from .common import logger, normalised_values, store_calibration, write_dense_layer


def calibrate_pca(
    adata: ad.AnnData,
    *,
    max_comps: int = 100,
    layer: str | None = None,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    solver: Solver = "auto",
    max_score_cells: int | None = 20_000,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    folds: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Choose the number of principal components by molecular cross-validation.

    Splits each cell's counts into halves A (share ``p``) and B, fits one truncated SVD to
    half A, and scores the rank-k denoising of A against B for every k in ``0..max_comps``.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    max_comps
        Largest rank scored; clipped, with a warning, to what the data allow.
    layer
        Layer with the raw counts; None means ``X``.
    transform
        ``"sqrt"`` (the paper) or ``"log1p"`` (scanpy) after normalising each half to its
        share of the median library size; ``"none"`` keeps normalised counts.
    loss
        ``"mse"`` on the transformed scale, or ``"poisson"`` deviance on half B's counts.
    p
        Share of molecules in half A, the half that is fitted. The default 0.7 had the lowest
        regret in our measurements: the paper's 0.5 picks ranks that suit half the depth and
        run low on shallow data, and MCV's 0.9 leaves too noisy a target on small data (see
        ``benchmarks/RESULTS.md``). With ``p != 0.5`` predictions are moved to half B's depth
        before scoring.
    n_splits
        Independent splits to average; ``loss_std`` keeps their spread.
    random_state
        Seed; the same seed gives identical curves.
    key_added
        Results go to ``adata.uns[key_added]``.
    solver
        SVD solver: ``"auto"``, ``"arpack"``, ``"covariance_eigh"`` or ``"randomized"``.
    max_score_cells
        Cap on the cells scored when the loss is non-linear (``p != 0.5`` under ``sqrt`` or
        ``log1p``, or ``loss="poisson"``); see
        :func:`~sc_noise2self.denoisers.pca.calibrate_pca_counts`. None scores every cell.
    split
        ``"binomial"`` (Poisson counts) or ``"negative_binomial"`` (overdispersed counts:
        beta-binomial splitting keeps the halves independent).
    overdispersion
        For ``split="negative_binomial"``: the NB size per gene, one number, or
        ``"estimate"`` (written to ``var[key_added + '_overdispersion']``).
    sample_ratio
        MCV's overlap correction, the captured share of each cell's molecules; None (the
        default) splits plainly. See :func:`~sc_noise2self.split_counts`.
    folds
        K-fold thinning: each fold scored against the other K-1 (``p`` becomes (K-1)/K).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``uns[key_added]`` with ``params``,
    ``grid`` (ranks 0..max_comps), ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    log = logger()
    start = log.info(f"calibrating PCA rank up to {max_comps} by molecular cross-validation")
    result = calibrate_pca_counts(
        get_counts(adata, layer), max_comps=max_comps, transform=transform, loss=loss, p=p,
        n_splits=n_splits, random_state=random_state, solver=solver,
        max_score_cells=max_score_cells, split=split, overdispersion=overdispersion,
        sample_ratio=sample_ratio, folds=folds,
    )
    adata = target(adata, copy)
    store_calibration(adata, result, key_added, layer)
    log.info(f"    best rank {result.best}", time=start, deep=f"added 'uns[{key_added!r}]'")
    return adata if copy else None


def denoise_pca(
    adata: ad.AnnData,
    *,
    n_comps: int | None = None,
    layer: str | None = None,
    transform: str = "sqrt",
    max_comps: int = 100,
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    solver: Solver = "auto",
    max_layer_gb: float = 1.0,
    max_score_cells: int | None = 20_000,
    copy: bool = False,
) -> ad.AnnData | None:
    """Denoise by PCA at a calibrated (or given) rank, writing scores, loadings and values.

    The full counts are normalised to the median library size and transformed, then
    projected on ``n_comps`` principal components.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    n_comps
        Rank of the denoiser. None calibrates it first with :func:`calibrate_pca`, using
        ``max_comps``, ``loss``, ``p``, ``n_splits`` and ``random_state``.
    layer
        Layer with the raw counts; None means ``X``.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"``.
    max_comps, loss, p, n_splits, max_score_cells
        Passed to the calibration when ``n_comps`` is None.
    random_state
        Seed of the calibration and of the SVD solver.
    key_added
        Prefix of every key written.
    solver
        SVD solver, as in :func:`calibrate_pca`.
    max_layer_gb
        A dense denoised matrix goes to ``layers[key_added]`` only when it takes at most this
        many gigabytes (float32); otherwise use :func:`denoised_values` for chosen genes.
        For dask counts the layer is always a lazy dask array, and the cell scores are
        computed when they take at most this much (else they stay lazy too).
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``obsm['X_' + key_added]`` (cell scores,
    for ``sc.pp.neighbors(use_rep=...)``), ``varm[key_added + '_loadings']``,
    ``var[key_added + '_mean']``, ``uns[key_added]`` (calibration record, ``n_comps`` and the
    normalisation depth) and, when it fits, the dense ``layers[key_added]`` on the transformed
    scale.
    """
    log = logger()
    counts = get_counts(adata, layer)
    calibration = None
    if n_comps is None:
        calibration = calibrate_pca_counts(
            counts, max_comps=max_comps, transform=transform, loss=loss, p=p,
            n_splits=n_splits, random_state=random_state, solver=solver,
            max_score_cells=max_score_cells,
        )
        n_comps = _usable_rank(calibration)
    n_comps = clip_n_comps(n_comps, counts.shape, name="n_comps")
    start = log.info(f"denoising by PCA with {n_comps} components")
    if is_dask_array(counts):
        # Out of core: scores computed when they fit max_layer_gb; the dense layer stays lazy.
        from ..denoisers.pca_dask import fit_pca_dask

        fit, depth, denoised = fit_pca_dask(counts, n_comps, transform=transform,
                                            max_scores_gb=max_layer_gb)
        adata = target(adata, copy)
        _write_pca(adata, fit, key_added, calibration, n_comps, depth, transform, layer)
        adata.layers[key_added] = denoised
        log.info("    finished", time=start, deep="added lazy 'layers', 'obsm', 'varm', 'uns'")
        return adata if copy else None
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    fit = fit_pca(values, n_comps, solver=solver, random_state=random_state)
    adata = target(adata, copy)
    _write_pca(adata, fit, key_added, calibration, n_comps, depth, transform, layer)
    write_dense_layer(adata, key_added, max_layer_gb)
    log.info("    finished", time=start, deep=f"added 'obsm[X_{key_added}]', 'varm', 'uns'")
    return adata if copy else None


def _usable_rank(calibration: CalibrationResult) -> int:
    if calibration.best == 0:
        warnings.warn(
            "The self-supervised loss is lowest at rank 0 (gene means only): the counts show no "
            "structure above noise at this depth. Using 1 component.",
            UserWarning,
            stacklevel=3,
        )
        return 1
    return int(calibration.best)


def _write_pca(adata, fit, key, calibration, n_comps, depth, transform, layer) -> None:
    record = calibration.to_dict() if calibration is not None else {"params": {}}
    record["params"].update(
        n_comps=int(n_comps), depth=depth, transform=transform,
        layer="X" if layer is None else layer,
    )
    record["n_comps"] = int(n_comps)
    record["method"] = "pca"
    adata.obsm[f"X_{key}"] = fit.scores.astype(np.float32)
    adata.varm[f"{key}_loadings"] = fit.components.T.astype(np.float32)
    adata.var[f"{key}_mean"] = fit.mean.astype(np.float32)
    adata.uns[key] = record


