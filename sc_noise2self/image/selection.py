"""Step 4 across methods: calibrate several classical denoisers and keep the best.

The J-invariant self-supervised loss of every method estimates its true error plus the same
noise variance, so losses of different methods compare directly (the paper's Table 1).
"""

from __future__ import annotations

import inspect
import time
import warnings

import numpy as np

from .._validation import check_choice, check_real
from ..results import GridEdgeWarning
from .budget import denoise_within
from .checks import DEFAULT_STRIDE, check_flag, check_noise_variance, prepare_image
from .classical import METHODS, available_methods, get_method
from .invariant import ImageCalibration
from .noise import estimate_noise_variance
from .referee import BaselineWarning
from .scoring import calibrate
from .structure import resolve_mask
from .units import constant_message, units_of

CNN_METHODS = ("unet", "dncnn")
# Too slow to calibrate unasked (seconds per 512x512 run, times every phase and parameter).
_NOT_IN_AUTO = ("bm3d",)
# Non-local means searches a 13^3 window per voxel in 3D: calibrating it on an 8 x 64 x 64
# volume took 461 s on 2 cores, against at most 1.5 s for each other method (2026-11-29).
_NOT_IN_AUTO_3D = ("nl_means",)


def auto_methods(n_spatial: int) -> list[str]:
    """Methods that ``method="auto"`` compares for an image with ``n_spatial`` axes.

    Parameters
    ----------
    n_spatial
        Number of spatial axes of the image.

    Returns
    -------
    Every installed built-in method that supports those dims, except ``bm3d``, and
    ``nl_means`` in 3D (slow; name them explicitly to use them).
    """
    slow = _NOT_IN_AUTO + (_NOT_IN_AUTO_3D if n_spatial >= 3 else ())
    return [name for name in available_methods(n_spatial) if name not in slow]


def denoise(
    image,
    method: str = "auto",
    *,
    param_grid: dict | None = None,
    mix: bool = True,
    fallback: bool = True,
    return_calibration: bool = False,
    channel_axis: int | None = None,
    noise_variance: float | None = None,
    progress: bool | None = None,
    **options,
) -> np.ndarray | tuple[np.ndarray, ImageCalibration | None]:
    """Calibrate a denoiser on the image itself, then denoise with the best one.

    Classical methods are calibrated by the J-invariant loss; ``"unet"`` and ``"dncnn"`` train
    a masked CNN on the image (Noise2Self, section 5) and return its prediction. Either way
    the output is graded against the J-invariant neighbour mean (each pixel predicted by the
    mean of its neighbours): when it does not beat it, a
    :class:`~sc_noise2self.image.referee.BaselineWarning` gives both self-supervised losses.

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with channels; never modified.
    method
        A built-in method name, ``"unet"`` or ``"dncnn"``, or ``"auto"``: calibrate every
        classical method of :func:`auto_methods` and keep the one with the lowest
        self-supervised loss.
    param_grid
        Grid for a single named classical method; None uses its default grid. Not allowed
        with ``"auto"`` or a CNN.
    mix
        Mix the J-invariant output with the input at the optimal weight (section 4.2):
        classical methods, and with ``max_time`` a UNet that hides whole lines.
    fallback
        When the chosen output loses to the neighbour mean, return the neighbour mean (the
        better of the two) instead; False returns the chosen output anyway (still warned).
    return_calibration
        Also return the chosen :class:`ImageCalibration`; with ``"auto"``, its
        ``candidates`` holds every method's best loss. With ``max_time``, an
        :class:`~sc_noise2self.image.budget.AutoChoice` instead: the winner, the classical
        calibration, the CNN and the table of losses and seconds.
    channel_axis
        Axis holding channels, or None.
    noise_variance
        Mean noise variance for the mixing weight (classical methods), finite and at least
        0; None estimates it once from the image, for every method compared.
    progress
        Progress bars: True, False, or None to show them when scanpy's verbosity is at
        least info on a terminal or in a notebook.
    **options
        ``max_time`` with ``"auto"``: a budget in seconds for the classical methods and a
        masked UNet together (:mod:`~sc_noise2self.image.budget`); scored by the J-invariant
        loss on the same held-out pixels, the one with the lowest expected error (each
        mixed at its optimal weight) wins. Without it (the default),
        ``"auto"`` compares the classical methods only.
        ``mask``: ``"auto"`` (default), ``"pixel"``, ``"rows"`` or ``"columns"``, as in
        :func:`~sc_noise2self.image.calibrate`; the detector runs once for every method.
        For classical methods: the options of :func:`~sc_noise2self.image.calibrate`
        (``stride``, ``approximate_loss``, ``n_jobs``, ``interpolation``, ``dtype``). For
        ``"unet"`` and ``"dncnn"``: options of :func:`~sc_noise2self.image.train`
        (``max_time``, ``steps``, ``device``, ``random_state``, ...) and of the prediction
        (``augment``, on by default: the mean over flips and transposes; ``invariant``;
        ``tile_size``), as in :func:`~sc_noise2self.image.denoise_cnn`.

    Returns
    -------
    The denoised float image, or ``(denoised, calibration)``; for a CNN the second item is
    the trained :class:`~sc_noise2self.image.Noise2SelfModel`. A constant image is returned
    unchanged with a warning (and None as its calibration).
    """
    check_choice(method, ("auto", *METHODS, *CNN_METHODS), name="method")
    for flag, value in (("mix", mix), ("fallback", fallback),
                        ("return_calibration", return_calibration)):  # fmt: skip
        check_flag(value, flag)
    check_flag(progress, "progress", allow_none=True)
    if method in CNN_METHODS:
        _check_cnn_options(param_grid, noise_variance)
        from .cnn.training import denoise_cnn  # torch loads only when a CNN is asked for

        return denoise_cnn(image, model=method, channel_axis=channel_axis, fallback=fallback,
                           return_model=return_calibration, progress=progress, **options)
    began = time.perf_counter()
    max_time = _check_budget(options.pop("max_time", None), method)
    _check_calibration_options(options)
    noise_variance = check_noise_variance(noise_variance)
    if method == "auto" and param_grid is not None:
        raise ValueError("param_grid applies to one method; pass method=<name> with it.")
    floats, channel_axis = prepare_image(
        image, stride=options.get("stride", DEFAULT_STRIDE), channel_axis=channel_axis
    )
    units = units_of(floats)
    if units.constant:
        warnings.warn(constant_message(units, "it is returned unchanged"), UserWarning,
                      stacklevel=2)
        same = floats.astype(np.result_type(floats.dtype, np.float32), copy=True)
        return (same, None) if return_calibration else same
    n_spatial = floats.ndim - (channel_axis is not None)
    names = auto_methods(n_spatial) if method == "auto" else [get_method(method, n_spatial).name]
    # Found once, said once: every method (and the CNN) then hides the same lines or blocks.
    masking = resolve_mask(options.pop("mask", "auto"), floats, channel_axis)
    estimated = noise_variance is None
    if estimated:
        noise_variance = estimate_noise_variance(floats, channel_axis=channel_axis,
                                                 line_axes=masking.line_axes,
                                                 reach=masking.reach)
    settings = dict(progress=progress, mask=masking, noise_variance=noise_variance,
                    channel_axis=channel_axis, **options)
    if max_time is not None:  # the classical methods and a CNN, within one budget
        def calibrate_named(name: str) -> ImageCalibration:
            return next(each_calibrated(floats, [name], **settings))

        denoised, choice = denoise_within(floats, channel_axis, names, max_time,
                                          calibrate_named, best_of, mix=mix, fallback=fallback,
                                          estimated=estimated, progress=progress,
                                          masking=masking, started=began)
        return (denoised, choice) if return_calibration else denoised
    best = best_of(list(each_calibrated(floats, names, param_grid, **settings)), estimated)
    denoised = best.denoise(floats, mix=mix, fallback=fallback)
    return (denoised, best) if return_calibration else denoised


def _check_budget(max_time, method: str) -> float | None:
    """``max_time`` for ``"auto"`` (a CNN takes it through its training options)."""
    if max_time is None:
        return None
    if method != "auto":
        raise TypeError(f"max_time applies to method='auto' (a budget for every method and a "
                        f"CNN) or to a CNN; {method!r} is calibrated on its grid. Leave it out.")
    check_real(max_time, name="max_time", minimum=0.0, hint="seconds for every method")
    if not max_time > 0:
        raise ValueError(f"max_time={max_time} must be positive: the seconds that the "
                         "methods and the CNN may take together.")
    return float(max_time)


def each_calibrated(floats: np.ndarray, names: list[str], param_grid: dict | None = None, *,
                    noise_variance: float, channel_axis: int | None, **options):
    """Calibrate each method of ``names`` on ``floats`` in turn; yield each calibration.

    One noise variance serves every method, so their mixed losses compare. Each method's
    own grade against the neighbour mean is silenced: the chosen output is graded once, when
    it denoises. A generator, so that a caller (the napari widget) can report progress
    between methods.
    """
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BaselineWarning)
            warnings.simplefilter("ignore", GridEdgeWarning)  # said of the chosen one only
            calibration = calibrate(floats, name, param_grid, noise_variance=noise_variance,
                                    channel_axis=channel_axis, **options)
        yield calibration


def best_of(calibrations: list[ImageCalibration], estimated: bool) -> ImageCalibration:
    """The calibration with the lowest self-supervised loss, holding every method's loss.

    ``candidates`` maps each method to its best loss; ``noise_variance_estimated`` records
    whether the shared noise variance was estimated (True) or given.
    """
    best = min(calibrations, key=lambda c: c.best_loss)
    best.candidates = {c.method: c.best_loss for c in calibrations}
    best.noise_variance_estimated = estimated
    best.warn_if_at_edge()
    return best


def _check_cnn_options(param_grid, noise_variance) -> None:
    """Refuse the classical methods' arguments with a CNN, which would silently ignore them."""
    for name, value in (("param_grid", param_grid), ("noise_variance", noise_variance)):
        if value is not None:
            raise TypeError(f"{name} applies to the classical methods; a CNN learns from the "
                            "image itself. Leave it out, or choose a classical method.")


def _check_calibration_options(options: dict) -> None:
    """Refuse options that :func:`calibrate` does not take, naming the ones it does."""
    known = [name for name, parameter in inspect.signature(calibrate).parameters.items()
             if parameter.kind is inspect.Parameter.KEYWORD_ONLY]  # fmt: skip
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(
            f"Options {unknown} are not options of the classical methods ({known}); training "
            "options apply to method='unet' or 'dncnn' only."
        )
