"""Structured noise: find noise correlated along image lines, and choose masks that hide it.

Noise2Self needs the noise of the hidden pixels to be independent of everything the
denoiser sees. Line-scanning microscopes and sCMOS read-out make noise that is correlated
along rows or columns; a pixel-wise mask then leaves the hidden pixel's noise visible in
its neighbours on the same line, so every self-supervised loss is too low, most of all for
the weakest smoothing, and the calibration under-smooths.

Detection. For each spatial axis ``a``, the residual ``r = x - m`` takes ``m``, the mean of
the face neighbours *off* the line through the pixel (the pixels above and below, for
``a`` the rows). When the noise is independent from one line to the next, the noise part of
``r`` at lag ``k`` along ``a`` has exactly the noise's own correlation at that lag (the
neighbours' noise, on other lines, is correlated only with each other, in the same
proportion), and zero for white noise. What is left of the signal in ``r`` (edges along the
line) is kept out by using only the flattest quarter of the pixels, the same device as
:func:`~sc_noise2self.image.estimate_noise_variance`. An axis is structured when the lag-1
correlation exceeds :data:`THRESHOLD`, four standard errors of a white-noise estimate, and
half the strongest axis's.

Masks. Noise correlated along axis ``a`` is covered exactly by hiding whole lines along it
(``line_axes``, see :func:`~sc_noise2self.image.masking.grid_masks`): lines are independent
of each other, so a hidden line's noise is independent of every pixel the denoiser sees,
whatever the correlation's length. Stand-ins come from the neighbouring lines.

Noise correlated along every axis (a blurred or resampled image, demosaicing) leaves no line
to predict from. It is covered by blocks instead: each scored pixel hides the cube of
half-width ``reach`` around it (the detector's longest extent, at most
:func:`~sc_noise2self.image.masking.max_reach`: 3 in 2D, 1 in 3D), and the cube takes the
mean of the face pixels ``reach + 1`` away, outside the correlation. This is exactly
J-invariant for noise correlated within ``reach`` pixels (Chebyshev distance); a longer
correlation is said in the warning, and what reaches past the blocks still biases the
losses low.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_choice, check_real, check_whole
from ..io import axes_or_new
from .checks import check_image
from .masking import check_line_axes, max_reach, neighbour_kernel, spatial_axes
from .noise import smoothed_slope

#: The values of every ``mask`` argument.
MASKS: tuple[str, ...] = ("auto", "pixel", "rows", "columns", "blocks")
#: Lag-1 correlation of the noise above which its structure changes the calibration.
#: On white noise the flat-pixel estimate stayed below 0.08 on camera down to sigma 0.02,
#: and on the real FMD noise it is 0.06-0.07 along rows; correlated noise of 3 pixels or more
#: gives 0.6 and above (benchmarks/RESULTS.md).
THRESHOLD = 0.2
#: Share of the pixels, the flattest, whose residuals are correlated.
_FLAT_SHARE = 0.25
#: Standard errors of a white-noise estimate that a structured axis must exceed as well.
_Z = 4.0
_SMOOTHING = 1.0
#: Share of the strongest axis's lag-1 correlation that another structured axis must reach.
_RELATIVE = 0.5


class StructuredNoiseWarning(UserWarning):
    """The noise is correlated along image lines, and the masks were grown to hide them."""


@dataclass(frozen=True)
class NoiseCorrelation:
    """The noise's correlation along each spatial axis, as :func:`noise_correlation` found it.

    Attributes
    ----------
    correlation
        ``(n_spatial, max_lag)``: the correlation at lags ``1..max_lag`` along each spatial
        axis (rows of the array in axis order: ``(y, x)`` in 2D, ``(z, y, x)`` in 3D).
    standard_error
        Per axis, the standard error of one lag's estimate under white noise.
    threshold
        The lag-1 correlation above which an axis counts as structured.
    structured_axes
        Spatial axes whose lag-1 correlation exceeds the threshold, ``4`` standard errors
        and half the strongest axis's.
    extent
        Per axis, the largest lag up to which the correlation stays above half the
        threshold (0: none).
    """

    correlation: np.ndarray
    standard_error: np.ndarray
    threshold: float
    structured_axes: tuple[int, ...]
    extent: tuple[int, ...]

    @property
    def n_spatial(self) -> int:
        """Number of spatial axes."""
        return self.correlation.shape[0]

    @property
    def line_axes(self) -> tuple[int, ...]:
        """The axes to hide whole lines along: the structured ones, unless that is all of them.

        When every axis is structured no line mask leaves anything to predict from, and
        ``()`` is returned (:attr:`covered` is then False).
        """
        return self.structured_axes if self.covered else ()

    @property
    def covered(self) -> bool:
        """Whether line masks can hide the structure that was found."""
        return len(self.structured_axes) < self.n_spatial

    @property
    def reach(self) -> int:
        """Half-width of the blocks to hide when every axis is structured, else 0.

        The longest extent of the correlation, at most
        :func:`~sc_noise2self.image.masking.max_reach` (at least 1).
        """
        return 0 if self.covered else self.block_reach

    @property
    def block_reach(self) -> int:
        """The blocks' half-width that would cover the correlation found (at least 1).

        At most :func:`~sc_noise2self.image.masking.max_reach` (3 in 2D, 1 in 3D).
        """
        return int(min(max(max(self.extent, default=1), 1), max_reach(self.n_spatial)))

    @property
    def mask(self) -> str:
        """The mask chosen: ``"pixel"``, ``"rows"``, ``"columns"``, ``"blocks"``, or lines."""
        return mask_name(self.line_axes, self.n_spatial, self.reach)

    def summary(self) -> str:
        """One sentence: which axes are structured, with their lag-1 correlations."""
        names = axis_names(self.n_spatial)
        lag1 = ", ".join(f"{n} {c:.2f}" for n, c in zip(names, self.correlation[:, 0],
                                                         strict=True))
        if not self.structured_axes:
            return f"no structured noise found (lag-1 correlation along {lag1})"
        along = " and ".join(names[a] for a in self.structured_axes)
        found = f"noise correlated along {along} (lag-1 correlation along {lag1})"
        if not self.covered:
            side = 2 * self.reach + 1
            text = (f"{found}: along every axis, so each hidden pixel hides its {side} x "
                    f"{side} block (mask 'blocks', reach {self.reach})")
            if max(self.extent) > self.reach:
                text += (f"; the correlation reaches {max(self.extent)} pixels, past the "
                         f"largest block ({self.reach}), so the losses stay biased low")
            return text
        return f"{found}: mask {self.mask!r}"

    def to_dict(self) -> dict:
        """JSON-ready record."""
        return {"mask": self.mask, "reach": self.reach,
                "structured_axes": list(self.structured_axes),
                "lag1": [round(float(c), 4) for c in self.correlation[:, 0]],
                "extent": list(self.extent), "threshold": self.threshold}

    def plot(self, ax=None):
        """Draw the correlation against the lag along each axis, with the threshold.

        The shaded band is two standard errors of a white-noise estimate around zero.

        Parameters
        ----------
        ax
            Where to draw (None: a new figure).

        Returns
        -------
        The matplotlib Axes drawn on.
        """
        ax = axes_or_new(ax)
        lags = np.arange(1, self.correlation.shape[1] + 1)
        for name, values, se in zip(axis_names(self.n_spatial), self.correlation,
                                    self.standard_error, strict=True):
            line, = ax.plot(lags, values, "o-", label=f"along {name}")
            ax.fill_between(lags, -2 * se, 2 * se, color=line.get_color(), alpha=0.15)
        ax.axhline(self.threshold, color="red", ls="--", label="threshold")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("lag (pixels)")
        ax.set_ylabel("noise correlation")
        ax.set_title(self.summary() if not self.structured_axes else f"mask: {self.mask}")
        ax.legend(fontsize=8)
        return ax


def axis_names(n_spatial: int) -> list[str]:
    """How the messages call the spatial axes: rows run along x."""
    return ["z", "y", "x"][-n_spatial:] if n_spatial <= 3 else [f"axis {i}" for i in
                                                                range(n_spatial)]


def mask_name(line_axes: tuple[int, ...], n_spatial: int, reach: int = 0) -> str:
    """``"pixel"``, ``"rows"`` (along x), ``"columns"`` (along y), ``"blocks"``, or the axes."""
    if reach:
        return "blocks"
    if not line_axes:
        return "pixel"
    if tuple(line_axes) == (n_spatial - 1,):
        return "rows"
    if tuple(line_axes) == (n_spatial - 2,):
        return "columns"
    return "lines along " + " and ".join(axis_names(n_spatial)[a] for a in line_axes)


def noise_correlation(image, *, channel_axis: int | None = None, max_lag: int = 8,
                      threshold: float = THRESHOLD) -> NoiseCorrelation:
    """Estimate the noise's correlation along each axis from the line-wise J-invariant residual.

    See the module docstring for the method. It takes one pass of a few filters over the
    image (about 0.05 s for 512 x 512).

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with channels (pooled); at least
        ``2 * max_lag + 3`` pixels along every spatial axis.
    channel_axis
        Axis holding channels, or None.
    max_lag
        Largest lag estimated, at least 1.
    threshold
        Lag-1 correlation above which an axis is structured, in (0, 1).

    Returns
    -------
    :class:`NoiseCorrelation`; ``.plot()`` draws it and ``.mask`` is the mask to use.
    """
    max_lag = check_whole(max_lag, name="max_lag", minimum=1)
    threshold = check_real(threshold, name="threshold")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold} must be a correlation in (0, 1), e.g. "
                         f"{THRESHOLD}.")
    floats, channel_axis = check_image(image, channel_axis=channel_axis)
    spatial = spatial_axes(floats.ndim, channel_axis)
    shortest = min(floats.shape[a] for a in spatial)
    if shortest < 2 * max_lag + 3:
        raise ValueError(
            f"image has {shortest} pixels along a spatial axis: too few to estimate the noise "
            f"correlation up to max_lag={max_lag} (at least {2 * max_lag + 3}). Pass a smaller "
            "max_lag, or mask='pixel' (or 'rows'/'columns') instead of 'auto'.")
    work = floats.astype(np.float32) if floats.dtype != np.float64 else floats
    sigmas = [0.0 if a == channel_axis else _SMOOTHING for a in range(floats.ndim)]
    slope = smoothed_slope(work, sigmas, channel_axis)
    flat = slope <= np.quantile(slope, _FLAT_SHARE)
    rows, errors = [], []
    for line in range(len(spatial)):
        values, se = _line_correlations(work, flat, channel_axis, line, max_lag)
        rows.append(values)
        errors.append(se)
    correlation, standard_error = np.array(rows), np.array(errors)
    # An axis must also reach half the strongest: noise correlated along one axis makes the
    # other axes' residuals mostly signal (their neighbours cancel the shared noise), and
    # edges along the line then pass for correlation (0.27 against 0.71 on camera, sd 0.02).
    floor = np.maximum(max(threshold, _RELATIVE * correlation[:, 0].max()), _Z * standard_error)
    structured = tuple(a for a in range(len(spatial)) if correlation[a, 0] > floor[a])
    extent = tuple(_extent(correlation[a], threshold / 2) for a in range(len(spatial)))
    return NoiseCorrelation(correlation, standard_error, float(threshold), structured, extent)


def _line_correlations(image: np.ndarray, flat: np.ndarray, channel_axis: int | None,
                       line: int, max_lag: int) -> tuple[np.ndarray, float]:
    """Correlations at lags ``1..max_lag`` along spatial axis ``line`` of the residual."""
    kernel = neighbour_kernel(image.ndim, "mean", channel_axis, (line,)).astype(image.dtype)
    residual = image - ndi.convolve(image, kernel, mode="mirror")
    axis = spatial_axes(image.ndim, channel_axis)[line]
    # The mirrored border repeats pixels into the stand-ins: keep one pixel off every edge.
    inside = tuple(slice(1, -1) if a != channel_axis and a != axis else slice(None)
                   for a in range(image.ndim))
    residual, flat = residual[inside], np.broadcast_to(flat, image.shape)[inside]
    values, n_pairs = np.zeros(max_lag), 0
    for lag in range(1, max_lag + 1):
        head = _along(residual, axis, 0, -lag)
        tail = _along(residual, axis, lag, None)
        chosen = _along(flat, axis, 0, -lag)
        a = head[chosen].astype(np.float64)
        b = tail[chosen].astype(np.float64)
        values[lag - 1] = _correlation(a, b)
        n_pairs = a.size if lag == 1 else n_pairs
    return values, 1.0 / np.sqrt(max(n_pairs, 1))


def _along(array: np.ndarray, axis: int, start: int, stop: int | None) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[axis] = slice(start, stop)
    return array[tuple(index)]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    scale = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / scale) if scale > 0 else 0.0


def _extent(values: np.ndarray, floor: float) -> int:
    above = values > floor
    return int(np.argmin(above)) if not above.all() else int(above.size)


class MaskChoice(NamedTuple):
    """What a ``mask`` argument resolves to for one image."""

    #: Spatial axes to hide whole lines along.
    line_axes: tuple[int, ...]
    #: Half-width of the block hidden around each pixel (0: none).
    reach: int
    #: The detector's result, when it ran (``"auto"``, ``"blocks"``).
    detection: NoiseCorrelation | None


def resolve_mask(mask: str | tuple[int, ...], floats: np.ndarray, channel_axis: int | None,
                 ) -> MaskChoice:
    """The lines or blocks that ``mask`` hides on this image; ``"auto"`` runs the detector.

    Parameters
    ----------
    mask
        One of :data:`MASKS`, or a tuple of spatial axes (counted among the spatial axes)
        to hide whole lines along; ``()`` is ``"pixel"``. ``"blocks"`` hides a block
        around each pixel, of the half-width the detector finds (at least 1). A
        :class:`MaskChoice` (resolved once for several methods) is returned as it is.
    floats
        The checked float image.
    channel_axis
        Non-negative channel axis, or None.

    Returns
    -------
    ``(line_axes, reach, detection)``: the spatial axes to hide whole lines along, the
    blocks' half-width, and the detector's result (None when it did not run). A structure
    found by ``"auto"`` is announced by a :class:`StructuredNoiseWarning`.
    """
    if isinstance(mask, MaskChoice):  # resolved once by the caller, for every method
        return mask
    n_spatial = floats.ndim - (channel_axis is not None)
    if not isinstance(mask, str):
        return MaskChoice(check_line_axes(mask, n_spatial), 0, None)
    check_choice(mask, MASKS, name="mask")
    if mask in ("pixel", "rows", "columns"):
        lines = {"pixel": (), "rows": (n_spatial - 1,), "columns": (n_spatial - 2,)}[mask]
        return MaskChoice(lines, 0, None)
    shortest = min(floats.shape[a] for a in spatial_axes(floats.ndim, channel_axis))
    max_lag = min(8, (shortest - 3) // 2)
    if max_lag < 1:  # too small to tell: pixel masks, as before (blocks of 1 if asked)
        return MaskChoice((), int(mask == "blocks"), None)
    found = noise_correlation(floats, channel_axis=channel_axis, max_lag=max_lag)
    if mask == "blocks":
        return MaskChoice((), found.block_reach, found)
    if found.structured_axes:
        warnings.warn(found.summary() + ". Pass mask='pixel' to keep pixel masks.",
                      StructuredNoiseWarning, stacklevel=3)  # the entry point's caller
    return MaskChoice(found.line_axes, found.reach, found)
