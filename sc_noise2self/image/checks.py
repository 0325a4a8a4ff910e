"""Input checks shared by every image entry point: the J-invariant wrapper and the masked CNNs.

Both paths take the same images (2D or 3D, integer or float, an optional channel axis
anywhere) and express them in the same units, so they agree on what is valid and say so in
the same words: every message names the argument, what is wrong with it, and what to pass.

Value ranges: integer images are scaled like :func:`skimage.util.img_as_float` (uint8 by
1/255, uint16 by 1/65535, so into [0, 1]); float images are used as they are (float16 is
promoted to float32).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import check_real, check_whole

#: Grid spacing of the masking phases unless the user gives one: 16 phases in 2D.
DEFAULT_STRIDE = 4
#: An axis this short, first or last, is more likely colour channels than space.
_CHANNEL_LIKE = 4


def as_array(image, name: str = "image") -> np.ndarray:
    """``image`` as a numpy array, or a clear error for what cannot be an image.

    Parameters
    ----------
    image
        Array-like.
    name
        How to call it in error messages.

    Returns
    -------
    ``np.asarray(image)`` (no copy for arrays).
    """
    if image is None:
        raise TypeError(f"{name} is None; pass a 2D image or a 3D volume as a numpy array.")
    if isinstance(image, str | bytes):
        raise TypeError(f"{name} is a {type(image).__name__} ({image!r:.40}); pass the image "
                        "as a numpy array (read files with skimage.io.imread or tifffile).")
    try:
        return np.asarray(image)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} is not a rectangular array ({error}); pass a numpy array "
                         "whose rows all have the same length.") from error


def check_pixel_dtype(dtype, name: str = "image") -> None:
    """Refuse pixels that are neither integers nor floats (a bool mask, strings).

    Parameters
    ----------
    dtype
        The pixels' dtype.
    name
        How to call the image in error messages.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        hint = " (convert a mask with .astype(float))" if dtype.kind == "b" else ""
        raise TypeError(f"{name} has dtype {dtype}; pass an integer or float image{hint}.")


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
    check_pixel_dtype(array.dtype, name)
    if array.dtype.kind != "f":
        from skimage.util import img_as_float

        array = img_as_float(array)
    elif array.dtype.itemsize < 4:
        array = array.astype(np.float32)
    elif array.dtype.itemsize > 8:
        array = array.astype(np.float64)  # long double: the denoisers take float64 at most
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; fill or crop them first "
                         "(e.g. np.nan_to_num, or a crop that leaves them out).")
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
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(f"channel_axis={channel_axis!r} must be an axis index (an int, e.g. -1) "
                        "or None.")
    if not -ndim <= int(channel_axis) < ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for {name} with {ndim} axes; pass "
            f"an index from {-ndim} to {ndim - 1}, or None when there are no channels."
        )
    return int(channel_axis) % ndim


def channel_hint(shape: tuple[int, ...], channel_axis: int | None) -> str:
    """Advice to pass ``channel_axis`` when a short first or last axis looks like channels.

    Parameters
    ----------
    shape
        The image's shape.
    channel_axis
        The channel axis given, or None.

    Returns
    -------
    A sentence starting with a space, or ``""`` when there is nothing to suggest.
    """
    if len(shape) < 3:
        return ""
    given = None if channel_axis is None else channel_axis % len(shape)
    for axis in (len(shape) - 1, 0):
        if shape[axis] <= _CHANNEL_LIKE and axis != given:
            index = -1 if axis else 0
            read_as = ("Without channel_axis" if channel_axis is None
                       else f"With channel_axis={channel_axis}")
            return (f" {read_as}, its axis {index} of {shape[axis]} is read as a spatial "
                    f"axis; if it holds colour channels, pass channel_axis={index}.")
    return ""


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
    return check_whole(stride, name=name, minimum=2,
                       hint="the spacing of the masking grid; 4 is usual")


def check_image(image, *, channel_axis: int | None,
                name: str = "image") -> tuple[np.ndarray, int | None]:
    """Check one image (2 or 3 spatial axes, integer or float, finite); return it as floats.

    Parameters
    ----------
    image
        Array-like.
    channel_axis, name
        Index of the channel axis (negative allowed) or None, and how to call the image in
        error messages.

    Returns
    -------
    ``(floats, channel_axis)`` with the channel axis non-negative. The floats may be the
    input itself when it already is float32 or float64; it is never modified.
    """
    array = as_array(image, name)
    check_pixel_dtype(array.dtype, name)
    channel_axis = normalise_channel_axis(channel_axis, max(array.ndim, 1), name)
    n_spatial = max(array.ndim - (channel_axis is not None), 0)
    if n_spatial < 2:
        raise ValueError(
            f"{name} has {n_spatial} spatial axis (shape {array.shape}); J-invariant "
            "calibration needs a 2D image or a 3D volume. Reshape 1D signals to 2D first."
        )
    if n_spatial > 3:
        raise ValueError(
            f"{name} has {n_spatial} spatial axes (shape {array.shape}); pass a 2D image or a "
            "3D volume, with channel_axis= naming the axis that holds channels (denoise a "
            "time series or a stack one image at a time)."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass an image with pixels.")
    return as_float(array, name), channel_axis


def prepare_image(
    image, *, stride: int, channel_axis: int | None, name: str = "image"
) -> tuple[np.ndarray, int | None]:
    """Check an image for J-invariant calibration; return it as floats, channel axis >= 0.

    Parameters
    ----------
    image
        Array-like of 2 or 3 spatial axes, integer or float.
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
    check_stride(stride)
    floats, channel_axis = check_image(image, channel_axis=channel_axis, name=name)
    spatial = [s for axis, s in enumerate(floats.shape) if axis != channel_axis]
    if min(spatial) < stride:
        hint = channel_hint(floats.shape, channel_axis)
        fix = hint or (f" Pass a larger image or a stride of at most {min(spatial)}."
                       if min(spatial) >= 2 else
                       " The grid needs at least 2 pixels along each spatial axis: pass a "
                       "larger image.")
        raise ValueError(
            f"{name} has spatial shape {tuple(spatial)}, smaller than stride={stride} along "
            f"an axis.{fix}"
        )
    return floats, channel_axis


def check_flag(value, name: str, allow_none: bool = False) -> bool | None:
    """Return ``value`` if it is True or False (or None when allowed), else raise TypeError.

    Parameters
    ----------
    value
        What the user passed.
    name
        The argument's name.
    allow_none
        Accept None (e.g. ``progress=None``: scanpy's verbosity decides).

    Returns
    -------
    The value.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, bool | np.bool_):
        allowed = "True, False or None" if allow_none else "True or False"
        raise TypeError(f"{name}={value!r} must be {allowed}.")
    return bool(value)


def check_noise_variance(noise_variance, *, allow_none: bool = True) -> float | None:
    """Return a noise variance after checking it is a finite number of at least 0.

    Parameters
    ----------
    noise_variance
        Mean noise variance, in the image's units squared, or None (estimate it).
    allow_none
        Accept None.

    Returns
    -------
    The float, or None.
    """
    return check_real(noise_variance, name="noise_variance", minimum=0.0, allow_none=allow_none,
                      hint="the mean noise variance in the image's units squared, e.g. "
                           "sigma**2; None estimates it from the image")
