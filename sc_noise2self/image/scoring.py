"""Step 4 for images: score every parameter set of a denoiser, and grade the best one.

:func:`calibrate` makes a denoiser J-invariant (:mod:`.invariant`), scores each parameter
set by its self-supervised loss, and grades the result: failed settings (non-finite losses)
are named and never win, and the best is compared with the J-invariant neighbour mean
(:mod:`.referee`). Built-in methods run on the image in working units (:mod:`.units`), so
that their losses, choices and outputs do not depend on the image's units; a user's
callable runs on the image as it is, because its parameters are in the image's units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
from numpy.typing import DTypeLike

from .._cores import worker_count
from .._progress import progress_bar
from .._validation import check_choice, check_whole
from ..results import expand_grid
from .batched import batch_for, batch_for_callable, unwrap_partial
from .checks import DEFAULT_STRIDE, check_flag, check_noise_variance, prepare_image
from .classical import Method, get_method
from .invariant import ImageCalibration, bind_denoiser, direct_loss
from .masking import INTERPOLATIONS, grid_masks, replacement_values
from .noise import estimate_noise_variance
from .phases import PhaseScoring, score_phases
from .referee import baseline_loss, check_losses, loses, neighbour_mean, warn_lost
from .structure import mask_name, resolve_mask
from .units import IDENTITY, Units, constant_message, units_of

Denoiser = Callable[..., np.ndarray]
#: The smallest noise level a default grid is built around, relative to the image's spread:
#: a noiseless image (estimated variance 0) would otherwise get a grid of zeros, and
#: thresholds of 0 divide by zero in scikit-image's wavelet and non-local means.
_MIN_RELATIVE_SD = 1e-6


def check_work_dtype(dtype: DTypeLike) -> np.dtype:
    """``dtype`` as a numpy float type the denoisers may run in (float32 or float64).

    Parameters
    ----------
    dtype
        What the user passed.

    Returns
    -------
    The ``np.dtype``.
    """
    try:
        work = np.dtype(dtype)
    except TypeError as error:
        raise ValueError(f"dtype={dtype!r} must be np.float32 or np.float64.") from error
    if work not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype={dtype!r} must be np.float32 or np.float64.")
    return work


def calibrate(
    image,
    denoiser: Denoiser | str,
    param_grid: dict[str, Iterable] | None = None,
    *,
    stride: int = DEFAULT_STRIDE,
    approximate_loss: bool = False,
    n_jobs: int | None = None,
    progress: bool | None = None,
    noise_variance: float | None = None,
    channel_axis: int | None = None,
    interpolation: str = "mean",
    dtype: DTypeLike = np.float32,
    mask: str | tuple[int, ...] = "auto",
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
        Worker threads; None or -1 uses every core, 1 runs here. A unit of work is one
        phase with the whole grid (:mod:`.phases`): its masked copy is built once, every
        parameter set runs on it (non-local means evaluates all its ``h`` at once on the
        phase's pixels, :mod:`.batched`), and it is freed, so each worker holds one masked
        copy (in ``dtype``) at a time. Threads share the image without copies, and
        scikit-image's denoisers and numpy release the GIL in their inner loops (measured
        faster than processes, benchmarks/RESULTS.md).
    progress
        A progress bar over the units of work: True, False, or None to show it when
        scanpy's verbosity is at least info on a terminal or in a notebook.
    noise_variance
        Mean noise variance for the mixing weight, finite and at least 0; None estimates it
        from the image.
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
    mask
        What one hidden unit is: ``"pixel"``; ``"rows"`` or ``"columns"``, whole lines, for
        noise correlated along them (line-scanning, sCMOS read-out); a tuple of spatial axes
        to hide whole lines (or planes) along; ``"blocks"``, a block around each scored
        pixel, for noise correlated along every axis (its half-width from the detector); or
        ``"auto"`` (default): pixels, unless
        :func:`~sc_noise2self.image.noise_correlation` finds the noise correlated (lines
        along the axes it is correlated along, blocks when that is every axis), which is
        then announced by a :class:`~sc_noise2self.image.structure.StructuredNoiseWarning`.
        Blocks of half-width r take a grid spacing of at least ``2 r + 2`` (36 phases in
        2D at r = 2). The record's ``settings["mask"]`` and ``settings["reach"]`` name the
        mask used.

    Returns
    -------
    :class:`ImageCalibration` with ``grid``, ``losses``, ``best_params``, ``noise_variance``,
    ``mix_weight``, ``baseline_loss`` and ``.denoise()``. Parameter sets whose loss is NaN or
    infinite are named in a warning and never chosen; when none is finite, ``ValueError``.
    When the best does not beat the J-invariant neighbour mean, a
    :class:`~sc_noise2self.image.referee.BaselineWarning` gives both losses.
    """
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    work_dtype = check_work_dtype(dtype)
    check_flag(approximate_loss, "approximate_loss")
    check_flag(progress, "progress", allow_none=True)
    if n_jobs is not None and check_whole(n_jobs, name="n_jobs") == 0:
        raise ValueError("n_jobs=0 runs nothing; pass None or -1 for every core, or a count.")
    noise_variance = check_noise_variance(noise_variance)
    floats, channel_axis = prepare_image(image, stride=stride, channel_axis=channel_axis)
    n_spatial = floats.ndim - (channel_axis is not None)
    method = get_method(denoiser, n_spatial) if isinstance(denoiser, str) else None
    function, invariant, name = _resolve(denoiser, method)
    line_axes, reach, detection = resolve_mask(mask, floats, channel_axis)
    # A donut footprint still sees its own line, and the correlated pixels around it.
    invariant = invariant and not line_axes and not reach
    units = units_of(floats)  # refuses spreads whose squares leave float64
    if units.constant:
        warnings.warn(constant_message(units, "every J-invariant prediction is exact and "
                                       "image.denoise returns it unchanged"), UserWarning,
                      stacklevel=2)
    estimated = noise_variance is None
    if estimated:
        noise_variance = estimate_noise_variance(floats, channel_axis=channel_axis,
                                                 line_axes=line_axes, reach=reach)
    grid = _grid(param_grid, method, noise_variance, units)
    run_units = units if method is not None else IDENTITY
    losses, baseline = _score_grid(
        floats, function, grid, invariant, method=method, units=run_units, stride=stride,
        approximate_loss=approximate_loss, interpolation=interpolation,
        channel_axis=channel_axis, n_jobs=n_jobs, progress=progress, work_dtype=work_dtype,
        line_axes=line_axes, reach=reach,
    )  # fmt: skip
    losses, baseline = losses * run_units.scale**2, baseline * run_units.scale**2
    check_losses(losses, grid, name)
    settings = dict(stride=stride, interpolation=interpolation, channel_axis=channel_axis,
                    approximate_loss=approximate_loss, dtype=work_dtype.name,
                    rescaled=method is not None, baseline_loss=baseline,
                    mask=mask_name(line_axes, n_spatial, reach), line_axes=list(line_axes),
                    reach=reach,
                    # what the detector measured, with the mask used (asked-for blocks too)
                    noise_correlation=None if detection is None else {
                        **detection.to_dict(), "mask": mask_name(line_axes, n_spatial, reach),
                        "reach": reach})
    calibration = ImageCalibration(name, grid, losses, float(noise_variance), estimated,
                                   function, invariant, settings)  # fmt: skip
    if loses(calibration.best_loss, baseline) and not units.constant:
        warn_lost(f"{name!r} with its best parameters {calibration.best_params}",
                  calibration.best_loss, baseline, "Its .denoise() returns the neighbour mean "
                  "instead (fallback=True); try another method or a wider grid.")
    calibration.warn_if_at_edge()
    return calibration


def _grid(param_grid, method: Method | None, noise_variance: float, units: Units) -> list[dict]:
    """The parameter sets to score, checked: the given grid, or the method's default one."""
    if param_grid is None:
        if method is None:
            raise ValueError(
                "param_grid is required for a callable denoiser; pass a dict of lists, e.g. "
                "{'sigma': [0.5, 1.0, 2.0]}."
            )
        sd = max(float(np.sqrt(noise_variance)), _MIN_RELATIVE_SD * units.scale)
        param_grid = method.grid(sd)
    grid = expand_grid(param_grid)
    if method is not None:
        method.check_grid(grid)
    return grid


def _resolve(denoiser: Denoiser | str, method: Method | None) -> tuple[Denoiser, bool, str]:
    if method is not None:
        return method.function, method.invariant, method.name
    if not callable(denoiser):
        raise TypeError(f"denoiser={denoiser!r} is neither a method name nor a callable; pass "
                        "a name such as 'tv', or a function denoiser(image, **params).")
    function = unwrap_partial(denoiser)[0]  # a partial is named by what it wraps
    return denoiser, False, getattr(function, "__name__", type(function).__name__)


def _score_grid(
    image: np.ndarray,
    function: Denoiser,
    grid: list[dict],
    invariant: bool,
    *,
    method: Method | None,
    units: Units,
    stride: int,
    approximate_loss: bool,
    interpolation: str,
    channel_axis: int | None,
    n_jobs: int | None,
    progress: bool | None,
    work_dtype: np.dtype,
    line_axes: tuple[int, ...] = (),
    reach: int = 0,
) -> tuple[np.ndarray, float]:
    """Loss of every parameter set and of the baseline, in working units.

    The stand-in values are computed once and shared by every task; with ``"mean"``
    interpolation they are the baseline's predictions too.
    """
    working = grid if method is None else [method.working_params(p, units.scale) for p in grid]
    denoisers = [bind_denoiser(function, params, channel_axis) for params in working]
    name = getattr(function, "__name__", "denoiser")
    if invariant:
        stand_ins = units.forward(neighbour_mean(image, channel_axis), work_dtype)
        masks = [(slice(None),) * image.ndim]
        losses = _direct_losses(image, units, work_dtype, denoisers, n_jobs=n_jobs,
                                progress=progress, name=name)
        return losses, baseline_loss(image, stand_ins, masks, units)
    masks = grid_masks(image.shape, stride, channel_axis, line_axes, reach)
    if approximate_loss:
        masks = [masks[len(masks) // 2]]
    replacement = _in_units(replacement_values(
        image, interpolation, channel_axis=channel_axis, masks=masks, line_axes=line_axes,
        reach=reach), units, work_dtype)
    stand_ins = replacement if interpolation == "mean" else _in_units(
        neighbour_mean(image, channel_axis, line_axes, reach), units, work_dtype)
    baseline = baseline_loss(image, stand_ins, masks, units)
    del stand_ins  # the replacement itself, or a copy no task needs
    if method is not None:
        batch = batch_for(method.name, working, masks[0], channel_axis)
    else:  # scikit-image's own denoisers, passed as callables, take the same fast path
        batch, working = batch_for_callable(function, working, masks[0], channel_axis)
    scoring = PhaseScoring(image, replacement, work_dtype, units, denoisers, working,
                           channel_axis, batch=batch, refill=method is None)
    losses = score_phases(scoring, masks, n_jobs=n_jobs, progress=progress, name=name)
    return losses, baseline


def _direct_losses(image: np.ndarray, units: Units, work_dtype: np.dtype,
                   denoisers: list[Denoiser], *, n_jobs: int | None, progress: bool | None,
                   name: str) -> np.ndarray:
    """Losses of a denoiser J-invariant by construction: one task per parameter set."""
    from joblib import Parallel, delayed

    work = units.forward(image, work_dtype)
    jobs = (delayed(direct_loss)(work, image, units, denoise) for denoise in denoisers)
    results = Parallel(n_jobs=worker_count(n_jobs, len(denoisers)), return_as="generator",
                       prefer="threads")(jobs)  # fmt: skip
    bar = progress_bar(results, desc=f"calibrate {name}", total=len(denoisers),
                       progress=progress)
    return np.array(list(bar), dtype=np.float64)


def _in_units(values: np.ndarray, units: Units, work_dtype: np.dtype) -> np.ndarray:
    """Stand-ins (a new float array) moved to working units in place, then rounded.

    They are rounded to the work dtype as the masked copies round the image.
    """
    if units is not IDENTITY:
        values -= units.offset
        values *= 1.0 / units.scale
    return values.astype(work_dtype, copy=False)
