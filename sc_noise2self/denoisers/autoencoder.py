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
from ..splitting import spawn_seeds

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
    # A cell whose half A is empty has size 0: its term is 0, not 0 * log(0).
    log_size = torch.log(size.clamp_min(1e-12))
    return torch.mean(torch.exp(output) * size - counts * (output + log_size))


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
    widths=None,
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
        Bottleneck widths to train and score; None uses ``DEFAULT_WIDTHS`` up to the number
        of genes.
    train
        Training options (:class:`TrainSettings`).
    settings
        Split, transform and loss options (:class:`~sc_noise2self.calibration.SplitSettings`).
    progress
        A progress bar over widths (sequential training); None shows it only on a terminal.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = widths``.
    """
    from tqdm.auto import tqdm

    from ..image.training import resolve_device

    settings = settings or SplitSettings()
    train = train or TrainSettings()
    settings = settings.validate(X)
    if widths is None:
        widths = [w for w in DEFAULT_WIDTHS if w <= X.shape[1]]
    widths = check_widths(widths, X.shape[1])
    resolve_device(train.device)  # a missing accelerator fails before any work
    if not 0 < train.val_fraction < 1:
        raise ValueError(f"val_fraction={train.val_fraction} must lie strictly between 0 and 1.")

    def score(halves: Halves, seed) -> np.ndarray:
        torch_seed = int(np.random.default_rng(spawn_seeds(seed, 1)[0]).integers(2**31 - 1))
        every_cell = np.arange(X.shape[0])
        batch_loss = halves_batch_loss(halves, settings.loss)
        if train.batched:
            nets = fit_autoencoders_batched(halves.a, widths, train, torch_seed, batch_loss)
        else:
            hide = None if progress is None else not progress
            nets = [fit_autoencoder(halves.a, int(w), train, torch_seed, batch_loss)[0]
                    for w in tqdm(widths, desc="widths", disable=hide)]
        losses = [score_autoencoder(net, halves, every_cell, settings.loss) for net in nets]
        return np.array(losses)

    curves = run_splits(X, settings, score, progress=False)
    params = dict(settings.params(), hidden=list(train.hidden), max_epochs=train.max_epochs,
                  patience=train.patience, batch_size=train.batch_size, lr=train.lr,
                  val_fraction=train.val_fraction, device=str(train.device),
                  batched=train.batched)
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
    values
        Cells x genes inputs (half A).
    widths
        Bottleneck widths.
    settings
        Training options; ``val_fraction`` of the cells are held out.
    seed
        Seed of the hold-out, the weights and the batch order.
    batch_loss
        ``batch_loss(output, batch, rows) -> scalar tensor`` for one member; default mean
        squared error.

    Returns
    -------
    One callable ``x -> prediction`` per width (the member at its best epoch).
    """
    import torch

    from ..image.training import resolve_device

    batch_loss = batch_loss or (lambda output, batch, rows: torch.mean((output - batch) ** 2))
    device = resolve_device(settings.device)
    rng = np.random.default_rng(seed)
    order = rng.permutation(values.shape[0])
    n_val = max(1, round(settings.val_fraction * values.shape[0]))
    val_rows, fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    torch.manual_seed(seed)
    stack = StackedAutoencoders(values.shape[1], widths, settings.hidden, device)
    optimiser = torch.optim.Adam(stack.parameters(), lr=settings.lr)
    n = len(stack.widths)
    best, waited = np.full(n, np.inf), np.zeros(n, dtype=int)
    active, saved = np.ones(n, dtype=bool), stack.state()
    train = _Batches(values, fit_rows, device, settings.batch_size)
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
        for chosen, batch in _Batches(values, rows, device, 1024)():
            outputs = stack(batch)
            totals += [float(batch_loss(o, batch, chosen)) * chosen.size for o in outputs]
    return totals / rows.size
