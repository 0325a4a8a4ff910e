"""Steps 2-4 for images: the J-invariant wrapper and calibration over a parameter grid.

A J-invariant denoiser's output at a pixel ignores that pixel's value, so its error is
independent of the pixel's noise, and its self-supervised loss ``mean((f(x) - x) ** 2)``
equals the true loss ``mean((f(x) - y) ** 2)`` plus the noise variance. The parameters with
the lowest self-supervised loss are then the best ones (Batson & Royer 2019, section 3).
The best output is then mixed with the input (:mod:`.mixing`).

Memory: the phases are streamed. Each worker holds one masked copy of the image at a time
(:func:`~sc_noise2self.image.masking.masked_phases`), plus the stand-in values and the
denoiser's own output, whatever the number of phases (16 in 2D, 64 in 3D at stride 4).

Value ranges: see :mod:`.checks` (integers scaled into [0, 1], floats as they are). Every
output is a float array in those units, and is never clipped.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import DTypeLike

from .._validation import check_choice
from ..results import CalibrationResult, expand_grid
from .checks import DEFAULT_STRIDE, prepare_image
from .classical import METHODS, Method, get_method
from .masking import INTERPOLATIONS, Mask, grid_masks, masked_phases, replacement_values
from .mixing import mixed_error, optimal_mix_weight
from .noise import estimate_noise_variance

Denoiser = Callable[..., np.ndarray]


def bind_denoiser(denoiser: Denoiser, params: dict, channel_axis: int | None) -> Denoiser:
    """``denoiser`` with ``params`` bound, and ``channel_axis`` when its signature takes one.

    Parameters
    ----------
    denoiser
        Any callable ``denoiser(image, **params) -> array``.
    params
        Keyword arguments for it.
    channel_axis
        Forwarded only if not None and the denoiser accepts ``channel_axis``.

    Returns
    -------
    A one-argument callable (picklable when ``denoiser`` is).
    """
    if channel_axis is not None and _accepts_channel_axis(denoiser):
        params = {**params, "channel_axis": channel_axis}
    return functools.partial(denoiser, **params)


def _accepts_channel_axis(denoiser: Denoiser) -> bool:
    try:
        parameters = inspect.signature(denoiser).parameters
    except (TypeError, ValueError):
        return False
    return "channel_axis" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def denoise_invariant(
    image,
    denoiser: Denoiser,
    *,
    stride: int = DEFAULT_STRIDE,
    masks: Iterable[Mask] | None = None,
    interpolation: str = "mean",
    channel_axis: int | None = None,
    random_state: int = 0,
    **kwargs,
) -> np.ndarray:
    """Run ``denoiser`` so that its output at each pixel ignores that pixel's value.

    For each grid phase J, the pixels of J are replaced (see ``interpolation``), the
    denoiser runs on that input, and only its output on J is kept.

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with a channel axis; never
        modified. See the module docstring for value ranges.
    denoiser
        ``denoiser(image, **kwargs) -> array`` of the same shape. It receives the image in
        its original layout, and ``channel_axis`` too when its signature accepts it.
    stride
        Grid spacing: there are ``stride ** n_spatial`` phases.
    masks
        Phases to use instead of the full grid: anything that indexes the image. Pixels in
        no mask are NaN in the output.
    interpolation
        Replacement of hidden pixels: ``"mean"`` of the face neighbours (as in
        scikit-image), the paper's 3x3 ``"kernel"``, or uniform ``"random"`` values.
    channel_axis
        Axis holding channels (any position), or None. All channels of a pixel are hidden
        together.
    random_state
        Seed of ``interpolation="random"``.
    **kwargs
        Parameters of ``denoiser``.

    Returns
    -------
    The J-invariant denoised image, float, of the image's shape.
    """
    floats, channel_axis = prepare_image(image, stride=stride, channel_axis=channel_axis)
    masks = grid_masks(floats.shape, stride, channel_axis) if masks is None else list(masks)
    replacement = replacement_values(
        floats, interpolation, channel_axis=channel_axis, masks=masks, random_state=random_state
    )
    denoise = bind_denoiser(denoiser, kwargs, channel_axis)
    output = np.full(floats.shape, np.nan, dtype=np.result_type(floats.dtype, np.float32))
    for masked, mask in masked_phases(floats, masks, replacement):
        output[mask] = np.asarray(denoise(masked))[mask]
    return output


def _masked_loss(
    image: np.ndarray,
    masks: list[Mask],
    replacement: np.ndarray,
    work_dtype: np.dtype,
    denoise: Denoiser,
) -> float:
    """Self-supervised MSE over the masked pixels, one masked copy in memory at a time."""
    total, count = 0.0, 0
    for masked, mask in masked_phases(image, masks, replacement, dtype=work_dtype):
        errors = np.asarray(denoise(masked))[mask].astype(np.float64) - image[mask]
        total += float(np.sum(errors**2))
        count += errors.size
    return total / count


def _direct_loss(work: np.ndarray, image: np.ndarray, denoise: Denoiser) -> float:
    """Self-supervised MSE of a denoiser that is J-invariant by construction."""
    return float(np.mean((np.asarray(denoise(work), dtype=np.float64) - image) ** 2))


def _check_work_dtype(dtype: DTypeLike) -> np.dtype:
    work = np.dtype(dtype)
    if work not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype={dtype!r} must be np.float32 or np.float64.")
    return work


class ImageCalibration(CalibrationResult):
    """The whole loss curve of one calibration, and how to denoise with its best parameters.

    The image twin of :class:`~sc_noise2self.calibration.CalibrationResult`: ``grid`` holds
    the parameter sets (one dict each), ``loss_per_split`` has one row (the masking is the
    split), ``params`` holds the run's settings, and ``best`` is the best parameter set.

    Parameters
    ----------
    method
        Registry name, or the callable's name.
    grid
        Parameter sets scored, one dict each.
    losses
        Self-supervised loss of each parameter set (or one row per split).
    noise_variance
        Mean noise variance used for mixing (given, or estimated).
    noise_variance_estimated
        True when :func:`~sc_noise2self.image.noise.estimate_noise_variance` gave it.
    denoiser
        The callable that was calibrated; None for a record rebuilt without it.
    invariant
        True when the denoiser is J-invariant by construction (no masking needed).
    settings
        ``stride``, ``interpolation``, ``channel_axis``, ``approximate_loss``, ``dtype``.
    candidates
        For ``denoise(method="auto")``: the best loss of every method compared.
    """

    def __init__(
        self,
        method: str,
        grid: list[dict],
        losses,
        noise_variance: float,
        noise_variance_estimated: bool,
        denoiser: Denoiser | None,
        invariant: bool = False,
        settings: dict | None = None,
        candidates: dict[str, float] | None = None,
    ) -> None:
        sets = np.empty(len(grid), dtype=object)  # dicts, not a 2D array of their values
        sets[:] = [dict(p) for p in grid]
        super().__init__(
            param=knob_name(grid),
            grid=sets,
            loss_per_split=np.atleast_2d(np.asarray(losses, dtype=float)),
            params=dict(settings or {}),
        )
        self.method = method
        self.noise_variance = float(noise_variance)
        self.noise_variance_estimated = bool(noise_variance_estimated)
        self.denoiser = denoiser
        self.invariant = bool(invariant)
        self.candidates = dict(candidates or {})

    def __repr__(self) -> str:
        return (
            f"ImageCalibration(method={self.method!r}, n_params={len(self.grid)}, "
            f"best_params={self.best_params!r}, best_loss={self.best_loss:.6g}, "
            f"mix_weight={self.mix_weight:.3f})"
        )

    @property
    def losses(self) -> np.ndarray:
        """Self-supervised loss of each parameter set (:attr:`loss`)."""
        return self.loss

    @property
    def settings(self) -> dict:
        """The run's settings (:attr:`params`): stride, interpolation, channel axis, ..."""
        return self.params

    @property
    def best_params(self) -> dict:
        """The parameter set with the lowest self-supervised loss (a copy)."""
        return dict(self.best)

    @property
    def best_loss(self) -> float:
        """The lowest self-supervised loss."""
        return float(self.loss[self.best_index])

    @property
    def mix_weight(self) -> float:
        """Weight of the J-invariant output when mixing with the noisy input (1: no mixing)."""
        return optimal_mix_weight(self.best_loss, self.noise_variance)

    def expected_error(self, mix: bool = True) -> float:
        """Self-supervised estimate of the true MSE of :meth:`denoise`'s output.

        Parameters
        ----------
        mix
            Estimate for the mixed output (True) or the J-invariant output alone.

        Returns
        -------
        ``best_loss - noise_variance``, or the mixed error; never higher with mixing.
        """
        weight = self.mix_weight if mix else 1.0
        return mixed_error(weight, self.best_loss, self.noise_variance)

    def denoise(self, image, mix: bool = True) -> np.ndarray:
        """Denoise with the best parameters, J-invariantly, then mix with the input.

        Parameters
        ----------
        image
            The calibrated image, or one like it, in the same layout; never modified.
        mix
            Return ``w * f(x) + (1 - w) * x`` with ``w = mix_weight`` (section 4.2), or the
            J-invariant output ``f(x)`` alone.

        Returns
        -------
        Float image of the input's shape (units as in the module docstring).
        """
        if self.denoiser is None:
            raise ValueError(
                f"This calibration of {self.method!r} was rebuilt without its denoiser; pass "
                "it as ImageCalibration.from_dict(record, denoiser=...)."
            )
        floats, channel_axis = prepare_image(
            image, stride=self.settings["stride"], channel_axis=self.settings["channel_axis"]
        )
        if self.invariant:
            output = np.asarray(
                bind_denoiser(self.denoiser, self.best_params, channel_axis)(floats)
            )
        else:
            output = denoise_invariant(
                floats,
                self.denoiser,
                stride=self.settings["stride"],
                interpolation=self.settings["interpolation"],
                channel_axis=channel_axis,
                **self.best_params,
            )
        weight = self.mix_weight if mix else 1.0
        return weight * output + (1.0 - weight) * floats if weight < 1.0 else output

    def plot(self, ax=None):
        """Draw the loss against the parameter grid and mark the minimum (the paper's Fig. 2).

        Parameters
        ----------
        ax
            Matplotlib Axes to draw on; a new figure when None.

        Returns
        -------
        The Axes.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.5))
        x, label = self._plot_positions()
        ax.plot(x, self.losses, "o-", label=f"{self.method} (self-supervised)")
        ax.plot(x[self.best_index], self.best_loss, "r*", markersize=14, label="minimum")
        ax.axhline(self.noise_variance, color="grey", ls="--", label="noise variance")
        ax.set_xlabel(label)
        ax.set_ylabel("self-supervised loss (MSE)")
        ax.legend(frameon=False)
        return ax

    def _plot_positions(self) -> tuple[np.ndarray, str]:
        varying = varying_parameters(self.grid)
        if len(varying) == 1 and all(np.isscalar(p[varying[0]]) for p in self.grid):
            return np.array([p[varying[0]] for p in self.grid], dtype=float), varying[0]
        return np.arange(len(self.grid)), "parameter set"

    def to_dict(self) -> dict:
        """Plain record of the calibration (no callable), e.g. for ``json`` or ``adata.uns``.

        Returns
        -------
        The keys of :meth:`CalibrationResult.to_dict
        <sc_noise2self.calibration.CalibrationResult.to_dict>` (``params`` holding the
        settings and ``param``, ``grid``, ``loss``, ``loss_std``, ``loss_per_split``,
        ``best``) plus ``method``, ``noise_variance``, ``noise_variance_estimated``,
        ``mix_weight``, ``invariant`` and ``candidates``. :meth:`from_dict` rebuilds the
        calibration from it.
        """
        return {
            "method": self.method,
            "grid": [dict(p) for p in self.grid],
            "loss": np.asarray(self.losses),
            "loss_std": self.loss_std,
            "loss_per_split": self.loss_per_split,
            "best": self.best_params,
            "noise_variance": self.noise_variance,
            "noise_variance_estimated": self.noise_variance_estimated,
            "mix_weight": self.mix_weight,
            "invariant": self.invariant,
            "params": {**self.settings, "param": self.param},
            "candidates": dict(self.candidates),
        }

    @classmethod
    def from_dict(cls, record: dict, denoiser: Denoiser | None = None) -> ImageCalibration:
        """Rebuild a calibration from what :meth:`to_dict` wrote (e.g. read back from JSON).

        Parameters
        ----------
        record
            The dict; arrays may have become lists.
        denoiser
            The calibrated callable, for :meth:`denoise`. None: a built-in method's function
            is looked up by name; a user's callable cannot be stored, so without it the
            result can be inspected and plotted but not used to denoise.

        Returns
        -------
        The :class:`ImageCalibration`, with the same losses, best parameters and mixing
        weight.
        """
        method = METHODS.get(record["method"])
        if denoiser is None and method is not None:
            denoiser = method.function
        default_invariant = method.invariant if method is not None else False
        settings = {
            key: None if value == "None" else value  # h5ad stores None as "None"
            for key, value in record.get("params", {}).items()
            if key != "param"
        }
        return cls(
            record["method"],
            list(record["grid"]),
            record.get("loss_per_split", record["loss"]),
            record["noise_variance"],
            record["noise_variance_estimated"],
            denoiser,
            record.get("invariant", default_invariant),
            settings,
            record.get("candidates"),
        )


def varying_parameters(grid) -> list[str]:
    """Names of the parameters that take more than one value across a grid of dicts.

    Parameters
    ----------
    grid
        Parameter sets, one dict each (as from :func:`expand_grid`).

    Returns
    -------
    The names, in the order of the first set.
    """
    if len(grid) == 0:
        return []
    return [k for k in grid[0] if len({repr(p[k]) for p in grid}) > 1]


def knob_name(grid) -> str:
    """The name to give a grid's knob: the one varying parameter, or ``"params"``.

    Parameters
    ----------
    grid
        Parameter sets, one dict each.

    Returns
    -------
    The parameter that varies (or the only parameter there is), else ``"params"``.
    """
    varying = varying_parameters(grid)
    if len(varying) == 1:
        return varying[0]
    names = list(grid[0]) if len(grid) else []
    return names[0] if len(names) == 1 else "params"


def calibrate(
    image,
    denoiser: Denoiser | str,
    param_grid: dict[str, Iterable] | None = None,
    *,
    stride: int = DEFAULT_STRIDE,
    approximate_loss: bool = False,
    n_jobs: int | None = None,
    progress: bool = True,
    noise_variance: float | None = None,
    channel_axis: int | None = None,
    interpolation: str = "mean",
    dtype: DTypeLike = np.float32,
) -> ImageCalibration:
    """Score every parameter set of a denoiser by its J-invariant self-supervised loss.

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with channels; never modified.
    denoiser
        A built-in method name (see :func:`~sc_noise2self.image.available_methods`) or a
        callable ``denoiser(image, **params)``.
    param_grid
        Dict of lists, expanded as a product. None: the method's default grid (required
        for a callable).
    stride
        Grid spacing of the masking phases.
    approximate_loss
        Score one phase only (the middle one, as scikit-image does): ``stride ** ndim``
        times faster, noisier.
    n_jobs
        Worker threads over parameter sets; None or -1 uses every core, 1 runs here.
        Threads share the image without copies, and scikit-image's denoisers release
        the GIL in their inner loops (measured faster than processes, benchmarks/RESULTS.md).
        Each worker holds one masked copy of the image (in ``dtype``) at a time.
    progress
        Show a progress bar over parameter sets.
    noise_variance
        Mean noise variance for the mixing weight; None estimates it from the image.
    channel_axis
        Axis holding channels, or None.
    interpolation
        Replacement of hidden pixels: ``"mean"``, ``"kernel"`` or ``"random"``.
    dtype
        Float type the denoisers run in while scoring: ``np.float32`` (default) or
        ``np.float64``. Losses are summed in float64 against the float64 image either way.
        scikit-image's TV and wavelet run 1.5 to 4 times faster in float32, and the losses
        moved by under 1e-9 on camera (benchmarks/RESULTS.md).
        :meth:`ImageCalibration.denoise` uses the image's own precision.

    Returns
    -------
    :class:`ImageCalibration` with ``grid``, ``losses``, ``best_params``, ``noise_variance``,
    ``mix_weight`` and ``.denoise()``.
    """
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    work_dtype = _check_work_dtype(dtype)
    floats, channel_axis = prepare_image(image, stride=stride, channel_axis=channel_axis)
    n_spatial = floats.ndim - (channel_axis is not None)
    method = get_method(denoiser, n_spatial) if isinstance(denoiser, str) else None
    estimated = noise_variance is None
    if estimated:
        noise_variance = estimate_noise_variance(floats, channel_axis=channel_axis)
    if param_grid is None:
        if method is None:
            raise ValueError(
                "param_grid is required for a callable denoiser; pass a dict of lists."
            )
        param_grid = method.grid(float(np.sqrt(noise_variance)))
    grid = expand_grid(param_grid)
    function, invariant, name = _resolve(denoiser, method)
    losses = _score_grid(
        floats, function, grid, invariant, stride=stride, approximate_loss=approximate_loss,
        interpolation=interpolation, channel_axis=channel_axis, n_jobs=n_jobs,
        progress=progress, work_dtype=work_dtype,
    )
    settings = dict(
        stride=stride,
        interpolation=interpolation,
        channel_axis=channel_axis,
        approximate_loss=approximate_loss,
        dtype=work_dtype.name,
    )
    return ImageCalibration(
        name, grid, losses, float(noise_variance), estimated, function, invariant, settings
    )


def _resolve(denoiser: Denoiser | str, method: Method | None) -> tuple[Denoiser, bool, str]:
    if method is not None:
        return method.function, method.invariant, method.name
    if not callable(denoiser):
        raise TypeError(f"denoiser={denoiser!r} is neither a method name nor a callable.")
    return denoiser, False, getattr(denoiser, "__name__", type(denoiser).__name__)


def _score_grid(
    image: np.ndarray,
    function: Denoiser,
    grid: list[dict],
    invariant: bool,
    *,
    stride: int,
    approximate_loss: bool,
    interpolation: str,
    channel_axis: int | None,
    n_jobs: int | None,
    progress: bool,
    work_dtype: np.dtype,
) -> np.ndarray:
    """Loss of every parameter set; the stand-in values are computed once and shared."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    denoisers = [bind_denoiser(function, params, channel_axis) for params in grid]
    if invariant:
        task, shared = _direct_loss, (image.astype(work_dtype, copy=False), image)
    else:
        masks = grid_masks(image.shape, stride, channel_axis)
        if approximate_loss:
            masks = [masks[len(masks) // 2]]
        replacement = replacement_values(
            image, interpolation, channel_axis=channel_axis, masks=masks
        ).astype(work_dtype, copy=False)  # rounded as the masked copies would round it
        task, shared = _masked_loss, (image, masks, replacement, work_dtype)
    n_jobs = _worker_count(n_jobs, len(grid))
    jobs = (delayed(task)(*shared, denoise) for denoise in denoisers)
    # Threads share the image and the stand-ins without copies, and were measured faster
    # than worker processes; each task streams its own masked copies.
    results = Parallel(n_jobs=n_jobs, return_as="generator", prefer="threads")(jobs)
    return np.array(list(tqdm(results, total=len(grid), disable=not progress, desc="calibrate")))


def _worker_count(n_jobs: int | None, n_tasks: int) -> int:
    # The cores this process may use (a cgroup or taskset can grant fewer than the machine has).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    wanted = cores if n_jobs is None or n_jobs < 0 else max(int(n_jobs), 1)
    return max(1, min(wanted, n_tasks))
