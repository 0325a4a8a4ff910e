"""Steps 2-4 for images: the J-invariant wrapper, calibration over a grid, and mixing.

A J-invariant denoiser's output at a pixel ignores that pixel's value, so its error is
independent of the pixel's noise, and its self-supervised loss ``mean((f(x) - x) ** 2)``
equals the true loss ``mean((f(x) - y) ** 2)`` plus the noise variance. The parameters with
the lowest self-supervised loss are then the best ones (Batson & Royer 2019, section 3).

Value ranges: integer images are scaled like :func:`skimage.util.img_as_float` (uint8 by
1/255, uint16 by 1/65535, so into [0, 1]); float images are used as they are (float16 is
promoted to float32). Every output is a float array in those units, and is never clipped.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from .._validation import check_choice
from ..calibration import expand_grid
from .classical import Method, get_method
from .masking import INTERPOLATIONS, Mask, grid_masks, masked_inputs, replacement_values
from .noise import estimate_noise_variance

Denoiser = Callable[..., np.ndarray]


def prepare_image(
    image, *, stride: int, channel_axis: int | None, name: str = "image"
) -> tuple[np.ndarray, int | None]:
    """Check an image and return it as floats, with its channel axis made non-negative.

    Parameters
    ----------
    image
        Array-like of 2 or more spatial axes, integer or float.
    stride
        Grid spacing; every spatial axis must be at least this long.
    channel_axis
        Index of the channel axis (negative allowed), or None.
    name
        How to call the image in error messages.

    Returns
    -------
    ``(floats, channel_axis)``. The input is never modified; the floats may be the input
    itself when it already is float32 or float64.
    """
    array = np.asarray(image)
    if array.dtype.kind not in "uif":
        raise TypeError(f"{name} has dtype {array.dtype}; pass an integer or float image.")
    channel_axis = _normalise_channel_axis(channel_axis, array.ndim, name)
    n_spatial = array.ndim - (channel_axis is not None)
    if n_spatial < 2:
        raise ValueError(
            f"{name} has {n_spatial} spatial axis (shape {array.shape}); J-invariant "
            "calibration needs a 2D image or a 3D volume. Reshape 1D signals to 2D first."
        )
    _check_stride(stride)
    spatial = [s for axis, s in enumerate(array.shape) if axis != channel_axis]
    if min(spatial) < stride:
        raise ValueError(
            f"{name} has spatial shape {tuple(spatial)}, smaller than stride={stride} along "
            f"an axis; pass a larger image or a stride of at most {min(spatial)}."
        )
    floats = _as_float(array)
    if not np.all(np.isfinite(floats)):
        raise ValueError(f"{name} contains NaN or infinite values; fill or crop them first.")
    return floats, channel_axis


def _normalise_channel_axis(channel_axis: int | None, ndim: int, name: str) -> int | None:
    if channel_axis is None:
        return None
    if not -ndim <= int(channel_axis) < ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for {name} with {ndim} axes; pass "
            f"an index from {-ndim} to {ndim - 1}, or None when there are no channels."
        )
    return int(channel_axis) % ndim


def _check_stride(stride: int) -> None:
    if not isinstance(stride, int | np.integer) or stride < 2:
        raise ValueError(f"stride={stride!r} must be an integer of at least 2 (4 is usual).")


def _as_float(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        return array.astype(np.float32) if array.dtype.itemsize < 4 else array
    from skimage.util import img_as_float

    return img_as_float(array)


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
    stride: int = 4,
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
    stack = masked_inputs(floats, masks, replacement)
    return _assemble(stack, masks, bind_denoiser(denoiser, kwargs, channel_axis))


def _assemble(stack: np.ndarray, masks: list[Mask], denoise: Denoiser) -> np.ndarray:
    """Output made of each masked input's denoised values on its own phase."""
    output = np.full(stack.shape[1:], np.nan, dtype=np.result_type(stack.dtype, np.float32))
    for masked, mask in zip(stack, masks, strict=True):
        output[mask] = np.asarray(denoise(np.array(masked)))[mask]
    return output


def _masked_loss(
    stack: np.ndarray, masks: list[Mask], image: np.ndarray, denoise: Denoiser
) -> float:
    """Self-supervised MSE over the masked pixels, with no full output kept in memory."""
    total, count = 0.0, 0
    for masked, mask in zip(stack, masks, strict=True):
        # A private copy: a denoiser may write into its input.
        errors = np.asarray(denoise(np.array(masked)))[mask].astype(np.float64) - image[mask]
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


def optimal_mix_weight(loss: float, noise_variance: float) -> float:
    """Weight of the J-invariant output in ``w * f(x) + (1 - w) * x`` (paper section 4.2).

    With ``e2 = loss - noise_variance`` (the estimated true error of ``f``), independent of
    the noise because ``f`` is J-invariant, the mix has expected error
    ``w**2 * e2 + (1 - w)**2 * noise_variance``, lowest at ``w = noise_variance / loss``.
    When the noise variance reaches the loss (``e2 <= 0``), mixing cannot help and 1 is
    returned (no mixing).

    Parameters
    ----------
    loss
        Self-supervised loss of the J-invariant output.
    noise_variance
        Mean noise variance.

    Returns
    -------
    The weight, in [0, 1]; 1 means the J-invariant output alone.
    """
    if loss <= 0 or noise_variance >= loss:
        return 1.0
    weight = noise_variance / loss
    if mixed_error(weight, loss, noise_variance) > loss - noise_variance:
        return 1.0
    return float(weight)


def mixed_error(weight: float, loss: float, noise_variance: float) -> float:
    """Expected true MSE of ``weight * f(x) + (1 - weight) * x``, from self-supervised terms.

    Parameters
    ----------
    weight
        Weight of the J-invariant output ``f(x)``.
    loss
        Self-supervised loss of ``f(x)``.
    noise_variance
        Mean noise variance.

    Returns
    -------
    ``weight**2 * max(loss - noise_variance, 0) + (1 - weight)**2 * noise_variance``.
    """
    true_error = max(loss - noise_variance, 0.0)
    return weight**2 * true_error + (1.0 - weight) ** 2 * noise_variance


@dataclass
class ImageCalibration:
    """The whole loss curve of one calibration, and how to denoise with its best parameters.

    Attributes
    ----------
    method
        Registry name, or the callable's name.
    grid
        Parameter sets scored, one dict each.
    losses
        Self-supervised loss of each parameter set.
    noise_variance
        Mean noise variance used for mixing (given, or estimated).
    noise_variance_estimated
        True when :func:`~sc_noise2self.image.noise.estimate_noise_variance` gave it.
    denoiser
        The callable that was calibrated.
    invariant
        True when the denoiser is J-invariant by construction (no masking needed).
    settings
        ``stride``, ``interpolation``, ``channel_axis``, ``approximate_loss``.
    candidates
        For ``denoise(method="auto")``: the best loss of every method compared.
    """

    method: str
    grid: list[dict]
    losses: np.ndarray
    noise_variance: float
    noise_variance_estimated: bool
    denoiser: Denoiser
    invariant: bool = False
    settings: dict = field(default_factory=dict)
    candidates: dict[str, float] = field(default_factory=dict)

    @property
    def best_index(self) -> int:
        """Index of the lowest loss in :attr:`grid`."""
        return int(np.argmin(self.losses))

    @property
    def best_params(self) -> dict:
        """The parameter set with the lowest self-supervised loss."""
        return dict(self.grid[self.best_index])

    @property
    def best_loss(self) -> float:
        """The lowest self-supervised loss."""
        return float(self.losses[self.best_index])

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
        varying = [k for k in self.grid[0] if len({repr(p[k]) for p in self.grid}) > 1]
        if len(varying) == 1 and all(np.isscalar(p[varying[0]]) for p in self.grid):
            return np.array([p[varying[0]] for p in self.grid], dtype=float), varying[0]
        return np.arange(len(self.grid)), "parameter set"

    def to_dict(self) -> dict:
        """Plain record of the calibration (no callable), e.g. for ``json`` or ``adata.uns``."""
        return {
            "method": self.method,
            "grid": [dict(p) for p in self.grid],
            "loss": np.asarray(self.losses),
            "best": self.best_params,
            "noise_variance": self.noise_variance,
            "noise_variance_estimated": self.noise_variance_estimated,
            "mix_weight": self.mix_weight,
            "params": dict(self.settings),
            "candidates": dict(self.candidates),
        }


def calibrate(
    image,
    denoiser: Denoiser | str,
    param_grid: dict[str, Iterable] | None = None,
    *,
    stride: int = 4,
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
        Threads share the masked inputs without copies, and scikit-image's denoisers release
        the GIL in their inner loops (measured faster than processes, benchmarks/RESULTS.md).
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
        floats,
        function,
        grid,
        invariant,
        stride=stride,
        approximate_loss=approximate_loss,
        interpolation=interpolation,
        channel_axis=channel_axis,
        n_jobs=n_jobs,
        progress=progress,
        work_dtype=work_dtype,
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
    """Loss of every parameter set; the masked inputs are built once and shared."""
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
        )
        stack = masked_inputs(image.astype(work_dtype, copy=False), masks, replacement)
        task, shared = _masked_loss, (stack, masks, image)
    n_jobs = _worker_count(n_jobs, len(grid))
    jobs = (delayed(task)(*shared, denoise) for denoise in denoisers)
    # Threads: no copies of the masked stack, and measured faster than worker processes.
    results = Parallel(n_jobs=n_jobs, return_as="generator", prefer="threads")(jobs)
    return np.array(list(tqdm(results, total=len(grid), disable=not progress, desc="calibrate")))


def _worker_count(n_jobs: int | None, n_tasks: int) -> int:
    # The cores this process may use (a cgroup or taskset can grant fewer than the machine has).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    wanted = cores if n_jobs is None or n_jobs < 0 else max(int(n_jobs), 1)
    return max(1, min(wanted, n_tasks))
