"""The plugin's computations, free of Qt and napari, so that they can be tested alone.

The widgets only read their controls, run these functions in a napari thread worker and
put the results on the canvas. Calibration and prediction are generators that yield a
:class:`Progress` between units of work, because a napari generator worker can only be
cancelled (``worker.quit()``) at a ``yield``; training cannot yield from inside
:func:`~sc_noise2self.image.train`, so it takes a stop event that its epoch callback reads.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import image
from .._device import resolve_device
from ..image.budget import CNN_MODEL
from ..image.referee import baseline_wins
from ..image.selection import best_of, each_calibrated
from ..image.structure import resolve_mask

MODEL_CHOICES: tuple[str, ...] = image.CNN_METHODS
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Layout:
    """How a layer's axes map onto what the image API takes.

    Parameters
    ----------
    label
        What the widget shows, with the axes spelled out.
    channel_axis
        The channel axis of the whole array (non-negative), or None.
    stacked
        Axis 0 holds independent images (time points, or z planes denoised one by one).
    """

    label: str
    channel_axis: int | None = None
    stacked: bool = False

    def n_spatial(self, ndim: int) -> int:
        """Spatial axes of one image of an array with ``ndim`` axes.

        Parameters
        ----------
        ndim
            Axes of the whole array.

        Returns
        -------
        2 or 3 for a layout that fits; anything else means it does not.
        """
        return ndim - self.stacked - (self.channel_axis is not None)

    def image_channel_axis(self) -> int | None:
        """The channel axis of one image of the stack (of the array when not stacked).

        Returns
        -------
        The axis, or None.
        """
        if self.channel_axis is None:
            return None
        return self.channel_axis - 1 if self.stacked else self.channel_axis

    def images(self, data: np.ndarray) -> list[np.ndarray]:
        """The independent images of ``data``: its planes when stacked, else itself.

        Parameters
        ----------
        data
            The layer's array.

        Returns
        -------
        A list of views (no copies).
        """
        return list(data) if self.stacked else [data]


def layouts_for(shape: tuple[int, ...], rgb: bool = False) -> list[Layout]:
    """The layouts that fit an array of ``shape``, the most likely first.

    Parameters
    ----------
    shape
        The layer's shape.
    rgb
        napari shows the layer as RGB(A): its last axis holds colours.

    Returns
    -------
    Layouts with 2 or 3 spatial axes per image; empty when none fits.
    """
    ndim = len(shape)
    if rgb:
        last = ndim - 1
        options = [(3, Layout("2D colour image (y, x, rgb)", last)),
                   (4, Layout("stack of 2D colour images (t, y, x, rgb)", last, stacked=True))]
    else:
        options = [
            (2, Layout("2D image (y, x)")),
            (3, Layout("3D volume (z, y, x)")),
            (3, Layout("stack of 2D images (t or z, y, x)", stacked=True)),
            (3, Layout("2D with channels first (c, y, x)", 0)),
            (3, Layout("2D with channels last (y, x, c)", 2)),
            (4, Layout("stack of 3D volumes (t, z, y, x)", stacked=True)),
            (4, Layout("3D with channels first (c, z, y, x)", 0)),
            (4, Layout("stack of 2D with channels (t, c, y, x)", 1, stacked=True)),
            (5, Layout("stack of 3D with channels (t, c, z, y, x)", 1, stacked=True)),
        ]
    return [layout for n, layout in options if n == ndim]


def method_choices(n_spatial: int) -> list[str]:
    """``"auto"`` and the installed built-in methods for images of ``n_spatial`` axes.

    Parameters
    ----------
    n_spatial
        2 or 3.

    Returns
    -------
    Names for the method picker, ``"auto"`` first.
    """
    return ["auto", *image.available_methods(n_spatial)]


def as_working(data) -> np.ndarray:
    """The layer's data as a numpy float array in its own units.

    The image API scales integers into [0, 1]; converting them here keeps the result in the
    layer's units, so the denoised layer can share the input's contrast limits.

    Parameters
    ----------
    data
        Array-like (numpy, dask, zarr, ...).

    Returns
    -------
    float32 for integer or boolean data, the data itself as a numpy array otherwise.
    """
    array = np.asarray(data)
    if not np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    return array


@dataclass(frozen=True)
class Progress:
    """What a worker has done: ``done`` units of ``total``, and what it is doing now."""

    done: int
    total: int
    message: str


@dataclass
class CalibrationRun:
    """The outcome of :func:`calibration_steps`: the denoised array and how it was chosen.

    Attributes
    ----------
    denoised
        Float array of the input's shape.
    calibration
        The chosen method's :class:`~sc_noise2self.image.ImageCalibration` (loss curve,
        best parameters, mixing weight).
    candidates
        Best self-supervised loss of every method compared.
    noise_variance
        The noise variance used for mixing, estimated on the calibrated image.
    calibrated_on
        Index of the plane that was calibrated for a stack, else None.
    warnings
        Messages of the warnings raised on the way (e.g. the baseline referee's).
    seconds
        Wall-clock time.
    choice
        With a time budget, the :class:`~sc_noise2self.image.budget.AutoChoice`: the
        winner among the classical methods and the UNet, and their table; else None.
    """

    denoised: np.ndarray
    calibration: Any
    candidates: dict[str, float]
    noise_variance: float
    calibrated_on: int | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    choice: Any = None

    @property
    def method(self) -> str:
        """The method that denoised: the classical winner's name, or ``"unet"``."""
        return self.choice.method if self.choice is not None else self.calibration.method

    def summary(self) -> str:
        """A few lines for the widget: choice, losses, noise variance, mixing weight.

        Returns
        -------
        Plain text.
        """
        c = self.calibration
        params = ", ".join(f"{k}={_short(v)}" for k, v in c.best_params.items()) or "-"
        lines = [f"method: {self.method}"] if self.method != c.method else []
        lines += [
            f"{'best classical ' if lines else ''}method: {c.method} ({params})",
            f"self-supervised loss: {c.best_loss:.4g}"
            + (f" (neighbour mean: {c.baseline_loss:.4g})" if c.baseline_loss is not None else ""),
            f"noise variance (estimated): {self.noise_variance:.4g}",
            f"mask: {c.settings.get('mask', 'pixel')}",
            f"mix weight: {c.mix_weight:.3f}; expected MSE: {c.expected_error():.4g}",
        ]
        lines += [f"note: the best {name} is the {end} value of the grid"
                  for name, end in c.edge_parameters.items()]
        lines += self._budget_lines()
        if self.calibrated_on is not None:
            lines.append(f"calibrated on plane {self.calibrated_on}; applied to every plane")
        lines += [f"warning: {message}" for message in self.warnings]
        lines.append(f"time: {self.seconds:.1f} s")
        return "\n".join(lines)

    def _budget_lines(self) -> list[str]:
        """The budgeted choice: the winner, then one line per candidate of its table."""
        if self.choice is None:
            return []
        lines = [f"within the time budget: {self.choice.method} wins"
                 + (f" (mix weight {self.choice.cnn_mix_weight:.3f})"
                    if self.choice.method == CNN_MODEL else "")]
        if self.choice.model is None:
            lines.append("  no time was left to train a UNet")
        for row in self.choice.table:
            scored = (f"held-out loss {row['loss']:.4g}, expected MSE "
                      f"{row['expected_error']:.4g}" if row["loss"] is not None
                      else "not scored on the held-out band")
            lines.append(f"  {row['method']}: {row['seconds']:.1f} s, {scored}")
        return lines


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def calibration_steps(
    data,
    layout: Layout,
    method: str = "auto",
    mix: bool = True,
    fallback: bool = True,
    max_time: float | None = None,
) -> Generator[Progress, None, CalibrationRun]:
    """Calibrate denoisers on the layer and denoise it, one step per ``yield``.

    The same choice as ``image.denoise(method=...)``: every method of
    :func:`~sc_noise2self.image.auto_methods` (or the one named) is calibrated with a shared
    noise variance and the lowest self-supervised loss wins. With ``max_time``, the choice of
    ``image.denoise(method="auto", max_time=...)``: the classical methods and a masked UNet
    within that budget, scored on the same held-out pixels. A stack is calibrated on its
    middle plane (its planes share their kind of noise and structure), then every plane is
    denoised with the winner, so a long time series costs one calibration.

    Parameters
    ----------
    data
        The layer's array.
    layout
        Its axes (see :func:`layouts_for`).
    method
        ``"auto"`` or a built-in method name.
    mix
        Mix the output with the input at the optimal weight.
    fallback
        Return the neighbour mean when the chosen method does not beat it.
    max_time
        Seconds for the classical methods and a UNet together (``method="auto"`` only), or
        None for the classical methods alone. The budgeted choice is one step: Cancel
        takes effect after it.

    Yields
    ------
    Progress
        After each method calibrated (or the budgeted choice) and each plane denoised.

    Returns
    -------
    The :class:`CalibrationRun` (the generator's return value).
    """
    started = time.perf_counter()
    array = as_working(data)
    n_spatial = layout.n_spatial(array.ndim)
    if n_spatial not in (2, 3):
        raise ValueError(f"Layout {layout.label!r} does not fit an array of shape {array.shape}.")
    channel_axis = layout.image_channel_axis()
    planes = layout.images(array)
    reference = len(planes) // 2
    choose = _classical_choice if max_time is None else _budgeted_choice
    chosen = yield from choose(planes[reference], channel_axis, method, mix, fallback,
                               max_time, n_planes=len(planes))
    outputs, caught = [], list(chosen.warnings)
    total = chosen.steps + len(planes)
    for i, plane in enumerate(planes):
        yield Progress(chosen.steps + i, total, f"denoising with {chosen.method}"
                       + (f" (plane {i + 1} of {len(planes)})" if layout.stacked else ""))
        if i == reference and chosen.reference_output is not None:
            outputs.append(chosen.reference_output)
            continue
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            outputs.append(chosen.apply(plane))
        caught += [str(r.message) for r in records if str(r.message) not in caught]
    yield Progress(total, total, "done")
    denoised = np.stack(outputs) if layout.stacked else outputs[0]
    return CalibrationRun(denoised, chosen.calibration, dict(chosen.calibration.candidates),
                          chosen.calibration.noise_variance,
                          reference if layout.stacked else None, caught,
                          time.perf_counter() - started, chosen.choice)  # fmt: skip


@dataclass
class _Chosen:
    """What denoises every plane, as chosen on the reference plane."""

    calibration: Any
    apply: Callable[[np.ndarray], np.ndarray]
    steps: int
    warnings: list[str]
    choice: Any = None
    reference_output: np.ndarray | None = None

    @property
    def method(self) -> str:
        """The winner's name: the budgeted choice's, else the calibration's."""
        return self.choice.method if self.choice is not None else self.calibration.method


def _classical_choice(plane, channel_axis, method, mix, fallback, max_time, *, n_planes):
    """``image.denoise``'s classical choice, one step per method (``max_time`` is None)."""
    names = image.auto_methods(plane.ndim - (channel_axis is not None)) if method == "auto" \
        else [method]
    total = len(names) + n_planes
    with warnings.catch_warnings(record=True) as found:  # said in the summary instead
        warnings.simplefilter("always")
        masking = resolve_mask("auto", plane, channel_axis)
    noise_variance = image.estimate_noise_variance(plane, channel_axis=channel_axis,
                                                   line_axes=masking.line_axes,
                                                   reach=masking.reach)
    runs = each_calibrated(plane, names, progress=False, mask=masking,
                           noise_variance=noise_variance, channel_axis=channel_axis)
    calibrations = []
    for i, name in enumerate(names):  # image.denoise's choice, with progress between methods
        yield Progress(i, total, f"calibrating {name}")
        calibrations.append(next(runs))
    best = best_of(calibrations, estimated=True)
    return _Chosen(best, lambda x: best.denoise(x, mix=mix, fallback=fallback),
                   len(names), [str(r.message) for r in found])


def _budgeted_choice(plane, channel_axis, method, mix, fallback, max_time, *, n_planes):
    """``image.denoise(plane, "auto", max_time=...)``'s choice, as one step."""
    yield Progress(0, 1 + n_planes, f"choosing among the classical methods and a "
                                    f"{CNN_MODEL} within {max_time:g} s")
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        output, choice = image.denoise(plane, method, max_time=max_time, mix=mix,
                                       fallback=fallback, channel_axis=channel_axis,
                                       return_calibration=True, progress=False)
    if choice is None:  # a constant plane: the classical path says so and returns it
        return (yield from _classical_choice(plane, channel_axis, method, mix, fallback, None,
                                             n_planes=n_planes))
    return _Chosen(choice.calibration,
                   lambda x: choice.apply(x, channel_axis, mix=mix, fallback=fallback), 1,
                   [str(r.message) for r in found], choice, output)


def run_calibration(data, layout: Layout, method: str = "auto", mix: bool = True,
                    fallback: bool = True, max_time: float | None = None) -> CalibrationRun:
    """:func:`calibration_steps` run to its end, for scripts and tests.

    Parameters
    ----------
    data, layout, method, mix, fallback, max_time
        As in :func:`calibration_steps`.

    Returns
    -------
    The :class:`CalibrationRun`.
    """
    steps = calibration_steps(data, layout, method, mix, fallback, max_time)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def device_report() -> str:
    """Which accelerators torch finds here, e.g. ``"auto uses cpu (CUDA: no, MPS: no)"``.

    Returns
    -------
    One line for the training widget.
    """
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    mps = bool(mps is not None and mps.is_available())
    name = f", {torch.cuda.get_device_name(0)}" if cuda else ""
    return (f"auto uses {resolve_device('auto').type} (CUDA: {'yes' if cuda else 'no'}{name}; "
            f"MPS: {'yes' if mps else 'no'})")


def history_snapshot(history: dict) -> dict:
    """A copy of a training history that the training thread no longer appends to.

    Parameters
    ----------
    history
        ``Noise2SelfModel.history``.

    Returns
    -------
    The same keys, with copied lists.
    """
    return {key: list(value) if isinstance(value, list) else value
            for key, value in history.items()}  # fmt: skip


def train_model(
    data,
    layout: Layout,
    model: str = "unet",
    *,
    max_time: float | None = None,
    steps: int | None = None,
    device: str = "auto",
    stop: threading.Event | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    **options,
):
    """Train a Noise2Self CNN on the layer; stoppable from another thread.

    Parameters
    ----------
    data
        The layer's array; a stack trains one network on all its images.
    layout
        Its axes.
    model
        ``"unet"`` or ``"dncnn"``.
    max_time, steps
        Budget in seconds and/or optimiser steps (None: no limit of that kind; with
        neither, the library's default number of steps).
    device
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    stop
        When set, training stops after the current epoch and keeps the best weights so far
        (``history["stopped"] == "callback"``).
    on_epoch
        Called after every epoch with a copy of the history (from the training thread).
    **options
        Other options of :func:`~sc_noise2self.image.train` (``steps_per_epoch``,
        ``compile``, ``model_kwargs``, ...).

    Returns
    -------
    The trained :class:`~sc_noise2self.image.Noise2SelfModel`.
    """
    array = as_working(data)
    n_spatial = layout.n_spatial(array.ndim)
    if n_spatial not in (2, 3):
        raise ValueError(f"Layout {layout.label!r} does not fit an array of shape {array.shape}.")

    def callback(model_so_far) -> bool:
        if on_epoch is not None:
            on_epoch(history_snapshot(model_so_far.history))
        return stop is not None and stop.is_set()

    return image.train(array, model, max_time=max_time, steps=steps, device=device,
                       channel_axis=layout.image_channel_axis(), n_spatial=n_spatial,
                       progress=False, callback=callback, **options)  # fmt: skip


def prediction_steps(model, data, fallback: bool = True) -> Generator[Progress, None,
                                                                      np.ndarray]:
    """Denoise a layer with a trained model, one image of a stack per ``yield``.

    The referee holds here too: a model that lost to the J-invariant neighbour mean on its
    held-out pixels gives the neighbour mean instead (warned), unless ``fallback=False``.

    Parameters
    ----------
    model
        A :class:`~sc_noise2self.image.Noise2SelfModel`.
    data
        One image shaped like the training images, or a stack of them along axis 0.
    fallback
        Return the neighbour mean when the model lost to it.

    Yields
    ------
    Progress
        Before each image.

    Returns
    -------
    The denoised array, of the input's shape.
    """
    array = as_working(data)
    per_image = model.layout.image_ndim
    if array.ndim not in (per_image, per_image + 1):
        raise ValueError(
            f"The model takes images of {per_image} axes (or stacks of them), not an array of "
            f"shape {array.shape}."
        )
    stacked = array.ndim == per_image + 1
    images = list(array) if stacked else [array]
    predict_one = model.predict
    if baseline_wins(f"The trained {model.config.model}", model.val_loss, model.baseline_loss,
                     fallback, verb="shown"):
        from ..image.cnn.grading import baseline_output

        def predict_one(one):
            return baseline_output(model, one)
    outputs = []
    for i, one in enumerate(images):
        yield Progress(i, len(images), f"predicting image {i + 1} of {len(images)}")
        outputs.append(predict_one(one))
    yield Progress(len(images), len(images), "done")
    return np.stack(outputs) if stacked else outputs[0]


def predict(model, data, fallback: bool = True) -> np.ndarray:
    """:func:`prediction_steps` run to its end.

    Parameters
    ----------
    model, data, fallback
        As in :func:`prediction_steps`.

    Returns
    -------
    The denoised array.
    """
    steps = prediction_steps(model, data, fallback)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
