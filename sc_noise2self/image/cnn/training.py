"""Step 2-3 for the CNNs: the training loop of a masked network (paper, section 5).

Each training step hides a set J of pixels of every patch (a random subset of density
``1 / mask_stride ** n_spatial``, or one grid phase), replaces them by values that carry no
information about them, and scores the network's output only on J: mask, model, loss. The
network cannot see a hidden pixel, so the loss on J is the self-supervised loss of a
J-invariant function, and its minimiser is the best denoiser (Batson & Royer 2019, section
3). Around the step: weight averaging, validation on a held-out band, early stopping, checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._device import resolve_amp, resolve_device
from ..._progress import progress_bar
from ..._validation import check_choice
from ..checks import as_array, as_float, check_flag
from ..masking_torch import neighbour_mean_torch
from ..referee import BaselineWarning, baseline_wins
from ..structure import resolve_mask
from .config import (
    CPU_COMPILE_MIN_SECONDS,
    CPU_COMPILE_MIN_STEPS,
    DEFAULT_STEPS,
    EARLY_STOP_FROM,
    TRAINING_DEFAULTS,
    VALIDATION_SHARE,
    TrainConfig,
    check_ema,
    check_run,
    resolve_budget,
    training_defaults,
)
from .data import (
    ImageLike,
    Normalisation,
    PatchSampler,
    parse_patch_size,
    prepare_images,
    split_validation,
)
from .grading import baseline_output, report, steps_done
from .masker import MASKINGS, Masker, cnn_reach, masked_loss
from .model import Noise2SelfModel
from .models import MODEL_NAMES, architecture, build_model
from .predict import autocast, padded_forward

__all__ = [
    "DEFAULT_STEPS",
    "EARLY_STOP_FROM",
    "TRAINING_DEFAULTS",
    "TrainConfig",
    "denoise_cnn",
    "train",
]


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on CPU for the duration (CUDA would need a cuBLAS setting)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _should_compile(device: torch.device, steps: int | None, max_time: float | None) -> bool:
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    # Training ends at whichever budget comes first, so both must be long (or absent).
    enough_steps = steps is None or steps >= CPU_COMPILE_MIN_STEPS
    enough_time = max_time is None or max_time >= CPU_COMPILE_MIN_SECONDS
    return enough_steps and enough_time


@contextlib.contextmanager
def _without_jit_deprecation():
    """Silence torch.jit's warning of its own deprecation while compiling.

    ``torch.compile`` imports torch.jit, which warns: torch's business, not the user's
    (issue 27: it was printed during every compiled run).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated",
                                category=DeprecationWarning)
        yield


class _Trainer:
    """One training run: the loop, validation, early stopping and the best checkpoint."""

    def __init__(self, net, config: TrainConfig, masker: Masker, device, amp_dtype, compile_):
        self.net, self.config, self.masker, self.device = net, config, masker, device
        self.amp_dtype = amp_dtype
        with _without_jit_deprecation():
            self.forward = torch.compile(net) if compile_ else net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        # fp16 needs loss scaling against underflow; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.generator = torch.Generator(device=device).manual_seed(config.random_state)
        self.history: dict[str, Any] = {
            key: [] for key in ("epoch", "step", "time", "lr", "train_loss", "val_loss")
        }
        self.best: tuple[float, dict] | None = None
        # The weights that are validated and kept: an average of the live ones, or them.
        self.kept = copy.deepcopy(net) if config.ema > 0 else net
        self.steps_done = 0
        self.bad_epochs = 0  # validations in a row without improvement, once they count
        #: The grid phases each validation scores (None: every phase, every pixel once).
        self.val_phases: list[int] | None = None

    def step(self, batch: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mask = self.masker.sample(batch, self.generator)
        masked = self.masker.replace(batch, mask, self.generator)
        with autocast(self.device, self.amp_dtype):
            output = self._forward(masked)
        loss = masked_loss(output, batch, mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps_done += 1
        if self.kept is not self.net:
            self._average_weights()
        # A tensor, not a float: reading it would wait for the GPU at every step.
        return loss.detach()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            with _without_jit_deprecation():
                return padded_forward(self.forward, x)
        except Exception as error:  # compilation runs, and fails, at the first call
            if self.forward is self.net:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training "
                          "goes on without it (pass compile=False to skip it).", stacklevel=3)
            self.forward = self.net
            return padded_forward(self.net, x)

    @torch.no_grad()
    def _average_weights(self) -> None:
        # The warm-up (1 + n) / (10 + n) keeps the first, random weights from lingering.
        n = self.steps_done
        weight = 1.0 - min(self.config.ema, (1.0 + n) / (10.0 + n))
        for averaged, live in zip(self.kept.parameters(), self.net.parameters(), strict=True):
            averaged.lerp_(live, weight)
        for averaged, live in zip(self.kept.buffers(), self.net.buffers(), strict=True):
            # Batch-norm statistics are averaged like the weights they normalise (copying the
            # live ones pairs averaged weights with the latest batches' statistics).
            if averaged.is_floating_point():
                averaged.lerp_(live, weight)
            else:
                averaged.copy_(live)

    @torch.no_grad()
    def validate(self, val_set: list[torch.Tensor],
                 phases: Sequence[int] | None = None) -> float:
        self.kept.eval()
        # Reseeded: every epoch sees the same stand-in values, so epochs compare fairly.
        generator = torch.Generator(device=self.device).manual_seed(self.config.random_state + 1)
        phases = self.val_phases if phases is None else phases
        total, count = 0.0, 0.0
        for target in val_set:
            # Whole grid phases, the same each epoch, so each scored pixel is scored once:
            # one random mask of density 1/25 would score a 51 x 512 band on about 1000
            # pixels, too few to tell epochs apart (the loss is mostly noise variance).
            for masked, mask in self.masker.every_phase(target, generator, phases):
                with autocast(self.device, self.amp_dtype):
                    output = padded_forward(self.kept, masked)
                n = float(mask.sum()) * target.shape[1]
                total += float(masked_loss(output, target, mask)) * n
                count += n
        self.net.train()
        return total / max(count, 1.0)

    @torch.no_grad()
    def baseline(self, val_set: list[torch.Tensor]) -> float:
        """Held-out loss of the J-invariant neighbour mean on the pixels :meth:`validate` scores."""
        total, count = 0.0, 0.0
        for target in val_set:
            m = self.masker
            squares = (neighbour_mean_torch(target.float(), "mean", m.line_axes, m.reach)
                       - target.float()) ** 2
            for mask in self.masker.phase_masks(target, self.val_phases):
                hidden = mask.expand_as(squares)
                total += float(squares[hidden].sum())
                count += float(hidden.sum())
        return total / max(count, 1.0)

    def choose_val_phases(self, train_seconds: float, phase_seconds: float) -> None:
        """Score as many phases as keep validation within :data:`VALIDATION_SHARE` of the time.

        ``train_seconds`` is an epoch's training, ``phase_seconds`` one phase's validation.
        The phases are spread over the grid and stay the same every epoch.
        """
        n = self.masker.n_phases
        affordable = VALIDATION_SHARE / (1 - VALIDATION_SHARE) * train_seconds
        k = int(np.clip(affordable // max(phase_seconds, 1e-9), 1, n))
        self.val_phases = None if k == n else sorted(set(np.linspace(0, n - 1, k).round()
                                                         .astype(int).tolist()))
        self.history["val_phases"] = k

    def record(self, epoch, step, elapsed, lr, train_losses, val_loss) -> None:
        train_loss = float(torch.stack(train_losses).float().mean())
        values = (epoch, step, elapsed, lr, train_loss, val_loss)
        for key, value in zip(
            ("epoch", "step", "time", "lr", "train_loss", "val_loss"), values, strict=True
        ):
            self.history[key].append(value)

    def improved(self, val_loss: float) -> bool:
        """Keep the weights when the loss beats the best by a relative 1e-4."""
        if self.best is not None and not val_loss < self.best[0] * (1 - 1e-4):
            return False
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.kept.state_dict().items()}
        self.best = (val_loss, state)
        return True


def train(
    images: ImageLike,
    model: str = "unet",
    *,
    steps: int | None = None,
    epochs: int | None = None,
    max_time: float | None = None,
    batch_size: int | None = None,
    patch_size: int | Sequence[int] = 64,
    lr: float | None = None,
    masking: str = "grid",
    replacement: str | None = None,
    mask_stride: int | None = None,
    mask: str | tuple[int, ...] = "auto",
    val_fraction: float = 0.1,
    steps_per_epoch: int = 50,
    patience: int = 20,
    channel_axis: int | None = None,
    n_spatial: int | None = None,
    model_kwargs: dict | None = None,
    device: str | torch.device = "auto",
    amp: bool | str | None = None,
    compile: bool | None = None,
    ema: float | None = None,
    random_state: int = 0,
    progress: bool | None = None,
    checkpoint_dir: str | Path | None = None,
    callback: Callable[[Noise2SelfModel], bool | None] | None = None,
) -> Noise2SelfModel:
    """Train a masked CNN on noisy images alone with the Noise2Self loss.

    Parameters
    ----------
    images
        One 2D image or 3D volume, a stack (with ``n_spatial``, images along axis 0), or a
        list of differently sized arrays; integer or float, never modified.
    model
        ``"unet"`` or ``"dncnn"``.
    steps, epochs, max_time
        Budget: optimiser steps, or epochs of ``steps_per_epoch`` steps, and/or a wall-clock
        limit in seconds; training ends at whichever comes first. With none of them,
        :data:`DEFAULT_STEPS` steps. The learning rate follows the step or time progress.
        ``max_time`` covers the validations too: they take at most about 5% of it
        (:data:`~sc_noise2self.image.cnn.config.VALIDATION_SHARE`; see ``val_fraction``),
        and stepping stops early enough for the last one to end in time (at least one step
        is always taken). A run that ends on its budget while the held-out loss is still
        falling warns (:class:`ConvergenceWarning`).
    batch_size, patch_size
        Random patches per step and their size (clipped to the smallest image).
        ``batch_size`` None takes the network's value in :data:`TRAINING_DEFAULTS` (8 for
        the UNet, 16 for the DnCNN).
    lr
        Peak learning rate of Adam (linear warm-up, cosine decay); None takes the
        network's value in :data:`TRAINING_DEFAULTS` (1e-2 for the UNet, 5e-3 for the
        DnCNN).
    masking, replacement, mask_stride
        Which pixels are hidden and what replaces them; see :class:`Masker`. ``replacement``
        None means ``"mean"`` for grid masking and ``"random"`` for random masking;
        ``mask_stride`` None means 4 for grid masking and 5 (density 1/25, the paper's) for
        random masking. The grid with neighbour means is the default because it trained
        better at equal steps: +1.2 dB on camera after 800 steps, +0.6 dB after 3000
        (benchmarks/RESULTS.md). ``masking="random"`` is the paper's section 5 recipe.
    mask
        The unit hidden, as in :func:`~sc_noise2self.image.calibrate`: ``"pixel"``,
        ``"rows"``, ``"columns"``, a tuple of spatial axes, or ``"auto"`` (default): whole
        lines along the axes where :func:`~sc_noise2self.image.noise_correlation` finds the
        first image's noise correlated (structN2V's mask, grown to the whole line), blocks
        around each scored pixel when it is correlated along every axis (``"blocks"``; grid
        masking), pixels otherwise. Kept in the model's ``config.line_axes`` and
        ``config.reach``.
    val_fraction
        Share of every image (a band along its longest axis) held out to score the
        self-supervised loss after each epoch; 0 turns validation and early stopping off.
        Every grid phase of the band is scored (``mask_stride ** n_spatial`` passes), with
        the stand-ins of ``replacement``, whichever ``masking`` trains; under ``max_time``,
        as many phases as fit in 5% of the first epoch's time (at least one, the same every
        epoch, ``history["val_phases"]``), and the neighbour mean is graded on those pixels.
    steps_per_epoch, patience
        Steps between validations; stop after ``patience`` epochs without improvement,
        counted from the second half of the learning-rate schedule on
        (:data:`EARLY_STOP_FROM`), when the decaying rate lets the held-out loss settle.
        A budget shorter than ``2 * patience`` epochs (the default 2000 steps is 40) thus
        always runs to its end.
    channel_axis
        Channel axis of one image, or None.
    n_spatial
        2 or 3; None means every non-channel axis of one array is spatial.
    model_kwargs
        Architecture options, e.g. ``{"channels": (16, 32, 64)}`` for the UNet or
        ``{"depth": 8, "features": 64}`` for the DnCNN.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    amp
        Mixed precision; see :func:`~sc_noise2self._device.resolve_amp` (on by default on
        CUDA only).
    compile
        Compile the network with :func:`torch.compile`. None: on CUDA always, and on the CPU
        when the budget is long enough to repay the compile time (``max_time`` of at least
        :data:`CPU_COMPILE_MIN_SECONDS` or ``steps`` of at least
        :data:`CPU_COMPILE_MIN_STEPS`). On 2 CPU cores, compiling took about 20 s and then
        ran DnCNN 8x32 steps 4.6 times faster (benchmarks/RESULTS.md). If compilation fails
        (e.g. no C++ compiler), training warns and goes on without it.
    ema
        Keep an exponential moving average of the weights with this decay (e.g. 0.999, with
        a shorter warm-up average early on) and validate, keep and return the averaged
        weights; 0 turns it off; None takes the network's value in
        :data:`TRAINING_DEFAULTS` (0.99 for the UNet, off for the DnCNN). The
        self-supervised gradient is noisy (the loss is mostly noise variance), and averaging
        smooths it out.
    random_state
        Seed of the initialisation, patches and masks; on CPU, the same seed and a step
        budget give bit-identical weights.
    progress
        A tqdm progress bar over steps: True, False, or None to show it when scanpy's
        verbosity is at least info on a terminal or in a notebook.
    checkpoint_dir
        Folder where the best model so far is saved as ``best.pt`` (replaced as it improves).
    callback
        Called after every epoch with a :class:`Noise2SelfModel` of the weights just
        validated (the averaged ones when ``ema`` is on) and the ``.history`` so far, e.g. to
        log or to score predictions against a clean reference. Returning True stops training
        (``history["stopped"] == "callback"``); the best weights are still the ones returned.
        It must not change the weights; its time counts against ``max_time``.

    Returns
    -------
    The trained :class:`Noise2SelfModel`, holding the weights with the lowest validation
    loss (the last weights when ``val_fraction=0``), and ``.history``. Its held-out loss
    (:attr:`~Noise2SelfModel.val_loss`) is compared with the J-invariant neighbour mean's
    on the same band (:attr:`~Noise2SelfModel.baseline_loss`); a network that does not beat
    it (:attr:`~Noise2SelfModel.beats_baseline` False) warns with both losses
    (:class:`~sc_noise2self.image.referee.BaselineWarning`).
    """
    check_choice(model, MODEL_NAMES, name="model")
    check_run(dict(batch_size=batch_size, lr=lr, mask_stride=mask_stride, ema=ema,
                   val_fraction=val_fraction, steps_per_epoch=steps_per_epoch,
                   patience=patience, random_state=random_state, compile=compile,
                   progress=progress, model_kwargs=model_kwargs,
                   checkpoint_dir=checkpoint_dir, callback=callback))  # fmt: skip
    steps, max_time = resolve_budget(steps, epochs, max_time, steps_per_epoch)
    check_choice(masking, MASKINGS, name="masking")
    torch_device = resolve_device(device)
    amp_dtype = resolve_amp(torch_device, amp)
    arrays, layout = prepare_images(images, channel_axis, n_spatial)
    batch_size, lr, ema = training_defaults(model, batch_size=batch_size, lr=lr, ema=ema)
    if replacement is None:
        replacement = "mean" if masking == "grid" else "random"
    if mask_stride is None:
        mask_stride = 4 if masking == "grid" else 5
    line_axes, reach, _ = resolve_mask(mask, arrays[0], 0)  # the first image, channels first
    reach = cnn_reach(reach, masking, replacement, asked=str(mask) == "blocks")
    masker = Masker(masking, replacement, mask_stride, layout.n_spatial, line_axes, reach)
    config = TrainConfig(
        model, architecture(model, model_kwargs), steps, max_time, int(batch_size),
        parse_patch_size(patch_size, layout.n_spatial), float(lr), masking, replacement,
        int(mask_stride), float(val_fraction), int(steps_per_epoch), int(patience),
        int(random_state), check_ema(ema), line_axes, reach,
    )  # fmt: skip
    normalisation = Normalisation.fit(arrays)
    train_parts, val_parts = split_validation(
        [normalisation.forward(a) for a in arrays], val_fraction
    )
    with torch.random.fork_rng(devices=[]), _deterministic(torch_device):
        torch.manual_seed(config.random_state)  # forked: the caller's global RNG is untouched
        net = build_model(
            model, in_channels=arrays[0].shape[0], out_channels=arrays[0].shape[0],
            n_spatial=layout.n_spatial, **config.model_kwargs,
        )  # fmt: skip
        fitted = Noise2SelfModel(net, layout, normalisation, config).to(torch_device)
        compile_ = _should_compile(torch_device, steps, max_time) if compile is None else compile
        trainer = _Trainer(net, config, masker, torch_device, amp_dtype, compile_)
        sampler = PatchSampler(
            [torch.as_tensor(p, device=torch_device) for p in train_parts],
            config.patch_size, np.random.default_rng(config.random_state),
            transpose=not line_axes,
        )  # fmt: skip
        val_set = [torch.as_tensor(part, device=torch_device)[None] for part in val_parts]
        _run(trainer, sampler, val_set, fitted, progress, checkpoint_dir, callback)
    report(fitted)
    return fitted


def _run(trainer: _Trainer, sampler, val_set, fitted: Noise2SelfModel, progress, checkpoint_dir,
         callback=None):
    """The loop: steps until the budget ends, the held-out loss plateaus or the callback stops.

    With ``max_time``, the budget keeps room for what follows the last step: the epoch's end
    (validation, callback, checkpoint), timed each epoch and once before training, and one
    step; the learning-rate schedule ends with it.
    """
    config = trainer.config
    bar = progress_bar(None, desc=f"Noise2Self {config.model}", total=config.steps,
                       progress=progress)
    start = time.perf_counter()
    timed = config.max_time is not None and bool(val_set)
    # Under a time budget, validation takes a share of it (choose_val_phases), fixed at the
    # first epoch's end from one phase's cost, timed here; otherwise every phase.
    phase_seconds = _time_one_phase(trainer, val_set) if timed else 0.0
    reserve = phase_seconds
    if val_set and not timed:
        trainer.history["baseline_loss"] = trainer.baseline(val_set)
    step, epoch, losses, step_seconds = 0, 0, [], 0.0
    stop = None
    trainer.net.train()
    while stop is None:
        elapsed = time.perf_counter() - start
        # At least one step, however short the budget: a model needs one to exist.
        stop = _budget_spent(config, step, elapsed + reserve + step_seconds) if step else None
        if stop is None:
            lr = config.learning_rate(config.progress(step, elapsed + reserve))
            began = time.perf_counter()
            losses.append(trainer.step(sampler.batch(config.batch_size), lr))
            if step:  # the first step also compiles: it would overstate the others
                step_seconds = time.perf_counter() - began
            step += 1
            bar.update()
        if losses and (step % config.steps_per_epoch == 0 or stop is not None):
            began = time.perf_counter()
            epoch += 1
            if timed and epoch == 1:
                trainer.choose_val_phases(began - start - phase_seconds, phase_seconds)
                trainer.history["baseline_loss"] = trainer.baseline(val_set)
            val_loss = trainer.validate(val_set) if val_set else float("nan")
            trainer.record(epoch, step, time.perf_counter() - start, lr, losses, val_loss)
            bar.set_postfix(loss=f"{trainer.history['train_loss'][-1]:.4g}", val=f"{val_loss:.4g}")
            losses = []
            late = config.progress(step, elapsed + reserve) >= EARLY_STOP_FROM
            if val_set and _keep_or_count(trainer, fitted, val_loss, late, checkpoint_dir):
                stop = stop or "plateau"
            if callback is not None and callback(_kept_model(trainer, fitted)):
                stop = stop or "callback"
            trainer.net.train()  # the callback may have predicted, which sets eval mode
            reserve = time.perf_counter() - began
    bar.close()
    _finish(trainer, fitted, stop)


def _time_one_phase(trainer: _Trainer, val_set) -> float:
    """Seconds the validation of one grid phase takes: what a validation costs per phase.

    Validation changes neither the weights nor the training's random streams, so this
    extra pass leaves the run as it would have been.
    """
    began = time.perf_counter()
    trainer.validate(val_set, phases=[trainer.masker.n_phases // 2])
    return time.perf_counter() - began


def _kept_model(trainer: _Trainer, fitted: Noise2SelfModel) -> Noise2SelfModel:
    """The weights just validated (the averaged copy when ema is on), ready to predict."""
    return Noise2SelfModel(trainer.kept, fitted.layout, fitted.normalisation, fitted.config,
                           trainer.history)  # fmt: skip


def _keep_or_count(trainer, fitted, val_loss: float, late: bool, checkpoint_dir) -> bool:
    """Keep (and save) improved weights, else count a plateau epoch once ``late``.

    Returns
    -------
    True when ``patience`` plateau epochs have passed in a row.
    """
    if trainer.improved(val_loss):
        trainer.bad_epochs = 0
        fitted.history = trainer.history
        if checkpoint_dir is not None:
            # Each improvement replaces the last best; the write is atomic.
            _kept_model(trainer, fitted).save(Path(checkpoint_dir) / "best.pt", overwrite=True)
    elif late:
        trainer.bad_epochs += 1
    return trainer.bad_epochs >= trainer.config.patience


def _budget_spent(config: TrainConfig, step: int, elapsed: float) -> str | None:
    if config.steps is not None and step >= config.steps:
        return "steps"
    if config.max_time is not None and elapsed >= config.max_time:
        return "max_time"
    return None


def _finish(trainer: _Trainer, fitted: Noise2SelfModel, stop: str) -> None:
    """Restore the best weights and complete the history."""
    history = trainer.history
    if trainer.best is not None:
        trainer.net.load_state_dict(trainer.best[1])
        history["best_epoch"] = history["epoch"][int(np.nanargmin(history["val_loss"]))]
    else:
        trainer.net.load_state_dict(trainer.kept.state_dict())  # no validation: the last
        history["best_epoch"] = history["epoch"][-1] if history["epoch"] else 0
    history["stopped"] = stop
    trainer.net.eval()
    fitted.history = history


def denoise_cnn(
    image: np.ndarray,
    model: str = "unet",
    *,
    channel_axis: int | None = None,
    invariant: bool | None = None,
    augment: bool = True,
    tile_size: int | Sequence[int] | None = None,
    fallback: bool = True,
    return_model: bool = False,
    **train_kwargs,
) -> np.ndarray | tuple[np.ndarray, Noise2SelfModel | None]:
    """Train a Noise2Self CNN on one image and return the image denoised by it.

    The network is graded by its held-out self-supervised loss against the J-invariant
    neighbour mean's (with ``val_fraction=0``, by :meth:`Noise2SelfModel.score` on the image
    itself): when it does not beat it, a
    :class:`~sc_noise2self.image.referee.BaselineWarning` gives both losses.

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with channels; never modified.
    model
        ``"unet"`` or ``"dncnn"``.
    channel_axis
        Channel axis, or None.
    invariant, augment, tile_size
        As in :meth:`Noise2SelfModel.predict` (``invariant`` None: J-invariant for a model
        that hides whole lines, a direct pass otherwise). ``augment`` is on here (8 passes
        in 2D; 4, without transposes, for a model that hides lines): the mean over flips and
        transposes added 0.06 to 0.55 dB in every camera run where it was scored
        (benchmarks/RESULTS.md), at a small cost next to training.
    fallback
        When the network loses to the neighbour mean, return the neighbour mean (the better
        of the two) instead of its prediction; False returns the prediction anyway.
    return_model
        Also return the trained :class:`Noise2SelfModel`.
    **train_kwargs
        Passed to :func:`train` (``max_time``, ``steps``, ``device``, ``random_state``, ...).

    Returns
    -------
    The denoised float image, or ``(denoised, model)``. A constant image is returned
    unchanged with a warning (and None as its model).
    """
    check_flag(invariant, "invariant", allow_none=True)
    for name, value in (("augment", augment), ("fallback", fallback),
                        ("return_model", return_model)):  # fmt: skip
        check_flag(value, name)
    floats = as_float(as_array(image))
    if floats.size and floats.min() == floats.max():
        warnings.warn(f"image is constant (every value is {floats.flat[0]:.6g}): it has no noise "
                      "to remove, so it is returned unchanged.", UserWarning, stacklevel=2)
        same = floats.astype(np.result_type(floats.dtype, np.float32), copy=True)
        return (same, None) if return_model else same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaselineWarning)  # graded once below, with the outcome
        fitted = train(image, model, channel_axis=channel_axis, **train_kwargs)
    denoised = fitted.predict(image, invariant=invariant, augment=augment, tile_size=tile_size)
    loss, baseline = fitted.val_loss, fitted.baseline_loss
    if loss is None or baseline is None:  # no held-out band: grade on the image itself
        loss, baseline = fitted.score(image).values()
    what = f"The {model} trained on this image ({steps_done(fitted.history)})"
    if baseline_wins(what, loss, baseline, fallback,
                     advice="train longer (steps=, max_time=), or "):
        denoised = baseline_output(fitted, floats)
    return (denoised, fitted) if return_model else denoised
