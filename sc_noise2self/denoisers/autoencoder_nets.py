"""Autoencoder building blocks shared by sequential and batched training.

The networks, their training settings, dense batches of (sparse) rows on a device, the
training loss on half A and running a trained net over cells. torch is imported inside the
functions, so importing this module does not load it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..losses import Halves, dense_rows

DEFAULT_WIDTHS = (1, 2, 4, 8, 16, 32, 64, 128)


def holdout_rows(n_cells: int, val_fraction: float, seed: int):
    """Seeded validation and training rows: ``val_fraction`` of the cells held out (>= 1)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_cells)
    n_val = max(1, round(val_fraction * n_cells))
    return np.sort(order[:n_val]), np.sort(order[n_val:]), rng


def mse_batch_loss(output, batch, rows):
    """Mean squared error of a batch's reconstruction (the default training loss)."""
    import torch

    return torch.mean((output - batch) ** 2)


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
    # Sequential measured faster on CPU (benchmarks/RESULTS.md): padding every member to the
    # widest bottleneck, and training until the slowest member stops, costs more than it saves.
    batched: bool = False


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
    return nn.Sequential(*perceptron(encoder), *perceptron(encoder[::-1]))


def perceptron(sizes: list[int]) -> list:
    """Linear layers through ``sizes`` with ReLUs between them (none after the last)."""
    from torch import nn

    layers: list = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return layers[:-1]


class RowBatches:
    """Dense torch batches of rows of a (sparse) matrix, on a device."""

    def __init__(self, X, rows: np.ndarray, device, batch_size: int):
        self.X, self.rows, self.device, self.batch_size = X, rows, device, batch_size

    def __call__(self, order: np.ndarray | None = None):
        """Yield ``(rows, dense tensor)`` batches, in ``order`` of the rows if given."""
        import torch

        rows = self.rows if order is None else self.rows[order]
        for start in range(0, rows.size, self.batch_size):
            chosen = rows[start : start + self.batch_size]
            block = dense_rows(self.X, chosen).astype(np.float32)
            yield chosen, torch.from_numpy(block).to(self.device)


def halves_batch_loss(halves: Halves, loss: str):
    """The training loss on half A: squared error, or Poisson likelihood of A's counts."""
    if loss == "mse":
        return None

    def poisson(output, batch, rows):
        return training_loss(output, batch, halves, rows, loss)

    return poisson


def training_loss(output, batch, halves: Halves, rows, loss: str):
    """Loss of a batch on half A: squared error, or Poisson likelihood of A's counts."""
    import torch

    if loss == "mse":
        return torch.mean((output - batch) ** 2)
    # Poisson on half A's own counts: normalised values times each cell's size factor.
    size = torch.as_tensor(halves.totals_a[rows] / (halves.p * halves.depth),
                           dtype=batch.dtype, device=batch.device)[:, None]
    counts = inverse_transform(batch, halves.transform) * size
    # A cell whose half A is empty has size 0: its term is 0, not 0 * log(0).
    log_size = torch.log(size.clamp_min(1e-12))
    return torch.mean(torch.exp(output) * size - counts * (output + log_size))


def inverse_transform(values, transform: str):
    """Undo ``sqrt`` or ``log1p`` on a torch tensor of transformed values."""
    import torch

    if transform == "sqrt":
        return values**2
    if transform == "log1p":
        return torch.expm1(values)
    return values


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
        for _, batch in RowBatches(values, rows, device, 1024)():
            outputs.append(part(batch).cpu().numpy())
    return np.vstack(outputs)

