"""Count autoencoders, and the self-supervised loss of each bottleneck width.

An autoencoder is trained on half A's transformed values (reconstructing half A) and scored
against half B. Early stopping watches the same self-supervised loss on a held-out set of
cells; the curve is then scored on the other cells, whose half B trained nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..calibration import (
    CalibrationResult,
    Halves,
    SplitSettings,
    block_loss,
    dense_rows,
    poisson_deviance,
    run_splits,
)

DEFAULT_WIDTHS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class TrainSettings:
    """How each autoencoder is trained."""

    hidden: tuple[int, ...] = (128,)
    max_epochs: int = 200
    patience: int = 8
    batch_size: int = 256
    lr: float = 1e-3
    val_fraction: float = 0.1
    device: str = "auto"


def build_autoencoder(n_genes: int, width: int, hidden=(128,)):
    """A fully connected autoencoder ``genes -> hidden -> width -> reversed hidden -> genes``.

    Parameters
    ----------
    n_genes
        Input and output size.
    width
        Bottleneck size.
    hidden
        Sizes of the hidden layers of the encoder (mirrored in the decoder).

    Returns
    -------
    A ``torch.nn.Sequential``.
    """
    from torch import nn

    encoder = [n_genes, *hidden, width]
    return nn.Sequential(*_perceptron(encoder), *_perceptron(encoder[::-1]))


def _perceptron(sizes: list[int]) -> list:
    """Linear layers through ``sizes`` with ReLUs between them (none after the last)."""
    from torch import nn

    layers: list = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return layers[:-1]


class _Batches:
    """Dense torch batches of rows of a (sparse) matrix, on a device."""

    def __init__(self, X, rows: np.ndarray, device, batch_size: int):
        self.X, self.rows, self.device, self.batch_size = X, rows, device, batch_size

    def __call__(self, order: np.ndarray | None = None):
        import torch

        rows = self.rows if order is None else self.rows[order]
        for start in range(0, rows.size, self.batch_size):
            chosen = rows[start : start + self.batch_size]
            block = dense_rows(self.X, chosen).astype(np.float32)
            yield chosen, torch.from_numpy(block).to(self.device)


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

    batch_loss = batch_loss or (lambda output, batch, rows: torch.mean((output - batch) ** 2))
    rng = np.random.default_rng(seed)
    order = rng.permutation(values.shape[0])
    n_val = max(1, round(settings.val_fraction * values.shape[0]))
    val_rows, fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])

    def validate(net, device) -> float:
        net.eval()
        total = 0.0
        with torch.no_grad():
            for rows, batch in _Batches(values, val_rows, device, 1024)():
                total += float(batch_loss(net(batch), batch, rows)) * rows.size
        return total / val_rows.size

    return train_autoencoder(values, width, fit_rows, batch_loss, validate, settings, seed)


def halves_batch_loss(halves: Halves, loss: str):
    """The training loss on half A: squared error, or Poisson likelihood of A's counts."""
    if loss == "mse":
        return None

    def poisson(output, batch, rows):
        return _training_loss(output, batch, halves, rows, loss)

    return poisson


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

    from ..image.training import resolve_device

    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_autoencoder(values.shape[1], width, settings.hidden).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    train = _Batches(values, train_rows, device, settings.batch_size)
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


def _training_loss(output, batch, halves: Halves, rows, loss: str):
    import torch

    if loss == "mse":
        return torch.mean((output - batch) ** 2)
    # Poisson on half A's own counts: normalised values times each cell's size factor.
    size = torch.as_tensor(halves.totals_a[rows] / (halves.p * halves.depth),
                           dtype=batch.dtype, device=batch.device)[:, None]
    counts = _inverse_transform(batch, halves.transform) * size
    return torch.mean(torch.exp(output) * size - counts * (output + torch.log(size)))


def _inverse_transform(values, transform: str):
    import torch

    if transform == "sqrt":
        return values**2
    if transform == "log1p":
        return torch.expm1(values)
    return values


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
        for chosen, batch in _Batches(halves.a, rows, device, 1024)():
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
    widths = np.unique(np.asarray(widths, dtype=int))
    if widths.size == 0 or widths.min() < 1 or widths.max() > n_genes:
        raise ValueError(
            f"widths must lie between 1 and the number of genes ({n_genes}); got "
            f"{widths.tolist()}."
        )
    return widths


def calibrate_autoencoder_counts(
    X,
    *,
    widths=DEFAULT_WIDTHS,
    train: TrainSettings | None = None,
    settings: SplitSettings | None = None,
    progress: bool | None = None,
) -> CalibrationResult:
    """Self-supervised loss of an autoencoder for each bottleneck width.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    widths
        Bottleneck widths to train and score.
    train
        Training options (:class:`TrainSettings`).
    settings
        Split, transform and loss options (:class:`~sc_noise2self.calibration.SplitSettings`).
    progress
        A progress bar over widths; None shows it only on a terminal.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = widths``.
    """
    from tqdm.auto import tqdm

    from ..image.training import resolve_device

    settings = settings or SplitSettings()
    train = train or TrainSettings()
    settings.validate(X)
    widths = check_widths(widths, X.shape[1])
    resolve_device(train.device)  # a missing accelerator fails before any work
    if not 0 < train.val_fraction < 1:
        raise ValueError(f"val_fraction={train.val_fraction} must lie strictly between 0 and 1.")

    def score(halves: Halves, seed) -> np.ndarray:
        torch_seed = int(np.random.default_rng(seed.spawn(1)[0]).integers(2**31 - 1))
        every_cell = np.arange(X.shape[0])
        losses = []
        hide = None if progress is None else not progress
        for width in tqdm(widths, desc="widths", disable=hide):
            net, _ = fit_autoencoder(halves.a, int(width), train, torch_seed,
                                     halves_batch_loss(halves, settings.loss))
            losses.append(score_autoencoder(net, halves, every_cell, settings.loss))
        return np.array(losses)

    curves = run_splits(X, settings, score, progress=False)
    params = dict(settings.params(), hidden=list(train.hidden), max_epochs=train.max_epochs,
                  patience=train.patience, batch_size=train.batch_size, lr=train.lr,
                  val_fraction=train.val_fraction, device=str(train.device))
    return CalibrationResult("width", widths, curves, params)


def apply_net(net, values, rows: np.ndarray | None = None, *, layers: int | None = None):
    """Outputs of ``net`` (or of its first ``layers`` modules) for the given cells.

    Parameters
    ----------
    net
        A network from :func:`build_autoencoder`.
    values
        Cells x genes inputs (numpy or CSR).
    rows
        Cells to run (default all).
    layers
        Run only the first ``layers`` modules: ``2 * len(hidden) + 1`` gives the latent codes.

    Returns
    -------
    Dense float32 array, one row per cell.
    """
    import torch

    rows = np.arange(values.shape[0]) if rows is None else rows
    part = net if layers is None else net[:layers]
    device = next(net.parameters()).device
    outputs = []
    net.eval()
    with torch.no_grad():
        for _, batch in _Batches(values, rows, device, 1024)():
            outputs.append(part(batch).cpu().numpy())
    return np.vstack(outputs)
