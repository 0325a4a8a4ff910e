"""Steps 2-3 for images: the J-invariant wrapper, and the record of a calibration.

A J-invariant denoiser's output at a pixel ignores that pixel's value, so its error is
independent of the pixel's noise, and its self-supervised loss ``mean((f(x) - x) ** 2)``
equals the true loss ``mean((f(x) - y) ** 2)`` plus the noise variance. The parameters with
the lowest self-supervised loss are then the best ones (Batson & Royer 2019, section 3);
:func:`~sc_noise2self.image.calibrate` (in :mod:`.scoring`) searches a grid for them and
returns an :class:`ImageCalibration`, whose output is mixed with the input (:mod:`.mixing`)
and graded against the J-invariant neighbour mean (:mod:`.referee`).

Memory: the phases are streamed. Each worker holds one masked copy of the image at a time
(:func:`~sc_noise2self.image.masking.masked_phases` here, :mod:`.phases` for the
calibration, which runs the whole grid on each copy), plus the stand-in values and the
denoiser's own output, whatever the number of phases (16 in 2D, 64 in 3D at stride 4).

Value ranges: see :mod:`.checks` (integers scaled into [0, 1], floats as they are). Every
output is a float array in those units, and is never clipped. The built-in methods run on
the image in working units (:mod:`.units`), so that their results do not depend on its units.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from .._rng import check_random_state
from .._validation import check_choice
from ..io import axes_or_new
from ..results import CalibrationResult, GridEdgeWarning, json_ready
from .checks import DEFAULT_STRIDE, check_flag, prepare_image
from .classical import METHODS
from .masking import INTERPOLATIONS, Mask, grid_masks, masked_phases, replacement_values
from .mixing import mixed_error, optimal_mix_weight
from .referee import baseline_wins, neighbour_mean
from .structure import resolve_mask
from .units import Units, constant_message, units_of

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
    mask: str | tuple[int, ...] = "auto",
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
    mask
        ``"pixel"``, ``"rows"``, ``"columns"``, ``"blocks"``, a tuple of spatial axes to hide
        whole lines along, or ``"auto"``: lines where the noise is correlated along them,
        blocks where it is correlated along every axis (see
        :func:`~sc_noise2self.image.calibrate`). Not used with ``masks``.
    **kwargs
        Parameters of ``denoiser``.

    Returns
    -------
    The J-invariant denoised image, float, of the image's shape.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser={denoiser!r} is not callable; pass a function "
                        "denoiser(image, **kwargs) -> array of the image's shape.")
    check_choice(interpolation, INTERPOLATIONS, name="interpolation")
    check_random_state(random_state)
    floats, channel_axis = prepare_image(image, stride=stride, channel_axis=channel_axis)
    if masks is None:
        line_axes, reach, _ = resolve_mask(mask, floats, channel_axis)
        masks = grid_masks(floats.shape, stride, channel_axis, line_axes, reach)
    else:  # the given phases say what they hide (blocks: their stand-ins are read outside)
        masks = list(masks)
        line_axes, reach = (), max((getattr(m, "reach", 0) for m in masks), default=0)
    replacement = replacement_values(
        floats, interpolation, channel_axis=channel_axis, masks=list(masks),
        random_state=random_state, line_axes=line_axes, reach=reach,
    )
    return invariant_output(floats, bind_denoiser(denoiser, kwargs, channel_axis), list(masks),
                            replacement)


def invariant_output(floats: np.ndarray, denoise: Denoiser, masks: list[Mask],
                     replacement: np.ndarray) -> np.ndarray:
    """Each phase's pixels from the denoiser's output on the copy with that phase hidden.

    Parameters
    ----------
    floats
        Checked float image.
    denoise
        One-argument denoiser (see :func:`bind_denoiser`).
    masks
        The phases.
    replacement
        Their stand-in values.

    Returns
    -------
    The J-invariant output; pixels in no mask are NaN.
    """
    output = np.full(floats.shape, np.nan, dtype=np.result_type(floats.dtype, np.float32))
    for masked, mask in masked_phases(floats, masks, replacement):
        output[mask] = checked_output(denoise(masked), masked.shape)[mask]
    return output


def checked_output(output, shape: tuple[int, ...]) -> np.ndarray:
    """A denoiser's output as an array, refused unless it has the image's shape.

    Parameters
    ----------
    output, shape
        What the denoiser returned, and the shape of the image it was given.

    Returns
    -------
    ``np.asarray(output)``.
    """
    array = np.asarray(output)
    if array.ndim == 0 or array.dtype.kind not in "uifb":
        raise TypeError(f"The denoiser returned {type(output).__name__} (dtype {array.dtype}); "
                        f"it must return a numeric array of the image's shape {shape}.")
    if array.shape != shape:
        raise ValueError(f"The denoiser returned an array of shape {array.shape} for an image "
                         f"of shape {shape}; it must return the image's shape.")
    return array


def direct_loss(work: np.ndarray, image: np.ndarray, units: Units, denoise: Denoiser) -> float:
    """Self-supervised MSE, in working units, of a denoiser J-invariant by construction.

    Parameters
    ----------
    work
        The image in working units and the work dtype.
    image
        The image in its own units.
    units
        The working units.
    denoise
        One-argument denoiser.

    Returns
    -------
    The loss.
    """
    errors = checked_output(denoise(work), work.shape).astype(np.float64)
    errors -= units.forward(image, np.float64)
    return float(np.mean(errors**2))


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
        ``stride``, ``interpolation``, ``channel_axis``, ``approximate_loss``, ``dtype``,
        ``rescaled`` (a built-in method run in working units), ``baseline_loss`` (the
        loss of the J-invariant neighbour mean on the same pixels), ``mask`` and
        ``line_axes`` (the unit hidden: pixels, or whole lines for structured noise) and
        ``noise_correlation`` (the detector's record, when ``mask="auto"`` ran it).
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
            f"baseline_loss={self.baseline_loss}, mix_weight={self.mix_weight:.3f})"
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
    def line_axes(self) -> tuple[int, ...]:
        """Spatial axes along which whole lines were hidden (empty: pixel masks)."""
        return tuple(self.params.get("line_axes") or ())

    @property
    def reach(self) -> int:
        """Half-width of the block hidden around each scored pixel (0: none)."""
        return int(self.params.get("reach") or 0)

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

    @property
    def baseline_loss(self) -> float | None:
        """Self-supervised loss of the J-invariant neighbour mean on the same pixels.

        None for a record saved before the referee existed.
        """
        value = self.params.get("baseline_loss")
        return None if value is None else float(value)

    @property
    def beats_baseline(self) -> bool | None:
        """Whether the best parameters beat the neighbour mean (None when it is unknown)."""
        baseline = self.baseline_loss
        return None if baseline is None else self.best_loss < baseline

    @property
    def edge_parameters(self) -> dict[str, str]:
        """Numeric parameters whose best value is the lowest or highest of the grid's.

        Returns
        -------
        Each such parameter's name, mapped to ``"lowest"`` or ``"highest"``; empty when every
        best value lies inside its grid's range (parameters with one value are left out).
        """
        edges = {}
        for name in varying_parameters(self.grid):
            values = [p[name] for p in self.grid]
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                continue
            best = self.best_params[name]
            if best in (min(values), max(values)):
                edges[name] = "lowest" if best == min(values) else "highest"
        return edges

    def warn_if_at_edge(self) -> None:
        """Warn (:class:`GridEdgeWarning`) when a best value is at its grid's end."""
        edges = self.edge_parameters
        if edges:
            where = "; ".join(f"{name}={self.best_params[name]!r} is the {end} value tried"
                              for name, end in edges.items())
            warnings.warn(f"{self.method!r}: {where}. The loss may fall further beyond it: "
                          "a grid that reaches past that end (param_grid=) may do better.",
                          GridEdgeWarning, stacklevel=3)

    def denoise(self, image, mix: bool = True, fallback: bool = True) -> np.ndarray:
        """Denoise with the best parameters, J-invariantly, then mix with the input.

        The output is graded first: when the best parameters do not beat the J-invariant
        neighbour mean (:attr:`beats_baseline` is False), a
        :class:`~sc_noise2self.image.referee.BaselineWarning` gives both losses.

        Parameters
        ----------
        image
            The calibrated image, or one like it, in the same layout; never modified.
        mix
            Return ``w * f(x) + (1 - w) * x`` with the optimal ``w`` (section 4.2), or the
            J-invariant output ``f(x)`` alone.
        fallback
            When the best parameters lose to the neighbour mean, return the neighbour mean
            (mixed in the same way) instead of their output.

        Returns
        -------
        Float image of the input's shape (units as in the module docstring); a constant
        image is returned unchanged, with a warning.
        """
        if self.denoiser is None:
            raise ValueError(
                f"This calibration of {self.method!r} was rebuilt without its denoiser; pass "
                "it as ImageCalibration.from_dict(record, denoiser=...)."
            )
        check_flag(mix, "mix")
        check_flag(fallback, "fallback")
        floats, channel_axis = prepare_image(
            image, stride=self.settings["stride"], channel_axis=self.settings["channel_axis"]
        )
        units = units_of(floats)
        if units.constant:
            warnings.warn(constant_message(units, "it is returned unchanged"), UserWarning,
                          stacklevel=2)
            return floats.astype(np.result_type(floats.dtype, np.float32), copy=True)
        baseline = self.baseline_loss
        what = f"{self.method!r} with its best parameters {self.best_params}"
        if baseline_wins(what, self.best_loss, baseline, fallback):
            return self._mixed(neighbour_mean(floats, channel_axis, self.line_axes,
                                              self.reach), floats, baseline, mix)
        output = self._output(floats, channel_axis, units)
        return self._mixed(output, floats, self.best_loss, mix)

    def _output(self, floats: np.ndarray, channel_axis: int | None, units: Units) -> np.ndarray:
        """The J-invariant output of the best parameters, in the image's units."""
        params = self.best_params
        rescaled = bool(self.settings.get("rescaled", False))
        if rescaled:  # a built-in method: it ran, and runs, in working units
            params = METHODS[self.method].working_params(params, units.scale)
            floats = units.forward(floats)
        denoise = bind_denoiser(self.denoiser, params, channel_axis)
        if self.invariant:
            output = checked_output(denoise(floats), floats.shape)
        else:
            masks = grid_masks(floats.shape, self.settings["stride"], channel_axis,
                               self.line_axes, self.reach)
            replacement = replacement_values(floats, self.settings["interpolation"],
                                             channel_axis=channel_axis, masks=masks,
                                             line_axes=self.line_axes, reach=self.reach)
            output = invariant_output(floats, denoise, masks, replacement)
        return units.inverse(output) if rescaled else output

    def _mixed(self, output: np.ndarray, floats: np.ndarray, loss: float, mix: bool):
        weight = optimal_mix_weight(loss, self.noise_variance) if mix else 1.0
        return weight * output + (1.0 - weight) * floats if weight < 1.0 else output

    def plot(self, ax=None):
        """Draw the loss against the parameter grid and mark the minimum (the paper's Fig. 2).

        The noise variance (the floor of any loss) and the J-invariant neighbour mean's loss
        (the referee's bar) are drawn as horizontal lines.

        Parameters
        ----------
        ax
            Matplotlib Axes to draw on; a new figure when None.

        Returns
        -------
        The Axes.
        """
        ax = axes_or_new(ax)
        x, label = self._plot_positions()
        ax.plot(x, self.losses, "o-", label=f"{self.method} (self-supervised)")
        ax.plot(x[self.best_index], self.best_loss, "r*", markersize=14, label="minimum")
        ax.axhline(self.noise_variance, color="grey", ls="--", label="noise variance")
        if self.baseline_loss is not None:  # the referee: a curve above it found nothing
            ax.axhline(self.baseline_loss, color="tab:orange", ls=":", label="neighbour mean")
        ax.set_xlabel(label)
        ax.set_ylabel("self-supervised loss (MSE)")
        ax.legend(frameon=False)
        return ax

    def _plot_positions(self) -> tuple[np.ndarray, str]:
        varying = varying_parameters(self.grid)
        if len(varying) == 1 and all(np.isscalar(p[varying[0]]) for p in self.grid):
            return np.array([p[varying[0]] for p in self.grid], dtype=float), varying[0]
        return np.arange(len(self.grid)), "parameter set"

    def to_dict(self, *, json_safe: bool = False) -> dict:
        """Plain record of the calibration (no callable), e.g. for ``json`` or ``adata.uns``.

        With ``json_safe``, numpy arrays and scalars become lists and Python numbers (what
        :meth:`to_json` writes).

        Returns
        -------
        The keys of :meth:`CalibrationResult.to_dict
        <sc_noise2self.calibration.CalibrationResult.to_dict>` (``params`` holding the
        settings and ``param``, ``grid``, ``loss``, ``loss_std``, ``loss_per_split``,
        ``best``) plus ``method``, ``noise_variance``, ``noise_variance_estimated``,
        ``mix_weight``, ``invariant``, ``candidates`` and ``edge`` (:attr:`edge_parameters`).
        :meth:`from_dict` rebuilds the
        calibration from it.
        """
        record = {
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
            "edge": self.edge_parameters,
        }
        return json_ready(record) if json_safe else record

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
