"""The units the built-in denoisers work in: the image less its median, over its spread.

Results should not depend on the units an image happens to be stored in: a microscope's
counts, a camera's [0, 1] floats, or the same image times 1e30. The built-in methods
therefore run on ``z = (image - offset) / scale`` and their outputs, losses and noise
variances are mapped back (``offset + scale * z``, ``scale**2 * loss``). The offset is the
median, so that float32 work keeps its precision on images far from zero; the scale is the
power of two nearest to a robust spread, so that dividing by it and multiplying back are
exact. A constant image has no spread and is flagged, so that callers return it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Pixels sampled (on a regular sub-grid) for the median and the spread: enough for a
#: power-of-two scale, and a constant cost however large the image.
_SAMPLE = 2**16
_MAD_TO_SD = 1.4826
#: Spreads whose squares leave float64 (about 1e+-300): no loss in the image's units exists.
_SCALE_RANGE = (2.0**-500, 2.0**500)


@dataclass(frozen=True)
class Units:
    """An affine map from an image's values to working units, and back.

    Attributes
    ----------
    offset
        Subtracted first (the median).
    scale
        Then divided by (a power of two).
    constant
        True when every value of the image is ``offset``.
    """

    offset: float
    scale: float
    constant: bool = False

    def forward(self, values: np.ndarray, dtype=None) -> np.ndarray:
        """``(values - offset) / scale`` as a new array (in ``dtype``, default the input's).

        Parameters
        ----------
        values
            Array in the image's units.
        dtype
            Float type of the result; None keeps ``values``'s (at least float32).

        Returns
        -------
        The values in working units.
        """
        dtype = np.result_type(values.dtype, np.float32) if dtype is None else dtype
        out = np.empty(values.shape, dtype=dtype)
        return affine_into(out, values, self.offset, self.scale)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """``offset + scale * values`` (in place when ``values`` is a float array).

        Parameters
        ----------
        values
            Array in working units; overwritten.

        Returns
        -------
        The values in the image's units.
        """
        values = np.asarray(values)
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        values *= self.scale
        values += self.offset
        return values


IDENTITY = Units(0.0, 1.0)
#: Elements per block of :func:`affine_into`: small float64 temporaries, few numpy calls.
_BLOCK = 2**16


def affine_into(out: np.ndarray, values: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """Write ``(values - offset) / scale`` into ``out``, computed in float64 block by block.

    Computing in float64 and rounding once keeps the result what ``astype`` of the exact
    value gives, and keeps a float32 ``out`` from overflowing on an image of 1e40 that is
    only 1 once rescaled; the blocks keep the float64 temporaries small.

    Parameters
    ----------
    out
        Float array of ``values``'s shape, written in place.
    values
        The array in the image's units.
    offset, scale
        The map (``scale`` a power of two, so the division is exact).

    Returns
    -------
    ``out``.
    """
    inverse = 1.0 / scale
    if values.ndim == 0:
        out[()] = (float(values) - offset) * inverse
        return out
    rows = max(1, _BLOCK // max(1, math.prod(values.shape[1:])))
    for start in range(0, values.shape[0], rows):
        block = np.asarray(values[start : start + rows], dtype=np.float64) - offset
        block *= inverse
        out[start : start + rows] = block
    return out


def units_of(image: np.ndarray, name: str = "image") -> Units:
    """The working units of an image: its median and a power-of-two robust spread.

    Parameters
    ----------
    image
        Finite float image.
    name
        How to call it in error messages.

    Returns
    -------
    The :class:`Units`. Raises ``ValueError`` when the image's spread is so large (or so
    small) that its squared errors overflow (or underflow) float64.
    """
    low, high = float(np.min(image)), float(np.max(image))
    if low == high:
        return Units(low, 1.0, constant=True)
    sample = _sample(image)
    # In place (the medians reorder the sample, the deviations overwrite it): one sample in
    # memory, where copies for each step took three images' worth on a small image.
    offset = float(np.median(sample, overwrite_input=True))
    with np.errstate(over="ignore", invalid="ignore"):  # +-1e308: caught by the range check
        sample -= offset
        np.abs(sample, out=sample)
        spread = _MAD_TO_SD * float(np.median(sample, overwrite_input=True))
        if not spread > 0:  # over half the pixels share one value (a flat background)
            spread = float(np.std(_sample(image)))
    if not spread > 0 or not math.isfinite(spread):  # the sample missed the few others
        spread = high / 2 - low / 2  # halves: no overflow on +-1e308
    scale = 2.0 ** round(math.log2(spread))
    if not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
        raise ValueError(
            f"{name} varies on a scale of about {spread:.1e}: its squared errors leave the "
            "range of float64, so no self-supervised loss exists in its units. Rescale it "
            f"first, e.g. {name} / np.abs({name}).max(); the results do not depend on units."
        )
    return Units(offset, scale)


def _sample(image: np.ndarray) -> np.ndarray:
    """A regular sub-grid of at most about :data:`_SAMPLE` pixels (a view, then a copy)."""
    step = max(1, math.ceil((image.size / _SAMPLE) ** (1.0 / image.ndim)))
    return np.array(image[(slice(None, None, step),) * image.ndim], dtype=np.float64).ravel()


def constant_message(units: Units, outcome: str, name: str = "image") -> str:
    """What to tell a user whose image is constant.

    Parameters
    ----------
    units
        The image's units (``constant`` is True).
    outcome
        What the caller does about it, e.g. ``"it is returned unchanged"``.
    name
        How to call the image.

    Returns
    -------
    The warning's text.
    """
    return (f"{name} is constant (every value is {units.offset:.6g}): it has no noise to "
            f"remove, so {outcome}.")
