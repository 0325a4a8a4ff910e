"""Tools: calibrate a denoiser by the self-supervised loss, then denoise, writing into AnnData.

Every ``calibrate_*`` / ``denoise_*`` pair is generated from its family's record
(:class:`~sc_noise2self.calibration.Family`) by one adapter: the signature is the family's
grid argument and options followed by the split options of
:class:`~sc_noise2self.calibration.SplitSettings`, so an option added to the engine reaches
every family, and a new family is one record in ``sc_noise2self/denoisers/``.
"""

from __future__ import annotations

import inspect
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anndata as ad
import numpy as np
import pandas as pd

from ._anndata import (
    counts_name,
    gene_positions,
    get_counts,
    logger,
    store_calibration,
    target,
)
from ._validation import check_choice, check_counts, check_real, is_dask_array
from .calibration import (
    DEFAULT_P,
    CalibrationResult,
    Family,
    SplitSettings,
    calibrate_callable_counts,
    calibrate_counts,
)
from .denoisers.autoencoder import AUTOENCODER
from .denoisers.diffusion import DIFFUSION
from .denoisers.knn import KNN
from .denoisers.leiden import LEIDEN
from .denoisers.pca import PCA
from .denoisers.scvi_vae import SCVI
from .inference import association_split, rank_genes_groups_split
from .replication import validate_clusters_split

FAMILIES: dict[str, Family] = {f.name: f for f in (PCA, KNN, DIFFUSION, AUTOENCODER, LEIDEN,
                                                   SCVI)}
METHODS = tuple(FAMILIES)

_SHARED_DOCS = {
    "adata": "Annotated data with raw integer counts in ``X`` or ``layers[layer]``.",
    "layer": "Layer with the raw counts; None means ``X``.",
    "p": "Share of molecules in half A, the half that is fitted. The default 0.7 had the "
         "lowest regret in our measurements: the paper's 0.5 picks settings that suit half the "
         "depth, and MCV's 0.9 leaves too noisy a target on small data "
         "(``benchmarks/RESULTS.md``). With ``p != 0.5`` predictions are moved to half B's "
         "depth before scoring.",
    "transform": "``\"sqrt\"`` (the paper) or ``\"log1p\"`` (scanpy) after normalising each "
                 "half to its share of the median library size; ``\"none\"`` keeps "
                 "normalised counts.",
    "loss": "``\"mse\"`` on the transformed scale, or ``\"poisson\"`` deviance on half B's "
            "counts; for families that predict every gene at once (scvi) also ``\"nb\"``, the "
            "NB deviance at per-gene sizes (the NB split's, else estimated once; written to "
            "``var[key_added + '_nb_size']``).",
    "n_splits": "Independent splits to average; ``loss_std`` keeps their spread.",
    "random_state": "Seed of the splits (and of the final fit); the same seed gives identical "
                    "results.",
    "split": "``\"binomial\"`` (Poisson counts) or ``\"negative_binomial\"`` (overdispersed "
             "counts: beta-binomial splitting keeps the halves independent).",
    "overdispersion": "For ``split=\"negative_binomial\"``: the NB size per gene, one number, "
                      "or ``\"estimate\"`` (written to ``var[key_added + '_overdispersion']``).",
    "sample_ratio": "MCV's overlap correction, the captured share of each cell's molecules; "
                    "None splits plainly (:func:`~sc_noise2self.split_counts`).",
    "folds": "K-fold thinning: each fold scored against the other K-1 (``p`` becomes "
             "(K-1)/K).",
    "progress": "Progress bars over splits (and widths): True, False, or None to show them "
                "when scanpy's verbosity is at least info, on a terminal or in a notebook.",
    "key_added": "Where the results go: ``uns[key_added]`` and the keys named below.",
    "max_layer_gb": "Write a dense denoised ``layers[key_added]`` only when it takes at most "
                    "this many gigabytes (float32); otherwise read chosen genes with "
                    ":func:`denoised_values`.",
    "copy": "Return a new AnnData instead of writing into ``adata``.",
    "return_model": "Also return the trained model: from ``calibrate_*`` the model at the "
                    "best setting (trained on the first split's half A), from ``denoise_*`` "
                    "the model trained on all the counts. With ``copy=True`` the return is "
                    "``(adata, model)``.",
}


def _parameter(name: str, default) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)


def _signature(family: Family, denoise: bool) -> inspect.Signature:
    """The generated signature: AnnData, knob, grid, options, layer, split options, tail."""
    adata = inspect.Parameter("adata", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation="ad.AnnData")
    head = [_parameter(family.knob, None)] if denoise else []
    # When the knob and the grid share a name (scVI's n_latent), denoise takes the knob and
    # calibrates on the default grid: a custom grid is calibrate_*'s, reused from uns.
    same_name = denoise and family.knob == family.grid_arg
    grid = [] if same_name else [_parameter(family.grid_arg, family.grid_default)]
    own = [_parameter(name, default) for name, default in family.options.items()]
    defaults = family.default_settings()
    split = [_parameter(name, getattr(defaults, name)) for name in SplitSettings.names()]
    tail = [_parameter("layer", None), _parameter("progress", None),
            _parameter("key_added", family.key)]
    if denoise:
        tail.append(_parameter("max_layer_gb", 1.0))
    tail.append(_parameter("copy", False))
    if family.returns_model:
        tail.append(_parameter("return_model", False))
    return inspect.Signature([adata, *head, *grid, *own, *split, *tail],
                             return_annotation="ad.AnnData | None")


def _docstring(family: Family, signature: inspect.Signature, denoise: bool) -> str:
    """A numpy-style docstring from the family's texts and the shared option texts."""
    docs = {**_SHARED_DOCS, **family.option_docs}
    summary = family.denoise_summary if denoise else family.summary
    lines = [line for paragraph in summary.split("\n\n")
             for line in [*textwrap.wrap(paragraph, 92), ""]]
    lines += ["Parameters", "----------"]
    for name in signature.parameters:
        lines.append(name)
        lines.extend(textwrap.wrap(docs[name], 88, initial_indent="    ",
                                   subsequent_indent="    "))
    model = " (the model too with ``return_model=True``)" if family.returns_model else ""
    if denoise:
        returns = f"None, or a new AnnData when ``copy=True``{model}. Writes {family.writes}"
    else:
        returns = (f"None, or a new AnnData when ``copy=True``{model}. Writes "
                   "``uns[key_added]`` with "
                   f"``params``, ``grid`` (the {family.knob} values scored), ``loss``, "
                   "``loss_std``, ``loss_per_split`` and ``best``.")
    lines += ["", "Returns", "-------", *textwrap.wrap(returns, 92)]
    return "\n".join(lines) + "\n"


def _generated(family: Family, denoise: bool, run: Callable) -> Callable:
    """A public function with the family's signature and docstring that calls ``run``."""
    signature = _signature(family, denoise)

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return run(family, dict(bound.arguments))

    name = f"{'denoise' if denoise else 'calibrate'}_{family.name}"
    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__signature__ = signature
    function.__doc__ = _docstring(family, signature, denoise)
    return function


def _split_options(arguments: dict) -> dict:
    return {name: arguments.pop(name) for name in SplitSettings.names()}


def _check_front(arguments: dict) -> None:
    """The arguments every front shares, checked before any work."""
    key = arguments["key_added"]
    if not isinstance(key, str) or not key:
        raise TypeError(f"key_added={key!r} must be a non-empty str naming where results go.")
    for name in ("copy", "return_model"):
        if not isinstance(arguments.get(name, False), bool):
            raise TypeError(f"{name}={arguments[name]!r} must be True or False.")
    if arguments["progress"] is not None and not isinstance(arguments["progress"], bool):
        raise TypeError(f"progress={arguments['progress']!r} must be True, False or None.")
    if "max_layer_gb" in arguments:
        check_real(arguments["max_layer_gb"], name="max_layer_gb", minimum=0.0,
                   hint="the largest dense layer to write, in GB; 0 writes none")
    SplitSettings(**{n: arguments[n] for n in SplitSettings.names()}).check_options()


def _run_calibrate(family: Family, arguments: dict):
    _check_front(arguments)
    adata, layer, key = arguments.pop("adata"), arguments.pop("layer"), arguments.pop("key_added")
    copy, progress = arguments.pop("copy"), arguments.pop("progress")
    return_model = arguments.pop("return_model", False)
    log = logger()
    start = log.info(f"calibrating {family.name} ({family.knob}) by molecular cross-validation")
    counts = get_counts(adata, layer)
    if not is_dask_array(counts):  # named as the user knows it, before any work
        check_counts(counts, name=counts_name(layer))
    obs = _covariates(adata, family, arguments)
    result = calibrate_counts(counts, family, progress=progress, obs=obs,
                              keep_fitted=return_model, **arguments)
    adata = target(adata, copy)
    if family.fit_after_calibrate:  # e.g. the labels at the best resolution
        _fit_and_store(family, adata, counts, family.choose(result), arguments, result, key,
                       layer, max_layer_gb=None, obs=obs, start=result.start)
    else:
        store_calibration(adata, result, key, layer)
    if family.warm_start is not None:  # None removes an older calibration's start
        family.warm_start.save(adata, result.start, key)
    log.info(f"    best {family.knob} {result.best}", time=start, deep=f"added 'uns[{key!r}]'")
    model = result.fitted[result.best_index] if return_model else None
    return _returned(adata, copy, return_model, model)


def _returned(adata, copy: bool, return_model: bool, model):
    """What a front returns: None or the new AnnData, with the model when it was asked for."""
    if not return_model:
        return adata if copy else None
    return (adata, model) if copy else model


def _covariates(adata, family: Family, arguments: dict):
    """``adata.obs`` for a family whose options name obs columns (checked by name first)."""
    if not family.covariates:
        return None
    for name in family.covariates:
        column = arguments[name]
        if column is not None and isinstance(column, str) and column not in adata.obs:
            known = ", ".join(repr(c) for c in list(adata.obs.columns)[:10]) or "none"
            raise KeyError(f"{name}={column!r} is not a column of adata.obs (it has: {known}).")
    return adata.obs


def _run_denoise(family: Family, arguments: dict) -> ad.AnnData | None:
    _check_front(arguments)
    adata, layer, key = arguments.pop("adata"), arguments.pop("layer"), arguments.pop("key_added")
    copy, progress = arguments.pop("copy"), arguments.pop("progress")
    return_model = arguments.pop("return_model", False)
    max_layer_gb, value = arguments.pop("max_layer_gb"), arguments.pop(family.knob)
    if arguments["loss"] not in family.denoise_losses:
        raise ValueError(
            f"denoise_{family.name} fits its final model by {family.denoise_losses[0]!r}, so "
            f"calibrate it with loss={family.denoise_losses[0]!r} (calibrate_{family.name} "
            f"supports loss={arguments['loss']!r} for comparing losses)."
        )
    counts = get_counts(adata, layer)
    if not is_dask_array(counts):
        # The full counts are fitted even when the setting is given.
        check_counts(counts, name=counts_name(layer))
    obs = _covariates(adata, family, arguments)
    log = logger()
    result = warm = None
    if value is None:
        result = _stored_calibration(adata, key, family, counts, arguments, layer)
        if result is not None and family.warm_start is not None:
            warm = family.warm_start.load(adata, key)
        if result is None:
            log.info(f"calibrating {family.knob} first (no matching calibration under {key!r})")
            result = calibrate_counts(counts, family, progress=progress, obs=obs, **arguments)
            warm = result.start
        value = family.choose(result)
    start = log.info(f"denoising by {family.name} with {family.knob}={value}")
    adata = target(adata, copy)
    fitted = _fit_and_store(family, adata, counts, value, arguments, result, key, layer,
                            max_layer_gb, obs=obs, start=warm)
    log.info("    finished", time=start, deep=f"added results under {key!r}")
    return _returned(adata, copy, return_model, getattr(fitted, "model", None))


def _fit_and_store(family: Family, adata, counts, value, arguments: dict, result, key: str,
                   layer, max_layer_gb: float | None, obs=None, start=None):
    """Fit the family at ``value`` on all the counts, write the fit and its record; return it.

    Options left to the calibration (None, e.g. the Leiden graph's rank) take the value the
    calibration resolved; ``max_layer_gb=None`` writes no dense layer and says nothing.
    """
    resolved = result.params if result is not None else {}
    fit_options = {name: resolved.get(name) if _left_to_calibration(arguments[name], name,
                                                                    resolved)
                   else arguments[name] for name in family.fit_options}
    extra = {"obs": obs} if family.covariates else {}
    if family.warm_start is not None:
        extra["start"] = start
    fitted = family.fit(counts, value, fit_options, transform=arguments["transform"],
                        random_state=arguments["random_state"], max_layer_gb=max_layer_gb,
                        **extra)
    record = (store_calibration(adata, result, key, layer) if result is not None
              else {"params": {}})
    seed = SplitSettings(random_state=arguments["random_state"]).params()["random_state"]
    record["params"].setdefault("random_state", seed)  # a given setting has no calibration
    record["params"].update({family.knob: value, "depth": fitted.depth,
                             "transform": arguments["transform"],
                             "layer": "X" if layer is None else layer,
                             **{k: v for k, v in fit_options.items()
                                if v is not None and not isinstance(v, np.ndarray)}})
    record.update({"method": family.name, family.knob: value})
    adata.uns[key] = record
    adata.uns[key].update(family.store(adata, fitted, key, max_layer_gb))
    return fitted


def _left_to_calibration(value, name: str, resolved: dict) -> bool:
    """An option the calibration resolved: None, or ``"estimate"`` (the NB sizes it found)."""
    return value is None or (isinstance(value, str) and value == "estimate"
                             and isinstance(resolved.get(name), np.ndarray))


def _stored_calibration(adata, key, family, counts, arguments, layer) -> CalibrationResult | None:
    """A calibration already under ``uns[key]`` whose settings match this call, or None."""
    record = adata.uns.get(key)
    if not isinstance(record, dict) or "loss" not in record or "params" not in record:
        return None
    if not isinstance(arguments["overdispersion"], int | float | str | type(None)):
        return None  # per-gene sizes: recalibrate rather than compare arrays
    settings = SplitSettings(**{n: arguments[n] for n in SplitSettings.names()})
    if is_dask_array(counts) or settings.folds is not None:
        return None
    # Without a grid argument (denoise_scvi's n_latent is the knob) any stored grid will do.
    grid = ({family.grid_arg: arguments[family.grid_arg]} if family.grid_arg in arguments
            else {})
    wanted = {**settings.params(), **grid,
              **{name: arguments[name] for name in family.options},
              "layer": "X" if layer is None else layer}
    stored = record["params"]
    # An option left to the calibration (None, e.g. the Leiden graph's rank) is stored as
    # the value it resolved to: any stored value matches it.
    resolved = {name for name, default in family.options.items()
                if default is None and arguments[name] is None}
    stored_sizes = record["params"].get("overdispersion")
    if (settings.estimates_sizes and isinstance(stored_sizes, str)
            and stored_sizes.startswith("per gene")):  # "estimate": stored as sizes found
        resolved.add("overdispersion")
    if any(_comparable(stored.get(name)) != _comparable(value) for name, value in wanted.items()
           if name not in resolved):
        return None
    logger().info(f"reusing the calibration stored in uns[{key!r}] (same settings)")
    return CalibrationResult.from_dict(record)


def _comparable(value):
    """A comparable form of a stored or given option (h5ad writes None as 'None')."""
    if value is None or (isinstance(value, str) and value == "None"):
        return None
    if isinstance(value, np.ndarray | list | tuple):
        return tuple(_comparable(v) for v in np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


if TYPE_CHECKING:  # the same functions, as static signatures for editors and type checkers
    from ._tl_api import (
        calibrate_autoencoder,
        calibrate_diffusion,
        calibrate_knn,
        calibrate_leiden,
        calibrate_pca,
        calibrate_scvi,
        denoise_autoencoder,
        denoise_diffusion,
        denoise_knn,
        denoise_leiden,
        denoise_pca,
        denoise_scvi,
    )
else:
    calibrate_pca = _generated(PCA, False, _run_calibrate)
    denoise_pca = _generated(PCA, True, _run_denoise)
    calibrate_knn = _generated(KNN, False, _run_calibrate)
    denoise_knn = _generated(KNN, True, _run_denoise)
    calibrate_diffusion = _generated(DIFFUSION, False, _run_calibrate)
    denoise_diffusion = _generated(DIFFUSION, True, _run_denoise)
    calibrate_autoencoder = _generated(AUTOENCODER, False, _run_calibrate)
    denoise_autoencoder = _generated(AUTOENCODER, True, _run_denoise)
    calibrate_leiden = _generated(LEIDEN, False, _run_calibrate)
    denoise_leiden = _generated(LEIDEN, True, _run_denoise)
    calibrate_scvi = _generated(SCVI, False, _run_calibrate)
    denoise_scvi = _generated(SCVI, True, _run_denoise)


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
        ``"pca"``, ``"knn"``, ``"diffusion"``, ``"autoencoder"``, ``"leiden"``, ``"scvi"``
        (the ``[scvi]`` extra), or a callable
        ``f(train_half, **params) -> prediction`` that denoises half A's normalised,
        transformed values (cells x genes) and returns a prediction of the same shape.
    param_grid
        For a callable: ``{name: values}``, expanded as a product (required). For a family:
        its knob, ``{"n_comps": ...}``, ``{"n_neighbors": ...}``, ``{"t": ...}``,
        ``{"width": ...}``, ``{"resolution": ...}`` or ``{"n_latent": ...}`` (optional;
        default grids otherwise).
    layer
        Layer with the raw counts; None means ``X``.
    key_added
        Where the record goes in ``uns``; default ``"noise2self"`` for PCA,
        ``"noise2self_<method>"`` for the others and ``"noise2self_custom"`` for a callable.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **kwargs
        Split options (``p``, ``transform``, ``loss``, ``n_splits``, ``random_state``, ...)
        and the family's own options.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. The record has the same keys for every
    method: ``params``, ``grid``, ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    if callable(method):
        return _calibrate_callable(adata, method, param_grid, layer, key_added, copy, kwargs)
    family = FAMILIES[check_choice(method, METHODS, name="method")]
    if param_grid:
        if set(param_grid) != {family.knob}:
            raise ValueError(f"For method={method!r}, param_grid takes one key, "
                             f"{family.knob!r}; got {sorted(param_grid)}.")
        values = list(np.atleast_1d(param_grid[family.knob]))
        kwargs[family.grid_arg] = family.grid.from_values(values)
    arguments = _signature(family, False).bind(adata, **kwargs, layer=layer,
                                              key_added=key_added or family.key, copy=copy)
    arguments.apply_defaults()
    return _run_calibrate(family, dict(arguments.arguments))


def _calibrate_callable(adata, denoiser, param_grid, layer, key_added, copy, options):
    if not param_grid:
        raise ValueError("A callable method needs param_grid, e.g. {'n_comps': [5, 10, 20]}.")
    progress = options.pop("progress", None)
    unknown = set(options) - set(SplitSettings.names())
    if unknown:
        raise TypeError(f"Unexpected options {sorted(unknown)} for a callable method.")
    result = calibrate_callable_counts(get_counts(adata, layer), denoiser, param_grid,
                                       settings=SplitSettings(**options), progress=progress)
    adata = target(adata, copy)
    store_calibration(adata, result, key_added or "noise2self_custom", layer)
    return adata if copy else None


def compare(
    adata: ad.AnnData,
    methods=("pca", "knn", "diffusion"),
    *,
    layer: str | None = None,
    key_added: str | None = None,
    options: dict[str, dict] | None = None,
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
        Families to run, from ``"pca"``, ``"knn"``, ``"diffusion"``, ``"autoencoder"``,
        ``"leiden"``, ``"scvi"``.
    layer
        Layer with the raw counts; None means ``X``.
    key_added
        None (default): each record goes where ``calibrate_<method>`` writes it by default
        (``uns["noise2self"]`` for PCA, ``uns["noise2self_knn"]``, ...), so that
        ``denoise_<method>`` reuses it. A string: ``uns[f"{key_added}_{method}"]``.
    options
        Each family's own options by method, e.g. ``{"scvi": {"max_epochs": 100}}``.
    **kwargs
        Split options shared by all families (``p``, ``transform``, ``loss``, ``n_splits``,
        ``random_state``).

    Returns
    -------
    A DataFrame with one row per method: ``method``, ``param``, ``best``, ``best_loss``,
    ``baseline_loss`` (the gene-mean referee on the same split), ``loss`` and ``split``,
    ``seconds``, ``key``, sorted by ``best_loss``. Losses compare across rows only where
    ``loss`` and ``split`` agree: the Leiden family scores counts (``"poisson"``) on its
    own NB split unless told otherwise, so read its row against its own baseline.
    """
    for method in methods:
        check_choice(method, METHODS, name="method")
    options = {} if options is None else options
    if not isinstance(options, dict) or not set(options) <= set(methods):
        raise ValueError(f"options={options!r} must map some of methods={list(methods)} to "
                         "dicts of their own options, e.g. {'scvi': {'max_epochs': 100}}.")
    rows = []
    for method in methods:
        key = FAMILIES[method].key if key_added is None else f"{key_added}_{method}"
        start = time.perf_counter()
        calibrate(adata, method, layer=layer, key_added=key, **kwargs,
                  **dict(options.get(method, {})))
        result = CalibrationResult.from_dict(adata.uns[key])
        rows.append(dict(method=method, param=result.param, best=result.best,
                         best_loss=float(result.loss[result.best_index]),
                         baseline_loss=result.params.get("baseline_loss"),
                         loss=result.params.get("loss"), split=result.params.get("split"),
                         seconds=time.perf_counter() - start, key=key))
    return pd.DataFrame(rows).sort_values("best_loss", ignore_index=True)


def denoised_values(
    adata: ad.AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    key: str = "noise2self",
) -> np.ndarray:
    """Denoised values for chosen genes, from what a ``tl.denoise_*`` function stored.

    Parameters
    ----------
    adata
        AnnData on which a ``denoise_*`` function ran.
    genes
        One gene name, a list of names, or None for all genes.
    key
        The ``key_added`` of that run.

    Returns
    -------
    Dense float32 array, cells x genes, on the transformed scale of the run.
    """
    record = adata.uns.get(key)
    if not isinstance(record, dict) or str(record.get("method")) not in FAMILIES:
        raise KeyError(f"No denoising under key {key!r}; run a `tl.denoise_*` function first.")
    family = FAMILIES[str(record["method"])]
    return family.values(adata, key, gene_positions(adata, genes))


__all__ = [
    "DEFAULT_P",
    "association_split",
    "calibrate",
    "calibrate_autoencoder",
    "calibrate_diffusion",
    "calibrate_knn",
    "calibrate_leiden",
    "calibrate_pca",
    "calibrate_scvi",
    "compare",
    "denoise_autoencoder",
    "denoise_diffusion",
    "denoise_knn",
    "denoise_leiden",
    "denoise_pca",
    "denoise_scvi",
    "denoised_values",
    "rank_genes_groups_split",
    "validate_clusters_split",
]
