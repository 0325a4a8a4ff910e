"""Tools for autoencoders: choose the bottleneck width, then denoise."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .._anndata import get_counts, target
from ..calibration import DEFAULT_P, SplitSettings
from ..denoisers.autoencoder import (
    TrainSettings,
    apply_net,
    calibrate_autoencoder_counts,
    check_widths,
    fit_autoencoder,
)
from ..splitting import RandomState, make_rng
from ..transforms import library_sizes
from .common import logger, normalised_values, store_calibration, write_dense_layer


def calibrate_autoencoder(
    adata: ad.AnnData,
    *,
    widths=None,
    hidden: tuple[int, ...] = (128,),
    layer: str | None = None,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    max_epochs: int = 200,
    patience: int = 8,
    batch_size: int = 256,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    device: str = "auto",
    random_state: RandomState = 0,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    folds: int | None = None,
    progress: bool | None = None,
    key_added: str = "noise2self_autoencoder",
    copy: bool = False,
) -> ad.AnnData | None:
    """Choose an autoencoder's bottleneck width by molecular cross-validation.

    For each width, a network ``genes -> hidden -> width -> hidden -> genes`` is trained to
    reconstruct half A, early-stopped on held-out cells' reconstruction of half A, and scored
    against half B on every cell.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    widths
        Bottleneck widths to score, each at most the number of genes; None uses
        1, 2, 4, ..., 128 up to the number of genes.
    hidden
        Hidden layer sizes of the encoder (mirrored in the decoder).
    layer
        Layer with the raw counts; None means ``X``.
    transform, p, n_splits, random_state, split, overdispersion, sample_ratio, folds
        As in :func:`~sc_noise2self.tl.calibrate_pca`.
    loss
        ``"mse"``: the net predicts transformed values. ``"poisson"``: it predicts log
        normalised means, trained by Poisson likelihood on half A's counts and scored by
        deviance on half B's, with the depth shift between the halves applied.
    max_epochs, patience, batch_size, lr, val_fraction
        Training: Adam, stopping after ``patience`` epochs without improvement.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"`` or ``"cuda"``.
    progress
        A progress bar over widths; None shows it only on a terminal.
    key_added
        Results go to ``adata.uns[key_added]``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``uns[key_added]`` with ``params``,
    ``grid`` (the widths), ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    log = logger()
    start = log.info("calibrating the autoencoder width by molecular cross-validation")
    train = TrainSettings(tuple(hidden), max_epochs, patience, batch_size, lr, val_fraction,
                          device)
    result = calibrate_autoencoder_counts(
        get_counts(adata, layer), widths=widths, train=train,
        settings=SplitSettings(p, transform, loss, n_splits, random_state, split, overdispersion,
                               sample_ratio, folds),
        progress=progress,
    )
    adata = target(adata, copy)
    store_calibration(adata, result, key_added, layer)
    log.info(f"    best width {result.best}", time=start, deep=f"added 'uns[{key_added!r}]'")
    return adata if copy else None


def denoise_autoencoder(
    adata: ad.AnnData,
    *,
    width: int | None = None,
    layer: str | None = None,
    transform: str = "sqrt",
    random_state: RandomState = 0,
    key_added: str = "noise2self_autoencoder",
    max_layer_gb: float = 1.0,
    copy: bool = False,
    **calibrate_kwargs,
) -> ad.AnnData | None:
    """Denoise with an autoencoder of a calibrated (or given) bottleneck width.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    width
        Bottleneck width. None calibrates it first with :func:`calibrate_autoencoder`.
    layer, transform, random_state
        As in :func:`calibrate_autoencoder`.
    key_added
        Prefix of every key written.
    max_layer_gb
        Write the dense ``layers[key_added]`` only when it takes at most this many gigabytes.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **calibrate_kwargs
        Options of :func:`calibrate_autoencoder` (``widths``, ``hidden``, ``p``, ``loss``,
        ``max_epochs``, ``device``, ...); the training options also apply to the final net.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes the latent codes to
    ``obsm['X_' + key_added]``, ``uns[key_added]`` and, when it fits, the decoded values on the
    transformed scale to ``layers[key_added]``.
    """
    if calibrate_kwargs.get("loss", "mse") != "mse":
        raise ValueError(
            "denoise_autoencoder trains its final network by squared error on the transformed "
            "scale, so calibrate its width with loss='mse'. (calibrate_autoencoder supports "
            "loss='poisson' for comparing losses.)"
        )
    record = {"params": {}}
    if width is None:
        scratch = ad.AnnData(get_counts(adata, layer))
        calibrate_autoencoder(scratch, transform=transform, random_state=random_state,
                              key_added="calibration", **calibrate_kwargs)
        record = dict(scratch.uns["calibration"])
        width = int(record["best"])
    counts = get_counts(adata, layer)
    width = int(check_widths([width], counts.shape[1])[0])
    train = _train_settings(calibrate_kwargs)
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    seed = int(make_rng(random_state).integers(2**31 - 1))
    net, history = fit_autoencoder(values, width, train, seed)
    adata = target(adata, copy)
    adata.obsm[f"X_{key_added}"] = apply_net(net, values, layers=2 * len(train.hidden) + 1)
    record["params"].update(depth=depth, transform=transform, width=width,
                            layer="X" if layer is None else layer)
    record.update(method="autoencoder", width=width, history=np.asarray(history))
    adata.uns[key_added] = record
    write_dense_layer(adata, key_added, max_layer_gb, values=lambda: apply_net(net, values),
                      way_out=f"The latent codes are in obsm['X_{key_added}'].")
    return adata if copy else None


def _train_settings(options: dict) -> TrainSettings:
    names = ("hidden", "max_epochs", "patience", "batch_size", "lr", "val_fraction", "device")
    chosen = {k: options[k] for k in names if k in options}
    if "hidden" in chosen:
        chosen["hidden"] = tuple(chosen["hidden"])
    return TrainSettings(**chosen)
