"""The autoencoder family: choose a count autoencoder's bottleneck width by the loss.

An autoencoder is trained on half A's transformed values (reconstructing half A) and scored
against half B. Early stopping watches the same self-supervised loss on a held-out set of
cells; the curve is then scored on every cell against half B, which trained nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._anndata import write_dense_layer
from .._device import resolve_device
from .._progress import progress_bar
from .._rng import make_rng, spawn_seeds
from .._validation import check_real, check_whole
from ..calibration import CalibrationResult, Family, Knob, calibrate_counts
from ..losses import Halves, block_loss, dense_rows, poisson_deviance
from ..transforms import library_sizes, normalised_values
from .autoencoder_batched import fit_autoencoders_batched
from .autoencoder_nets import (
    DEFAULT_WIDTHS,
    RowBatches,
    TrainSettings,
    apply_net,
    build_autoencoder,
    halves_batch_loss,
    holdout_rows,
    mse_batch_loss,
)

__all__ = ["AUTOENCODER", "DEFAULT_WIDTHS", "TrainSettings", "apply_net", "build_autoencoder",
           "calibrate_autoencoder_counts", "fit_autoencoder", "score_autoencoder"]


def fit_autoencoder(values, width: int, settings: TrainSettings, seed: int, batch_loss=None):
    """Train an autoencoder on ``values``, early-stopped on held-out cells' own training loss.

    Validation never looks at half B: the held-out cells' reconstruction decides when to
    stop, so a wide bottleneck that learns to pass noise through is not rescued, and the
    self-supervised loss can show it.

    Parameters
    ----------
    values
        Cells x genes inputs (half A for calibration, the full data for denoising).
    width
        Bottleneck size.
    settings
        Training options; ``val_fraction`` of the cells are held out.
    seed
        Seed of the hold-out, the weights and the batch order.
    batch_loss
        ``batch_loss(output, batch, rows) -> scalar tensor``; default mean squared error.

    Returns
    -------
    ``(net, history)``: the best network and the validation losses per epoch.
    """
    import torch

    batch_loss = batch_loss or mse_batch_loss
    val_rows, fit_rows, _ = holdout_rows(values.shape[0], settings.val_fraction, seed)

    def validate(net, device) -> float:
        net.eval()
        total = 0.0
        with torch.no_grad():
            for rows, batch in RowBatches(values, val_rows, device, 1024)():
                total += float(batch_loss(net(batch), batch, rows)) * rows.size
        return total / val_rows.size

    return train_autoencoder(values, width, fit_rows, batch_loss, validate, settings, seed)


def train_autoencoder(values, width: int, train_rows, batch_loss, validate,
                      settings: TrainSettings, seed: int):
    """Train an autoencoder on rows of ``values``, keeping the epoch that ``validate`` liked best.

    Parameters
    ----------
    values
        Cells x genes inputs (numpy or CSR).
    width
        Bottleneck size.
    train_rows
        Cells to train on.
    batch_loss
        ``batch_loss(output, batch, rows) -> scalar tensor`` to minimise.
    validate
        ``validate(net, device) -> float``, lower is better; training stops after
        ``settings.patience`` epochs without improvement.
    settings
        Training options.
    seed
        Seed of the weights and the batch order.

    Returns
    -------
    ``(net, history)``: the best network and the validation losses per epoch.
    """
    import torch

    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_autoencoder(values.shape[1], width, settings.hidden).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    train = RowBatches(values, train_rows, device, settings.batch_size)
    best, best_state, history, waited = np.inf, None, [], 0
    for _ in range(settings.max_epochs):
        net.train()
        for rows, batch in train(rng.permutation(train_rows.size)):
            optimiser.zero_grad()
            batch_loss(net(batch), batch, rows).backward()
            optimiser.step()
        history.append(validate(net, device))
        if best_state is None or history[-1] < best - 1e-7 * abs(best):
            best, waited = history[-1], 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= settings.patience:
                break
    net.load_state_dict(best_state)
    return net, history


def score_autoencoder(net, halves: Halves, rows: np.ndarray, loss: str, device=None) -> float:
    """Mean self-supervised loss of ``net``'s predictions from half A against half B.

    Parameters
    ----------
    net
        A trained autoencoder.
    halves
        The prepared split.
    rows
        Cells to score.
    loss
        ``"mse"`` or ``"poisson"``, as the net was trained.
    device
        Where the net lives (default: its parameters' device).

    Returns
    -------
    The mean loss over the cells' entries.
    """
    import torch

    device = device or next(net.parameters()).device
    target = halves.target(loss)
    table = halves.conversion_table()
    total = 0.0
    net.eval()
    with torch.no_grad():
        for chosen, batch in RowBatches(halves.a, rows, device, 1024)():
            prediction = net(batch).double().cpu().numpy()
            observed = dense_rows(target, chosen)
            if loss == "poisson":
                expected = halves.expected_b_counts(np.exp(prediction), chosen)
                total += float(poisson_deviance(observed, expected).sum())
            else:
                total += block_loss(prediction, observed, halves, chosen, table, loss)
    return total / (rows.size * halves.a.shape[1])


def check_widths(widths, n_genes: int) -> np.ndarray:
    """Sorted unique widths, each between 1 and the number of genes."""
    for width in np.atleast_1d(widths):
        check_whole(width if not isinstance(width, np.integer) else int(width),
                    name="widths (each value)", hint="a bottleneck width")
    widths = np.unique(np.asarray(widths, dtype=int))
    if widths.size == 0 or widths.min() < 1 or widths.max() > n_genes:
        raise ValueError(
            f"widths must lie between 1 and the number of genes ({n_genes}); got "
            f"{widths.tolist()}."
        )
    return widths


def _grid(widths, shape: tuple[int, int], options: dict) -> np.ndarray:
    if widths is None:
        widths = [w for w in DEFAULT_WIDTHS if w <= shape[1]]
    return check_widths(widths, shape[1])


def _train_settings(options: dict) -> TrainSettings:
    chosen = {f.name: options[f.name] for f in dataclasses.fields(TrainSettings)}
    chosen["hidden"] = tuple(int(h) for h in np.atleast_1d(chosen["hidden"]))
    return TrainSettings(**chosen)


def _check(options: dict, X) -> None:
    train = _train_settings(options)
    resolve_device(train.device)  # a missing accelerator fails before any work
    if not 0 < train.val_fraction < 1:
        raise ValueError(f"val_fraction={train.val_fraction} must lie strictly between 0 and 1.")
    for name in ("max_epochs", "patience", "batch_size"):
        check_whole(options[name], name=name, minimum=1)
    for size in np.atleast_1d(options["hidden"]):
        check_whole(size if not isinstance(size, np.integer) else int(size),
                    name="hidden (each size)", minimum=1, hint="units of a hidden layer")
    check_real(options["lr"], name="lr", minimum=1e-12, hint="Adam's learning rate")


def score_widths(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                 progress: bool | None = None) -> np.ndarray:
    """Train one autoencoder per width on half A and score each against half B."""
    train = _train_settings(options)
    torch_seed = int(np.random.default_rng(spawn_seeds(seed, 1)[0]).integers(2**31 - 1))
    every_cell = np.arange(halves.b.shape[0])
    batch_loss = halves_batch_loss(halves, loss)
    if train.batched:
        nets = fit_autoencoders_batched(halves.a, grid, train, torch_seed, batch_loss)
    else:
        nets = [fit_autoencoder(halves.a, int(w), train, torch_seed, batch_loss)[0]
                for w in progress_bar(grid, desc="autoencoder widths", progress=progress)]
    return np.array([score_autoencoder(net, halves, every_cell, loss) for net in nets])


@dataclass
class FittedAutoencoder:
    """A net trained on the full data, the values it saw, and its validation history."""

    net: Any
    values: Any
    depth: float
    history: list
    n_hidden: int
    width: int


def fit_width(counts, width: int, options: dict, *, transform: str, random_state,
              max_layer_gb: float) -> FittedAutoencoder:
    """Train the final autoencoder of ``width`` on all of the normalised counts."""
    width = int(check_widths([width], counts.shape[1])[0])
    train = _train_settings(options)
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    seed = int(make_rng(random_state).integers(2**31 - 1))
    net, history = fit_autoencoder(values, width, train, seed)
    return FittedAutoencoder(net, values, depth, history, len(train.hidden), width)


def store_autoencoder(adata, fitted: FittedAutoencoder, key: str, max_layer_gb: float) -> dict:
    """Latent codes to ``obsm['X_' + key]``; decoded values to ``layers[key]`` when they fit."""
    adata.obsm[f"X_{key}"] = apply_net(fitted.net, fitted.values, layers=2 * fitted.n_hidden + 1)
    write_dense_layer(adata, key, max_layer_gb, values=lambda: apply_net(fitted.net,
                                                                         fitted.values),
                      way_out=f"The latent codes are in obsm['X_{key}'].")
    return {"width": fitted.width, "history": np.asarray(fitted.history)}


def decoded_values(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """The decoded values of chosen genes, from the layer that ``denoise_autoencoder`` wrote."""
    if key not in adata.layers:
        raise KeyError(
            f"The autoencoder run under {key!r} wrote no dense layer (max_layer_gb); re-run "
            "`tl.denoise_autoencoder` with a larger max_layer_gb."
        )
    return np.asarray(adata.layers[key][:, columns], dtype=np.float32)


AUTOENCODER = Family(
    name="autoencoder",
    grid=Knob("width", grid_arg="widths", default=None, make_grid=_grid),
    score=score_widths, check_options=_check,
    fit=fit_width, store=store_autoencoder, values=decoded_values,
    options={f.name: f.default for f in dataclasses.fields(TrainSettings)},
    fit_options=tuple(f.name for f in dataclasses.fields(TrainSettings)),
    # Its final net is trained by squared error, so its calibration scores by it too (on the
    # NB split, which removes the overdispersion bias; the depth bias of MSE remains).
    denoise_losses=("mse",), split_defaults={"loss": "mse"},
    option_docs={
        "widths": "Bottleneck widths to score, each at most the number of genes; None uses "
                  "1, 2, 4, ..., 128 up to the number of genes.",
        "width": "Bottleneck width. None calibrates it first (or reuses a matching "
                 "calibration stored under ``key_added``).",
        "hidden": "Hidden layer sizes of the encoder (mirrored in the decoder).",
        "max_epochs": "Most epochs of Adam per network.",
        "patience": "Epochs without improvement of the held-out cells' loss before stopping.",
        "batch_size": "Cells per batch.",
        "lr": "Adam's learning rate.",
        "val_fraction": "Share of the cells held out for early stopping.",
        "device": "``\"auto\"`` (CUDA, then MPS, then CPU), ``\"cpu\"`` or ``\"cuda\"``.",
        "batched": "Train every width at once as one batched model (faster on GPUs; "
                   "measured slower on CPUs).",
    },
    summary="Choose an autoencoder's bottleneck width by molecular cross-validation.\n\n"
            "For each width, a network ``genes -> hidden -> width -> hidden -> genes`` is "
            "trained to reconstruct half A, early-stopped on held-out cells' reconstruction of "
            "half A, and scored against half B on every cell. With ``loss=\"poisson\"`` the "
            "net predicts log normalised means, trained by Poisson likelihood on half A's "
            "counts.",
    denoise_summary="Denoise with an autoencoder of a calibrated (or given) bottleneck width."
                    "\n\nThe final network is trained by squared error on the transformed "
                    "scale of the full counts, so its width is calibrated with "
                    "``loss=\"mse\"``.",
    writes="the latent codes to ``obsm['X_' + key_added]``, ``uns[key_added]`` and, when it "
           "fits ``max_layer_gb``, the decoded values on the transformed scale to "
           "``layers[key_added]``.",
)


def calibrate_autoencoder_counts(X, *, train: TrainSettings | None = None,
                                 **options) -> CalibrationResult:
    """Array-level autoencoder calibration (:func:`~sc_noise2self.calibration.calibrate_counts`).

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    train
        Training options as one :class:`TrainSettings` (or pass them as keywords).
    **options
        ``widths``, training options, split options or ``settings=``, and ``progress``.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = widths``.
    """
    if train is not None:
        options = {**dataclasses.asdict(train), **options}
    return calibrate_counts(X, AUTOENCODER, **options)
