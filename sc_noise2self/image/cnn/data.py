"""The CNNs' data: input checks, layout, percentile normalisation, validation band, patches.

Arrays travel through training as float32 ``(channels, *spatial)`` copies, normalised per
channel so that the networks see values of about [0, 1] whatever the microscope's units.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..checks import as_array, as_float, channel_hint, normalise_channel_axis

#: The smallest spatial size the trainer accepts: smaller axes leave too few pixels to learn.
MIN_TRAIN_SIZE = 4
#: Percentiles mapped to 0 and 1 by the input normalisation (as in CSBDeep/CAREamics).
PERCENTILES = (1.0, 99.8)

ImageLike = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class Layout:
    """How the user's arrays map to ``(channels, *spatial)`` tensors.

    Parameters
    ----------
    n_spatial
        2 for images, 3 for volumes.
    channel_axis
        Non-negative channel axis of ONE image (not of a stack), or None.
    """

    n_spatial: int
    channel_axis: int | None

    @property
    def image_ndim(self) -> int:
        """Number of axes of one image, channel axis included."""
        return self.n_spatial + (self.channel_axis is not None)

    def to_internal(self, image: np.ndarray) -> np.ndarray:
        """One image as a float32 ``(channels, *spatial)`` array (a new array).

        Parameters
        ----------
        image
            Float array with :attr:`image_ndim` axes.

        Returns
        -------
        The channel-first copy.
        """
        if self.channel_axis is None:
            return np.array(image[np.newaxis], dtype=np.float32)
        return np.array(np.moveaxis(image, self.channel_axis, 0), dtype=np.float32)

    def to_user(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_internal`.

        Parameters
        ----------
        array
            ``(channels, *spatial)`` array.

        Returns
        -------
        The array with the user's axis order.
        """
        if self.channel_axis is None:
            return array[0]
        return np.moveaxis(array, 0, self.channel_axis)


def prepare_images(
    images: ImageLike, channel_axis: int | None, n_spatial: int | None
) -> tuple[list[np.ndarray], Layout]:
    """Check training images and return them channel-first, with their layout.

    Parameters
    ----------
    images
        One image, a stack of equally sized images (``n_spatial`` given, images along axis
        0), or a list of arrays of different sizes.
    channel_axis
        Channel axis of one image (negative counts from the end), or None.
    n_spatial
        Spatial axes per image; None means every non-channel axis of one array is spatial
        (so a 3D array is a volume, as in scikit-image).

    Returns
    -------
    ``(arrays, layout)``: float32 ``(channels, *spatial)`` copies, never the user's arrays.
    """
    is_list = isinstance(images, list | tuple)
    arrays = ([as_array(a, f"images[{i}]") for i, a in enumerate(images)] if is_list
              else [as_array(images, "images")])  # fmt: skip
    if not arrays:
        raise ValueError("images is an empty list; pass at least one image.")
    first_ndim = arrays[0].ndim
    if n_spatial is None:
        n_spatial = first_ndim - (channel_axis is not None)
    elif (isinstance(n_spatial, bool) or not isinstance(n_spatial, numbers.Integral)
          or n_spatial not in (2, 3)):
        raise ValueError(f"n_spatial={n_spatial!r} must be 2 (images) or 3 (volumes), or None "
                         "to read it from the array.")
    if n_spatial not in (2, 3):
        raise ValueError(
            f"Got {n_spatial} spatial axes (array shape {arrays[0].shape}); the networks take "
            "2D images or 3D volumes. Pass n_spatial=2 for a stack of 2D images, or "
            "channel_axis= for the axis that holds channels."
        )
    image_ndim = n_spatial + (channel_axis is not None)
    if not is_list and first_ndim == image_ndim + 1:
        arrays = list(arrays[0])  # a stack: images along axis 0
    layout = Layout(n_spatial, normalise_channel_axis(channel_axis, image_ndim, "an image"))
    out = []
    for index, array in enumerate(arrays):
        name = f"images[{index}]" if len(arrays) > 1 else "image"
        if array.ndim != image_ndim:
            raise ValueError(
                f"{name} has shape {array.shape}, but {n_spatial} spatial axes"
                f"{' and a channel axis' if channel_axis is not None else ''} make "
                f"{image_ndim} axes. Check n_spatial and channel_axis."
            )
        if min((s for axis, s in enumerate(array.shape) if axis != layout.channel_axis),
               default=0) < MIN_TRAIN_SIZE:
            raise ValueError(
                f"{name} has shape {array.shape}; training needs at least {MIN_TRAIN_SIZE} "
                "pixels along every spatial axis. Pass a larger image (prediction with a "
                f"trained model works on any size).{channel_hint(array.shape, channel_axis)}"
            )
        out.append(layout.to_internal(as_float(array, name)))
    channels = {a.shape[0] for a in out}
    if len(channels) > 1:
        raise ValueError(f"The images have different channel counts {sorted(channels)}; pass "
                         "images with the same channels.")
    return out, layout


@dataclass(frozen=True)
class Normalisation:
    """Per-channel percentile normalisation: ``(x - low) / (high - low)``.

    Parameters
    ----------
    low, high
        Per-channel values mapped to 0 and 1.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def fit(cls, arrays: list[np.ndarray], percentiles=PERCENTILES) -> Normalisation:
        """Percentiles of every channel over all training images.

        Parameters
        ----------
        arrays
            ``(channels, *spatial)`` arrays.
        percentiles
            Lower and upper percentile.

        Returns
        -------
        The normalisation; a flat channel gets a unit range so that nothing divides by 0.
        """
        flat = np.concatenate([a.reshape(a.shape[0], -1) for a in arrays], axis=1)
        low, high = np.percentile(flat, percentiles, axis=1)
        high = np.where(high > low, high, low + 1.0)
        return cls(tuple(map(float, low)), tuple(map(float, high)))

    def _shape(self, values: tuple[float, ...], ndim: int) -> np.ndarray:
        return np.asarray(values, dtype=np.float32).reshape((-1,) + (1,) * (ndim - 1))

    def forward(self, array: np.ndarray) -> np.ndarray:
        """Normalise a ``(channels, *spatial)`` array (a new array).

        Parameters
        ----------
        array
            Channel-first array.

        Returns
        -------
        The normalised float32 array.
        """
        low, high = self._shape(self.low, array.ndim), self._shape(self.high, array.ndim)
        return ((array - low) / (high - low)).astype(np.float32)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`forward`.

        Parameters
        ----------
        array
            Normalised channel-first array.

        Returns
        -------
        The array in the input's units.
        """
        low, high = self._shape(self.low, array.ndim), self._shape(self.high, array.ndim)
        return (array * (high - low) + low).astype(np.float32)


def split_validation(
    arrays: list[np.ndarray], val_fraction: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out the last ``val_fraction`` of every image along its longest spatial axis.

    A band of each image (rather than whole images) keeps validation possible when training
    on one image, which is the usual case.

    Parameters
    ----------
    arrays
        ``(channels, *spatial)`` arrays.
    val_fraction
        Share of each image held out, in ``[0, 0.5]``; 0 turns validation off.

    Returns
    -------
    ``(train, val)`` lists of copies; ``val`` is empty when nothing is held out.
    """
    if not 0.0 <= float(val_fraction) <= 0.5:
        raise ValueError(f"val_fraction={val_fraction!r} must lie in [0, 0.5] (0.1 is usual).")
    train_parts, val_parts = [], []
    for array in arrays:
        axis = 1 + int(np.argmax(array.shape[1:]))
        length = array.shape[axis]
        n_val = round(val_fraction * length)
        if n_val and length - n_val < MIN_TRAIN_SIZE:
            raise ValueError(
                f"An image of spatial shape {array.shape[1:]} is too small to hold out "
                f"val_fraction={val_fraction}; pass val_fraction=0."
            )
        cut = length - n_val
        train_parts.append(np.take(array, np.arange(cut), axis=axis))
        if n_val:
            val_parts.append(np.take(array, np.arange(cut, length), axis=axis))
    return train_parts, val_parts


@dataclass
class PatchSampler:
    """Random patches with random flips (and transposes of square patches), seeded.

    Parameters
    ----------
    images
        Normalised ``(channels, *spatial)`` tensors on the training device.
    patch_size
        Requested patch size per spatial axis; clipped to the smallest image.
    rng
        The seeded generator that picks images, positions and flips.
    transpose
        Also transpose square patches at random. Off for noise correlated along one axis:
        a transposed patch would carry it along the other, which the masks leave visible.
    """

    images: list[torch.Tensor]
    patch_size: tuple[int, ...]
    rng: np.random.Generator
    transpose: bool = True
    _weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        smallest = np.min([img.shape[1:] for img in self.images], axis=0)
        self.patch_size = tuple(
            int(min(p, s)) for p, s in zip(self.patch_size, smallest, strict=True)
        )
        sizes = np.array([np.prod(img.shape[1:]) for img in self.images], dtype=float)
        self._weights = sizes / sizes.sum()

    def batch(self, batch_size: int) -> torch.Tensor:
        """One batch ``(batch_size, channels, *patch_size)``.

        Parameters
        ----------
        batch_size
            Number of patches.

        Returns
        -------
        The stacked patches.
        """
        return torch.stack([self._patch() for _ in range(batch_size)])

    def _patch(self) -> torch.Tensor:
        image = self.images[int(self.rng.choice(len(self.images), p=self._weights))]
        starts = [
            int(self.rng.integers(0, s - p + 1))
            for s, p in zip(image.shape[1:], self.patch_size, strict=True)
        ]
        patch = image[
            (slice(None), *(slice(a, a + p) for a, p in zip(starts, self.patch_size, strict=True)))
        ]
        flips = [1 + axis for axis in range(len(starts)) if self.rng.random() < 0.5]
        if flips:
            patch = torch.flip(patch, flips)
        if (self.transpose and self.patch_size[-1] == self.patch_size[-2]
                and self.rng.random() < 0.5):
            patch = patch.transpose(-1, -2)
        return patch


def parse_patch_size(patch_size: int | Sequence[int], n_spatial: int, name: str = "patch_size",
                     minimum: int = MIN_TRAIN_SIZE) -> tuple[int, ...]:
    """A size per spatial axis (of training patches, or of prediction tiles).

    Parameters
    ----------
    patch_size
        One int for every axis, or one per axis.
    n_spatial
        Number of spatial axes.
    name
        The argument's name, for the messages.
    minimum
        The smallest size allowed.

    Returns
    -------
    Tuple of ``n_spatial`` ints of at least ``minimum``.
    """
    sizes = (patch_size,) * n_spatial if np.ndim(patch_size) == 0 else tuple(patch_size)
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"{name}={patch_size!r} must be a whole number, or one per spatial "
                        f"axis ({n_spatial}).")
    if len(sizes) != n_spatial or min(sizes) < minimum:
        raise ValueError(
            f"{name}={patch_size!r} must be an int or {n_spatial} ints, each at least "
            f"{minimum}."
        )
    return tuple(int(s) for s in sizes)
