"""Several autoencoders of different widths trained as one batched model.

Measured slower than sequential training on the CPU (benchmarks/RESULTS.md), kept for GPUs,
where one batched product per layer replaces many small ones.
"""

from __future__ import annotations

import numpy as np

from .._device import resolve_device
from .autoencoder_nets import (
    RowBatches,
    TrainSettings,
    build_autoencoder,
    holdout_rows,
    mse_batch_loss,
)


class StackedAutoencoders:
    """Several autoencoders of different bottleneck widths, trained as one batched model.

    Member i has the architecture of ``build_autoencoder(n_genes, widths[i], hidden)``: every
    member's bottleneck is padded to the largest width and its extra units are masked to
    zero, so they neither carry signal nor receive gradient. One batched matrix product per
    layer replaces one small product per member.
    """

    def __init__(self, n_genes: int, widths, hidden=(128,), device="cpu"):
        import torch
        from torch import nn

        self.widths = [int(w) for w in widths]
        top = max(self.widths)
        # Each member starts as its own network would (same fan-in scaling), zero-padded.
        linears = [[layer for layer in build_autoencoder(n_genes, w, hidden)
                    if isinstance(layer, nn.Linear)] for w in self.widths]
        self.weights, self.biases = [], []
        into, out_of = len(hidden), len(hidden) + 1  # the layers into and out of the bottleneck
        for i in range(len(linears[0])):
            columns = top if i == into else None
            rows = top if i == out_of else None
            weights = [_padded(member[i].weight.T, rows, columns) for member in linears]
            biases = [_padded(member[i].bias[None, :], None, columns) for member in linears]
            self.weights.append(nn.Parameter(torch.stack(weights).to(device)))
            self.biases.append(nn.Parameter(torch.stack(biases).to(device)))
        mask = torch.zeros(len(self.widths), 1, max(self.widths), device=device)
        for i, width in enumerate(self.widths):
            mask[i, :, :width] = 1.0
        self.mask, self.bottleneck = mask, len(hidden)

    def parameters(self):
        """Every weight and bias, for the optimiser."""
        return [*self.weights, *self.biases]

    def __call__(self, x):
        """Outputs of every member, shape ``(members, batch, genes)``."""
        import torch

        h = x.expand(len(self.widths), *x.shape)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if i == self.bottleneck:
                h = h * self.mask
            elif i != last:
                h = torch.relu(h)
        return h

    def state(self) -> list:
        """A detached copy of the parameters."""
        return [p.detach().clone() for p in self.parameters()]

    def load(self, states: list, members: np.ndarray) -> None:
        """Restore the given members' parameters from ``states``."""
        import torch

        with torch.no_grad():
            for param, saved in zip(self.parameters(), states, strict=True):
                param[members] = saved[members]

    def member(self, index: int):
        """A callable ``x -> output`` of one member, for scoring."""
        return _Member(self, index)


def _padded(tensor, rows: int | None, columns: int | None):
    """``tensor`` zero-padded to ``rows`` x ``columns`` (None keeps that size)."""
    import torch

    out = torch.zeros(rows or tensor.shape[0], columns or tensor.shape[1], dtype=tensor.dtype)
    out[: tensor.shape[0], : tensor.shape[1]] = tensor.detach()
    return out


class _Member:
    def __init__(self, stack: StackedAutoencoders, index: int):
        self.stack, self.index = stack, index

    def __call__(self, x):
        return self.stack(x)[self.index]

    def parameters(self):
        return iter(self.stack.parameters())

    def eval(self):
        return self


def fit_autoencoders_batched(values, widths, settings: TrainSettings, seed: int,
                             batch_loss=None):
    """Train one autoencoder per width at once, each early-stopped on its own validation loss.

    Parameters
    ----------
    values, settings, seed
        As in :func:`~sc_noise2self.denoisers.autoencoder.fit_autoencoder`; every member
        shares the hold-out, and each keeps its own best epoch.
    widths
        Bottleneck widths, one member each.
    batch_loss
        ``batch_loss(output, batch, rows) -> scalar tensor`` of one member (default: MSE).

    Returns
    -------
    One callable ``x -> prediction`` per width (the member at its best epoch).
    """
    import torch

    batch_loss = batch_loss or mse_batch_loss
    device = resolve_device(settings.device)
    val_rows, fit_rows, rng = holdout_rows(values.shape[0], settings.val_fraction, seed)
    torch.manual_seed(seed)
    stack = StackedAutoencoders(values.shape[1], widths, settings.hidden, device)
    optimiser = torch.optim.Adam(stack.parameters(), lr=settings.lr)
    n = len(stack.widths)
    best, waited = np.full(n, np.inf), np.zeros(n, dtype=int)
    active, saved = np.ones(n, dtype=bool), stack.state()
    train = RowBatches(values, fit_rows, device, settings.batch_size)
    for _ in range(settings.max_epochs):
        weights = torch.as_tensor(active, dtype=torch.float32, device=device)
        for rows, batch in train(rng.permutation(fit_rows.size)):
            optimiser.zero_grad()
            outputs = stack(batch)
            sum(weights[i] * batch_loss(outputs[i], batch, rows) for i in range(n)).backward()
            optimiser.step()
        val = _stacked_validation(stack, values, val_rows, device, batch_loss)
        improved = active & (val < best - 1e-7 * np.abs(np.where(np.isfinite(best), best, 0)))
        best[improved], waited[improved] = val[improved], 0
        current = stack.state()
        saved = [torch.where(_member_mask(improved, s), c, s) for c, s in zip(current, saved,
                                                                            strict=True)]
        waited[active & ~improved] += 1
        active &= waited < settings.patience
        if not active.any():
            break
    stack.load(saved, np.arange(n))
    return [stack.member(i) for i in range(n)]


def _member_mask(chosen: np.ndarray, like):
    import torch

    shape = (len(chosen),) + (1,) * (like.ndim - 1)
    return torch.as_tensor(chosen, device=like.device).reshape(shape)


def _stacked_validation(stack, values, rows, device, batch_loss) -> np.ndarray:
    import torch

    totals = np.zeros(len(stack.widths))
    with torch.no_grad():
        for chosen, batch in RowBatches(values, rows, device, 1024)():
            outputs = stack(batch)
            totals += [float(batch_loss(o, batch, chosen)) * chosen.size for o in outputs]
    return totals / rows.size

