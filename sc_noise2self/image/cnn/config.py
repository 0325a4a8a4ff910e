"""What defines a training run: the settings record, its defaults, budget and schedule.

:class:`TrainConfig` is stored with every saved model, so it sits below the trainer, the
model and the file format, which all read it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..._validation import check_real, check_whole
from ..checks import check_flag

#: CPU budgets from which ``compile=None`` compiles (the compile time is then repaid).
CPU_COMPILE_MIN_SECONDS = 60.0
CPU_COMPILE_MIN_STEPS = 500
#: Share of the learning-rate schedule after which a plateau may stop training. Before it the
#: rate is high and the held-out loss swings from epoch to epoch: on the full camera image a
#: 900 s CPU budget stopped at 292 s on such swings (benchmarks/RESULTS.md).
EARLY_STOP_FROM = 0.5
#: Share of a ``max_time`` budget that validation may take (issue 27): a 48 x 192 x 192
#: stack spent 238 s of a 60 s budget validating every phase of its held-out band before
#: training. Under a time budget each validation scores as many grid phases as fit.
VALIDATION_SHARE = 0.05
#: Steps when neither ``steps``, ``epochs`` nor ``max_time`` is given.
DEFAULT_STEPS = 2000
#: What ``batch_size``, ``lr`` and ``ema`` of None mean, per network. Each set won on the
#: 256 x 256 camera crop with 240 s of compiled training on 2 CPU cores (benchmarks/RESULTS.md):
#: the UNet with 8 patches at 1e-2 and averaged weights reached 28.55 dB with ``augment=True``
#: (28.37 dB with the DnCNN's set), while the DnCNN 8x32 lost 0.54 dB with the UNet's set.
TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    "unet": {"batch_size": 8, "lr": 1e-2, "ema": 0.99},
    "dncnn": {"batch_size": 16, "lr": 5e-3, "ema": 0.0},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored with the model.

    Parameters
    ----------
    model, model_kwargs
        Network name and architecture options.
    steps, max_time
        Budget: optimiser steps (None: no step limit) and wall-clock seconds (None: none).
    batch_size, patch_size, lr
        Patches per step, patch size per axis, peak learning rate of Adam.
    masking, replacement, mask_stride
        See :class:`Masker`.
    val_fraction, steps_per_epoch, patience
        Validation: share held out, steps between validations, epochs without improvement
        before stopping.
    random_state
        Seed of the network's initialisation, the patches and the masks.
    ema
        Decay of the exponential moving average of the weights that is validated, kept and
        returned; 0 keeps the raw weights.
    line_axes
        Spatial axes along which whole lines are hidden, for noise correlated along them
        (see :class:`Masker`).
    reach
        Half-width of the block hidden around each scored pixel, for noise correlated along
        every axis (0: none; see :class:`Masker`).
    """

    model: str
    model_kwargs: dict
    steps: int | None
    max_time: float | None
    batch_size: int
    patch_size: tuple[int, ...]
    lr: float
    masking: str
    replacement: str
    mask_stride: int
    val_fraction: float
    steps_per_epoch: int
    patience: int
    random_state: int
    ema: float = 0.0  # a default, so that models saved before it load
    line_axes: tuple[int, ...] = ()  # likewise: spatial axes hidden in whole lines
    reach: int = 0  # likewise: half-width of the blocks hidden around scored pixels

    def progress(self, step: int, elapsed: float) -> float:
        """How far training is, in [0, 1], by steps or by time, whichever is further.

        Parameters
        ----------
        step
            Steps done.
        elapsed
            Seconds since training started.

        Returns
        -------
        The fraction; the learning-rate schedule follows it, so a time budget still ends
        with a low learning rate.
        """
        by_steps = step / self.steps if self.steps else 0.0
        by_time = elapsed / self.max_time if self.max_time else 0.0
        return min(1.0, max(by_steps, by_time))

    def learning_rate(self, progress: float) -> float:
        """Linear warm-up over the first 5%, then cosine decay to 1% of ``lr``.

        Parameters
        ----------
        progress
            From :meth:`progress`.

        Returns
        -------
        The learning rate.
        """
        warmup = 0.05
        if progress < warmup:
            return self.lr * (0.1 + 0.9 * progress / warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
        return self.lr * (0.01 + 0.99 * cosine)


def resolve_budget(
    steps: int | None, epochs: int | None, max_time: float | None, per_epoch: int
) -> tuple[int | None, float | None]:
    """The step and time budget of a run, checked.

    Parameters
    ----------
    steps, epochs
        Optimiser steps, or epochs of ``per_epoch`` steps (not both); None for no limit.
    max_time
        Wall-clock seconds, or None.
    per_epoch
        Steps per epoch.

    Returns
    -------
    ``(steps, max_time)``; :data:`DEFAULT_STEPS` steps when nothing is given.
    """
    for name, value in (("steps", steps), ("epochs", epochs)):
        if value is not None:
            check_whole(value, name=name, minimum=1, hint="or None for no limit")
    if max_time is not None:
        check_real(max_time, name="max_time", minimum=0.0, hint="seconds, or None")
        if not max_time > 0:
            raise ValueError(f"max_time={max_time} must be positive: the seconds training "
                             "may take, validation included (or None for no limit).")
    if steps is not None and epochs is not None:
        raise ValueError("Pass steps or epochs, not both (an epoch is steps_per_epoch steps).")
    if epochs is not None:
        steps = int(epochs) * per_epoch
    if steps is None and max_time is None:
        steps = DEFAULT_STEPS
    return (None if steps is None else int(steps)), (None if max_time is None
                                                      else float(max_time))


def check_run(options: dict) -> None:
    """Check the settings of a training run before any work, naming the one that is wrong.

    Parameters
    ----------
    options
        ``batch_size``, ``lr``, ``mask_stride``, ``ema`` (each None for the default),
        ``val_fraction``, ``steps_per_epoch``, ``patience``, ``random_state``, ``compile``,
        ``progress``, ``model_kwargs``, ``checkpoint_dir`` and ``callback``, as given.
    """
    optional_whole = {"batch_size": (1, "patches per step"), "mask_stride": (2, "grid spacing")}
    for name, (minimum, hint) in optional_whole.items():
        if options[name] is not None:
            check_whole(options[name], name=name, minimum=minimum, hint=hint)
    for name, hint in (("steps_per_epoch", "steps between validations"),
                       ("patience", "epochs without improvement before stopping")):
        check_whole(options[name], name=name, minimum=1, hint=hint)
    check_whole(options["random_state"], name="random_state", minimum=0, hint="a seed")
    if options["lr"] is not None:
        check_real(options["lr"], name="lr", minimum=0.0, hint="Adam's peak learning rate")
    if options["ema"] is not None:
        check_real(options["ema"], name="ema", minimum=0.0, hint="a decay in [0, 1)")
    fraction = check_real(options["val_fraction"], name="val_fraction", minimum=0.0,
                          hint="share of each image held out, at most 0.5")
    if fraction > 0.5:
        raise ValueError(f"val_fraction={fraction} must lie in [0, 0.5] (0.1 is usual).")
    check_flag(options["compile"], "compile", allow_none=True)
    check_flag(options["progress"], "progress", allow_none=True)
    if options["model_kwargs"] is not None and not isinstance(options["model_kwargs"], dict):
        raise TypeError(f"model_kwargs={options['model_kwargs']!r} must be a dict of "
                        "architecture options, e.g. {'depth': 8}, or None.")
    folder = options["checkpoint_dir"]
    if folder is not None and not isinstance(folder, str | os.PathLike):
        raise TypeError(f"checkpoint_dir={folder!r} must be a folder path, or None.")
    if options["callback"] is not None and not callable(options["callback"]):
        raise TypeError(f"callback={options['callback']!r} must be callable (it receives the "
                        "model after every epoch), or None.")


def training_defaults(model: str, **given: float | None) -> tuple[float, ...]:
    """``batch_size``, ``lr`` and ``ema``: the given values, None filled per network.

    Parameters
    ----------
    model
        ``"unet"`` or ``"dncnn"``.
    **given
        The values passed by the user (None for the default), in the order wanted.

    Returns
    -------
    The values, in the order given, from :data:`TRAINING_DEFAULTS` where None.
    """
    defaults = TRAINING_DEFAULTS[model]
    return tuple(defaults[name] if value is None else value for name, value in given.items())


def check_ema(ema: float) -> float:
    """Return the weight-average decay ``ema`` as a float if it lies in [0, 1), else raise.

    Parameters
    ----------
    ema
        The decay (0 for off).

    Returns
    -------
    ``float(ema)``.
    """
    if not 0.0 <= float(ema) < 1.0:
        raise ValueError(f"ema={ema!r} must be in [0, 1): a decay such as 0.999, or 0 for off.")
    return float(ema)
