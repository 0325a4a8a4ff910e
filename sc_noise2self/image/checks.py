"""Input checks shared by the J-invariant wrapper and the masked CNNs.

Both paths take the same images (2D or 3D, integer or float, an optional channel axis
anywhere) and express them in the same units, so they agree on what is valid and say so in
the same words.

Value ranges: integer images are scaled like :func:`skimage.util.img_as_float` (uint8 by
1/255, uint16 by 1/65535, so into [0, 1]); float images are used as they are (float16 is
promoted to float32).
"""

from __future__ import annotations

import numpy as np

#: Grid spacing of the masking phases unless the user gives one: 16 phases in 2D.
DEFAULT_STRIDE = 4


def as_float(array: np.ndarray, name: str = "image") -> np.ndarray:
    """An image as floats, in the units of the whole image package.

    Parameters
    ----------
    array
        Integer or float array.
    name
        How to call the array in error messages.

    Returns
    -------
    The floats; the input itself when it already is float32 or float64 (never modified).
    Raises ``TypeError`` for other dtypes and ``ValueError`` for NaN or infinite values.
    """
    if array.dtype.kind not in "uif":
        raise TypeError(f"{name} has dtype {array.dtype}; pass an integer or float image.")
    if array.dtype.kind != "f":
        from skimage.util import img_as_float

        array = img_as_float(array)
    elif array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; fill or crop them first.")
    return array


def normalise_channel_axis(channel_axis: int | None, ndim: int, name: str = "image") -> int | None:
    """The channel axis as a non-negative index, checked against the number of axes.

    Parameters
    ----------
    channel_axis
        Index of the channel axis (negative counts from the end), or None.
    ndim
        Number of axes of one image, channel axis included.
    name
        How to call the image in error messages.

    Returns
    -------
    The index in ``[0, ndim)``, or None.
    """
    if channel_axis is None:
        return None
    if not -ndim <= int(channel_axis) < ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for {name} with {ndim} axes; pass "
            f"an index from {-ndim} to {ndim - 1}, or None when there are no channels."
        )
    return int(channel_axis) % ndim


def check_stride(stride: int, name: str = "stride") -> int:
    """Return ``stride`` if it is an integer grid spacing of at least 2, else raise.

    Parameters
    ----------
    stride
        The grid spacing.
    name
        The argument's name in the error message.

    Returns
    -------
    The stride as an int.
    """
    if not isinstance(stride, int | np.integer) or stride < 2:
        raise ValueError(f"{name}={stride!r} must be an integer of at least 2 (4 is usual).")
    return int(stride)


def prepare_image(
    image, *, stride: int, channel_axis: int | None, name: str = "image"
) -> tuple[np.ndarray, int | None]:
    """Check an image for J-invariant calibration; return it as floats, channel axis >= 0.

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
    channel_axis = normalise_channel_axis(channel_axis, array.ndim, name)
    n_spatial = array.ndim - (channel_axis is not None)
    if n_spatial < 2:
        raise ValueError(
            f"{name} has {n_spatial} spatial axis (shape {array.shape}); J-invariant "
            "calibration needs a 2D image or a 3D volume. Reshape 1D signals to 2D first."
        )
    check_stride(stride)
    spatial = [s for axis, s in enumerate(array.shape) if axis != channel_axis]
    if min(spatial) < stride:
        raise ValueError(
            f"{name} has spatial shape {tuple(spatial)}, smaller than stride={stride} along "
            f"an axis; pass a larger image or a stride of at most {min(spatial)}."
        )
    return as_float(array, name), channel_axis
