"""Noise2Self masked CNNs: train a UNet or DnCNN on noisy images alone (paper, section 5).

Each training step hides a set J of pixels of every patch (a random subset of density
``1 / mask_stride ** n_spatial``, or one grid phase), replaces them by values that carry no
information about them, and scores the network's output only on J. The network cannot see
a hidden pixel, so the loss on J is the self-supervised loss of a J-invariant function, and
its minimiser is the best denoiser (Batson & Royer 2019, section 3).

Layout: input checks and percentile normalisation, masking, the device/AMP set-up, the
training loop (:func:`train`), the fitted model with tiled prediction and save/load
(:class:`Noise2SelfModel`), and the one-call :func:`denoise_cnn`.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_choice
from .masking import neighbour_kernel
from .models import MODEL_NAMES, architecture, build_model

MASKINGS: tuple[str, ...] = ("random", "grid")
REPLACEMENTS: tuple[str, ...] = ("random", "mean")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: The smallest spatial size the trainer accepts: smaller axes leave too few pixels to learn.
MIN_TRAIN_SIZE = 4
#: Percentiles mapped to 0 and 1 by the input normalisation (as in CSBDeep/CAREamics).
PERCENTILES = (1.0, 99.8)
#: CPU budgets from which ``compile=None`` compiles (the compile time is then repaid).
CPU_COMPILE_MIN_SECONDS = 60.0
CPU_COMPILE_MIN_STEPS = 500
#: Share of the learning-rate schedule after which a plateau may stop training. Before it the
#: rate is high and the held-out loss swings from epoch to epoch: on the full camera image a
#: 900 s CPU budget stopped at 292 s on such swings (benchmarks/RESULTS.md).
EARLY_STOP_FROM = 0.5
#: Steps when neither ``steps``, ``epochs`` nor ``max_time`` is given.
DEFAULT_STEPS = 2000
#: What ``batch_size``, ``lr`` and ``ema`` of None mean, per network. Each set won on the
#: 256 x 256 camera crop with 240 s of compiled training on 2 CPU cores (benchmarks/RESULTS.md):
#: the UNet with 8 patches at 1e-2 and averaged weights reached 28.55 dB with ``augment=True``
#: (28.37 dB with the DnCNN's set), while the DnCNN 8x32 lost 0.54 dB with the UNet's set.
TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    "unet": {"batch_size": 8, "lr": 1e-2, "ema": 0.99},
    "dncnn": {"batch_size": 16, "lr": 5e-3, "ema": 0.0},
}
#: Format 2 stores every architecture option; format 1 relied on the defaults of its time.
_FORMAT_VERSION = 2
#: The UNet's widths when format 1 was written (the paper's), for files that left them out.
_FORMAT_1_UNET_CHANNELS = (32, 64, 128, 256)

ImageLike = np.ndarray | Sequence[np.ndarray]


# --------------------------------------------------------------------------- inputs


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


def _as_float(array: np.ndarray, name: str) -> np.ndarray:
    """Floats in the units of the rest of ``sc_noise2self.image`` (integers as img_as_float)."""
    if array.dtype.kind not in "uif":
        raise TypeError(f"{name} has dtype {array.dtype}; pass an integer or float image.")
    if array.dtype.kind != "f":
        from skimage.util import img_as_float

        array = img_as_float(array)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; fill or crop them first.")
    return array


def _channel_axis(channel_axis: int | None, ndim: int) -> int | None:
    if channel_axis is None:
        return None
    if not -ndim <= int(channel_axis) < ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for an image with {ndim} axes; pass "
            f"an index from {-ndim} to {ndim - 1}, or None when there are no channels."
        )
    return int(channel_axis) % ndim


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
    arrays = [np.asarray(a) for a in images] if is_list else [np.asarray(images)]
    if not arrays:
        raise ValueError("images is an empty list; pass at least one image.")
    first_ndim = arrays[0].ndim
    if n_spatial is None:
        n_spatial = first_ndim - (channel_axis is not None)
    if n_spatial not in (2, 3):
        raise ValueError(
            f"Got {n_spatial} spatial axes (array shape {arrays[0].shape}); the networks take "
            "2D images or 3D volumes. Pass n_spatial=2 for a stack of 2D images."
        )
    image_ndim = n_spatial + (channel_axis is not None)
    if not is_list and first_ndim == image_ndim + 1:
        arrays = list(arrays[0])  # a stack: images along axis 0
    layout = Layout(n_spatial, _channel_axis(channel_axis, image_ndim))
    out = []
    for index, array in enumerate(arrays):
        name = f"images[{index}]" if len(arrays) > 1 else "image"
        if array.ndim != image_ndim:
            raise ValueError(
                f"{name} has shape {array.shape}, but {n_spatial} spatial axes"
                f"{' and a channel axis' if channel_axis is not None else ''} make "
                f"{image_ndim} axes. Check n_spatial and channel_axis."
            )
        out.append(layout.to_internal(_as_float(array, name)))
    _check_consistent(out)
    return out, layout


def _check_consistent(arrays: list[np.ndarray]) -> None:
    channels = {a.shape[0] for a in arrays}
    if len(channels) > 1:
        raise ValueError(f"The images have different channel counts {sorted(channels)}.")
    for a in arrays:
        if min(a.shape[1:]) < MIN_TRAIN_SIZE:
            raise ValueError(
                f"An image has spatial shape {a.shape[1:]}; training needs at least "
                f"{MIN_TRAIN_SIZE} pixels along every spatial axis. Pass a larger image "
                "(prediction with a trained model works on any size)."
            )


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


# --------------------------------------------------------------------------- masking


@dataclass(frozen=True)
class Masker:
    """Hide pixels and replace them by values that carry no information about them.

    Parameters
    ----------
    masking
        ``"random"``: each pixel is hidden independently with probability
        ``1 / stride ** n_spatial`` (the paper's 1/25 in 2D). ``"grid"``: one random phase
        of the stride grid per sample (see :func:`~sc_noise2self.image.masking.grid_masks`).
    replacement
        ``"random"``: uniform values in [0, 1] (the normalised intensity range), as in the
        paper. ``"mean"``: the mean of the face neighbours; only with ``"grid"`` masking,
        because a random subset can hide two neighbours, and then each one's stand-in would
        leak the other's value.
    stride
        Grid spacing, at least 2.
    n_spatial
        2 or 3.
    """

    masking: str
    replacement: str
    stride: int
    n_spatial: int

    def __post_init__(self) -> None:
        check_choice(self.masking, MASKINGS, name="masking")
        check_choice(self.replacement, REPLACEMENTS, name="replacement")
        if not isinstance(self.stride, int | np.integer) or self.stride < 2:
            raise ValueError(f"mask_stride={self.stride!r} must be an integer of at least 2.")
        if self.masking == "random" and self.replacement == "mean":
            raise ValueError(
                "replacement='mean' is not J-invariant with masking='random' (two hidden "
                "neighbours would see each other through their stand-ins); use "
                "masking='grid' with it, or replacement='random'."
            )

    @property
    def density(self) -> float:
        """Expected fraction of hidden pixels."""
        return float(self.stride) ** -self.n_spatial

    def sample(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A boolean mask ``(batch, 1, *spatial)`` of hidden pixels (channels hidden together).

        Parameters
        ----------
        x
            The batch ``(batch, channels, *spatial)``.
        generator
            Seeded generator on ``x``'s device.

        Returns
        -------
        The mask.
        """
        shape = (x.shape[0], 1, *x.shape[2:])
        if self.masking == "random":
            return torch.rand(shape, generator=generator, device=x.device) < self.density
        offsets = torch.randint(
            self.stride, (x.shape[0], self.n_spatial), generator=generator, device=x.device
        )
        return self.phase_mask(shape, offsets)

    def phase_mask(self, shape: tuple[int, ...], offsets: torch.Tensor) -> torch.Tensor:
        """Mask of the grid phase ``offsets[b]`` for every sample ``b``.

        Parameters
        ----------
        shape
            ``(batch, 1, *spatial)``.
        offsets
            ``(batch, n_spatial)`` integers in ``[0, stride)``.

        Returns
        -------
        Boolean tensor of ``shape``.
        """
        mask = torch.ones(shape, dtype=torch.bool, device=offsets.device)
        for axis, size in enumerate(shape[2:]):
            coords = torch.arange(size, device=offsets.device) % self.stride
            view = [shape[0]] + [1] * (len(shape) - 1)
            view[2 + axis] = size
            hit = coords.view(1, size) == offsets[:, axis : axis + 1]
            mask = mask & hit.view(view)
        return mask

    def replace(
        self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """``x`` with the hidden pixels replaced (a new tensor; differentiable in ``x``).

        Parameters
        ----------
        x
            ``(batch, channels, *spatial)``.
        mask
            From :meth:`sample` or :meth:`phase_mask`.
        generator
            Seeded generator on ``x``'s device (used by ``"random"``).

        Returns
        -------
        The masked input.
        """
        if self.replacement == "random":
            values = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        else:
            values = self._neighbour_mean(x)
        return torch.where(mask, values, x)

    def _neighbour_mean(self, x: torch.Tensor) -> torch.Tensor:
        kernel = torch.as_tensor(
            neighbour_kernel(self.n_spatial, "mean"), dtype=x.dtype, device=x.device
        )
        channels = x.shape[1]
        weight = kernel.expand(channels, 1, *kernel.shape).contiguous()
        padded = _pad(x, [(1, 1)] * self.n_spatial)
        conv = F.conv2d if self.n_spatial == 2 else F.conv3d
        return conv(padded, weight, groups=channels)


def masked_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels only.

    Parameters
    ----------
    output, target
        ``(batch, channels, *spatial)``.
    mask
        ``(batch, 1, *spatial)`` boolean mask of hidden pixels.

    Returns
    -------
    Scalar loss (float32 even under AMP).
    """
    weight = mask.to(torch.float32)
    squared = (output.float() - target.float()) ** 2 * weight
    count = weight.sum() * output.shape[1]
    return squared.sum() / count.clamp_min(1.0)


# --------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to train on.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"`` or a :class:`torch.device`.

    Returns
    -------
    The device; raises ``RuntimeError`` when the requested accelerator is not available.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        known = ", ".join(repr(d) for d in DEVICES)
        raise ValueError(f"Unknown device={device!r}. Choose one of: {known}.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but CUDA is not available (torch "
            f"{torch.__version__}, built with CUDA {torch.version.cuda}). Pass device='cpu', "
            "or device='auto' to use the best device present."
        )
    if resolved.type == "mps" and not _mps_available():
        raise RuntimeError(f"device={device!r} was requested but Apple MPS is not available.")
    return resolved


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_amp(device: torch.device, amp: bool | str | None = None) -> torch.dtype | None:
    """The autocast dtype for mixed precision, or None for full float32.

    Parameters
    ----------
    device
        The training device.
    amp
        None: on for CUDA, off elsewhere. True: on (ignored with a warning off CUDA, where
        low-precision convolutions are slower). False: off. ``"bf16"`` or ``"fp16"``: that
        dtype on CUDA.

    Returns
    -------
    ``torch.bfloat16`` when the GPU supports it, else ``torch.float16``; None when off.
    """
    if amp not in (None, True, False, "bf16", "fp16"):
        raise ValueError(f"amp={amp!r} must be None, True, False, 'bf16' or 'fp16'.")
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    if device.type != "cuda":
        warnings.warn(
            f"amp={amp!r} is ignored on device {device.type!r}: mixed precision is used on CUDA "
            "only, and training runs in float32.",
            stacklevel=3,
        )
        return None
    if amp == "fp16" or (amp != "bf16" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


@contextlib.contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on CPU for the duration (CUDA would need a cuBLAS setting)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


# --------------------------------------------------------------------------- network passes


def _pad(x: torch.Tensor, pads: list[tuple[int, int]]) -> torch.Tensor:
    """Mirror-pad the spatial axes by ``pads[axis] = (before, after)``.

    Reflection needs a pad smaller than the axis, so tiny axes are reflected repeatedly.
    """
    for axis, (before, after) in enumerate(pads):
        dim = 2 + axis
        while before or after:
            size = x.shape[dim]
            step_b, step_a = min(before, size - 1), min(after, size - 1)
            if size == 1:  # nothing to reflect: repeat the single value
                x = torch.cat([x] * (1 + before + after), dim=dim)
                break
            spec = [0, 0] * (x.ndim - 2)
            position = 2 * (x.ndim - 1 - dim)
            spec[position : position + 2] = [step_b, step_a]
            x = _reflect(x, spec)
            before, after = before - step_b, after - step_a
    return x


def _reflect(x: torch.Tensor, spec: list[int]) -> torch.Tensor:
    # F.pad's reflect mode wants all spatial axes padded at once (3 or 4 numbers per axis
    # pair); pad one axis with zero pads on the others.
    return F.pad(x, spec, mode="reflect")


def padded_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``net`` on ``x`` of any spatial size: mirror-pad to the net's size multiple, crop.

    Parameters
    ----------
    net
        A :class:`~sc_noise2self.image.models.UNet` or
        :class:`~sc_noise2self.image.models.DnCNN` (or any module with ``size_multiple``).
    x
        ``(batch, channels, *spatial)``.

    Returns
    -------
    The output, cropped to ``x``'s spatial size.
    """
    multiple = getattr(_unwrap(net), "size_multiple", 1)
    sizes = x.shape[2:]
    pads = [(0, -size % multiple) for size in sizes]
    if any(after for _, after in pads):
        out = net(_pad(x, pads))
        return out[(..., *(slice(0, size) for size in sizes))]
    return net(x)


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return getattr(net, "_orig_mod", net)  # torch.compile's wrapper keeps the module here


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------- data


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
    """

    images: list[torch.Tensor]
    patch_size: tuple[int, ...]
    rng: np.random.Generator
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
        if self.patch_size[-1] == self.patch_size[-2] and self.rng.random() < 0.5:
            patch = patch.transpose(-1, -2)
        return patch


def parse_patch_size(patch_size: int | Sequence[int], n_spatial: int) -> tuple[int, ...]:
    """A patch size per spatial axis.

    Parameters
    ----------
    patch_size
        One int for every axis, or one per axis.
    n_spatial
        Number of spatial axes.

    Returns
    -------
    Tuple of ``n_spatial`` positive ints.
    """
    sizes = (patch_size,) * n_spatial if np.ndim(patch_size) == 0 else tuple(patch_size)
    if len(sizes) != n_spatial or min(int(s) for s in sizes) < MIN_TRAIN_SIZE:
        raise ValueError(
            f"patch_size={patch_size!r} must be an int or {n_spatial} ints, each at least "
            f"{MIN_TRAIN_SIZE}."
        )
    return tuple(int(s) for s in sizes)


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored with the model.

    Parameters
    ----------
    model, model_kwargs
        Network name and architecture options.
    steps, max_time
        Budget: optimiser steps (None: no step limit) and wall-clock seconds (None: none).
    batch_size, patch_size, lr
        Patches per step, patch size per axis, peak learning rate of Adam.
    masking, replacement, mask_stride
        See :class:`Masker`.
    val_fraction, steps_per_epoch, patience
        Validation: share held out, steps between validations, epochs without improvement
        before stopping.
    random_state
        Seed of the network's initialisation, the patches and the masks.
    ema
        Decay of the exponential moving average of the weights that is validated, kept and
        returned; 0 keeps the raw weights.
    """

    model: str
    model_kwargs: dict
    steps: int | None
    max_time: float | None
    batch_size: int
    patch_size: tuple[int, ...]
    lr: float
    masking: str
    replacement: str
    mask_stride: int
    val_fraction: float
    steps_per_epoch: int
    patience: int
    random_state: int
    ema: float = 0.0  # a default, so that models saved before it load

    def progress(self, step: int, elapsed: float) -> float:
        """How far training is, in [0, 1], by steps or by time, whichever is further.

        Parameters
        ----------
        step
            Steps done.
        elapsed
            Seconds since training started.

        Returns
        -------
        The fraction; the learning-rate schedule follows it, so a time budget still ends
        with a low learning rate.
        """
        by_steps = step / self.steps if self.steps else 0.0
        by_time = elapsed / self.max_time if self.max_time else 0.0
        return min(1.0, max(by_steps, by_time))

    def learning_rate(self, progress: float) -> float:
        """Linear warm-up over the first 5%, then cosine decay to 1% of ``lr``.

        Parameters
        ----------
        progress
            From :meth:`progress`.

        Returns
        -------
        The learning rate.
        """
        warmup = 0.05
        if progress < warmup:
            return self.lr * (0.1 + 0.9 * progress / warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))
        return self.lr * (0.01 + 0.99 * cosine)


def _budget(steps: int | None, epochs: int | None, max_time: float | None, per_epoch: int):
    for name, value in (("steps", steps), ("epochs", epochs), ("max_time", max_time)):
        if value is not None and not value > 0:
            raise ValueError(f"{name}={value!r} must be positive (or None).")
    if steps is not None and epochs is not None:
        raise ValueError("Pass steps or epochs, not both (an epoch is steps_per_epoch steps).")
    if epochs is not None:
        steps = int(epochs) * per_epoch
    if steps is None and max_time is None:
        steps = DEFAULT_STEPS
    return (None if steps is None else int(steps)), max_time


def _should_compile(device: torch.device, steps: int | None, max_time: float | None) -> bool:
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    # Training ends at whichever budget comes first, so both must be long (or absent).
    enough_steps = steps is None or steps >= CPU_COMPILE_MIN_STEPS
    enough_time = max_time is None or max_time >= CPU_COMPILE_MIN_SECONDS
    return enough_steps and enough_time


class _Trainer:
    """One training run: the loop, validation, early stopping and the best checkpoint."""

    def __init__(self, net, config: TrainConfig, masker: Masker, device, amp_dtype, compile_):
        self.net, self.config, self.masker, self.device = net, config, masker, device
        self.amp_dtype = amp_dtype
        self.forward = torch.compile(net) if compile_ else net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        # fp16 needs loss scaling against underflow; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.generator = torch.Generator(device=device).manual_seed(config.random_state)
        self.history: dict[str, Any] = {
            key: [] for key in ("epoch", "step", "time", "lr", "train_loss", "val_loss")
        }
        self.best: tuple[float, dict] | None = None
        # The weights that are validated and kept: an average of the live ones, or them.
        self.kept = copy.deepcopy(net) if config.ema > 0 else net
        self.steps_done = 0
        self.bad_epochs = 0  # validations in a row without improvement, once they count

    def step(self, batch: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mask = self.masker.sample(batch, self.generator)
        masked = self.masker.replace(batch, mask, self.generator)
        with _autocast(self.device, self.amp_dtype):
            output = self._forward(masked)
        loss = masked_loss(output, batch, mask)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps_done += 1
        if self.kept is not self.net:
            self._average_weights()
        # A tensor, not a float: reading it would wait for the GPU at every step.
        return loss.detach()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return padded_forward(self.forward, x)
        except Exception as error:  # compilation runs, and fails, at the first call
            if self.forward is self.net:
                raise
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); training "
                          "goes on without it (pass compile=False to skip it).", stacklevel=3)
            self.forward = self.net
            return padded_forward(self.net, x)

    @torch.no_grad()
    def _average_weights(self) -> None:
        # The warm-up (1 + n) / (10 + n) keeps the first, random weights from lingering.
        n = self.steps_done
        weight = 1.0 - min(self.config.ema, (1.0 + n) / (10.0 + n))
        for averaged, live in zip(self.kept.parameters(), self.net.parameters(), strict=True):
            averaged.lerp_(live, weight)
        for averaged, live in zip(self.kept.buffers(), self.net.buffers(), strict=True):
            # Batch-norm statistics are averaged like the weights they normalise (copying the
            # live ones pairs averaged weights with the latest batches' statistics).
            if averaged.is_floating_point():
                averaged.lerp_(live, weight)
            else:
                averaged.copy_(live)

    @torch.no_grad()
    def validate(self, val_set: list[torch.Tensor]) -> float:
        self.kept.eval()
        # Reseeded: every epoch sees the same stand-in values, so epochs compare fairly.
        generator = torch.Generator(device=self.device).manual_seed(self.config.random_state + 1)
        total, count = 0.0, 0.0
        for target in val_set:
            for masked, mask in _every_phase(target, self.masker, generator):
                with _autocast(self.device, self.amp_dtype):
                    output = padded_forward(self.kept, masked)
                n = float(mask.sum()) * target.shape[1]
                total += float(masked_loss(output, target, mask)) * n
                count += n
        self.net.train()
        return total / max(count, 1.0)

    def record(self, epoch, step, elapsed, lr, train_losses, val_loss) -> None:
        train_loss = float(torch.stack(train_losses).float().mean())
        values = (epoch, step, elapsed, lr, train_loss, val_loss)
        for key, value in zip(
            ("epoch", "step", "time", "lr", "train_loss", "val_loss"), values, strict=True
        ):
            self.history[key].append(value)

    def improved(self, val_loss: float) -> bool:
        """Keep the weights when the loss beats the best by a relative 1e-4."""
        if self.best is not None and not val_loss < self.best[0] * (1 - 1e-4):
            return False
        state = {k: v.detach().to("cpu", copy=True) for k, v in self.kept.state_dict().items()}
        self.best = (val_loss, state)
        return True


def _augmented(one_pass, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``one_pass`` over the flips of every spatial axis (2D: and the transpose)."""
    spatial = list(range(2, x.ndim))
    transposes = (False, True) if len(spatial) == 2 else (False,)
    subsets = itertools.chain.from_iterable(
        itertools.combinations(spatial, r) for r in range(len(spatial) + 1)
    )
    total, count = torch.zeros_like(x, dtype=torch.float32), 0
    for dims in subsets:
        for transpose in transposes:
            moved = torch.flip(x, dims) if dims else x
            moved = moved.transpose(-1, -2) if transpose else moved
            out = one_pass(moved).float()
            out = out.transpose(-1, -2) if transpose else out
            total += torch.flip(out, dims) if dims else out
            count += 1
    return total / count


def _training_defaults(model: str, **given: float | None) -> tuple[float, ...]:
    """``batch_size``, ``lr`` and ``ema``: the given values, None filled per network."""
    defaults = TRAINING_DEFAULTS[model]
    return tuple(defaults[name] if value is None else value for name, value in given.items())


def _check_ema(ema: float) -> float:
    if not 0.0 <= float(ema) < 1.0:
        raise ValueError(f"ema={ema!r} must be in [0, 1): a decay such as 0.999, or 0 for off.")
    return float(ema)


def _every_phase(target: torch.Tensor, masker: Masker, generator: torch.Generator):
    """Masked copies of a held-out band, one per grid phase: every pixel is scored once.

    One random mask of density 1/25 would score a 51 x 512 band on about 1000 pixels, too
    few to tell epochs apart (the loss is mostly noise variance); all phases score all.
    """
    shape = (1, 1, *target.shape[2:])
    for offsets in itertools.product(range(masker.stride), repeat=masker.n_spatial):
        mask = masker.phase_mask(shape, torch.tensor([offsets], device=target.device))
        yield masker.replace(target, mask, generator), mask


def train(
    images: ImageLike,
    model: str = "unet",
    *,
    steps: int | None = None,
    epochs: int | None = None,
    max_time: float | None = None,
    batch_size: int | None = None,
    patch_size: int | Sequence[int] = 64,
    lr: float | None = None,
    masking: str = "grid",
    replacement: str | None = None,
    mask_stride: int | None = None,
    val_fraction: float = 0.1,
    steps_per_epoch: int = 50,
    patience: int = 20,
    channel_axis: int | None = None,
    n_spatial: int | None = None,
    model_kwargs: dict | None = None,
    device: str | torch.device = "auto",
    amp: bool | str | None = None,
    compile: bool | None = None,
    ema: float | None = None,
    random_state: int = 0,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    callback: Callable[[Noise2SelfModel], bool | None] | None = None,
) -> Noise2SelfModel:
    """Train a masked CNN on noisy images alone with the Noise2Self loss.

    Parameters
    ----------
    images
        One 2D image or 3D volume, a stack (with ``n_spatial``, images along axis 0), or a
        list of differently sized arrays; integer or float, never modified.
    model
        ``"unet"`` or ``"dncnn"``.
    steps, epochs, max_time
        Budget: optimiser steps, or epochs of ``steps_per_epoch`` steps, and/or a wall-clock
        limit in seconds; training ends at whichever comes first. With none of them,
        :data:`DEFAULT_STEPS` steps. The learning rate follows the step or time progress.
    batch_size, patch_size
        Random patches per step and their size (clipped to the smallest image).
        ``batch_size`` None takes the network's value in :data:`TRAINING_DEFAULTS` (8 for
        the UNet, 16 for the DnCNN).
    lr
        Peak learning rate of Adam (linear warm-up, cosine decay); None takes the
        network's value in :data:`TRAINING_DEFAULTS` (1e-2 for the UNet, 5e-3 for the
        DnCNN).
    masking, replacement, mask_stride
        Which pixels are hidden and what replaces them; see :class:`Masker`. ``replacement``
        None means ``"mean"`` for grid masking and ``"random"`` for random masking;
        ``mask_stride`` None means 4 for grid masking and 5 (density 1/25, the paper's) for
        random masking. The grid with neighbour means is the default because it trained
        better at equal steps: +1.2 dB on camera after 800 steps, +0.6 dB after 3000
        (benchmarks/RESULTS.md). ``masking="random"`` is the paper's section 5 recipe.
    val_fraction
        Share of every image (a band along its longest axis) held out to score the
        self-supervised loss after each epoch; 0 turns validation and early stopping off.
        Every grid phase of the band is scored (``mask_stride ** n_spatial`` passes), with
        the stand-ins of ``replacement``, whichever ``masking`` trains.
    steps_per_epoch, patience
        Steps between validations; stop after ``patience`` epochs without improvement,
        counted from the second half of the learning-rate schedule on
        (:data:`EARLY_STOP_FROM`), when the decaying rate lets the held-out loss settle.
        A budget shorter than ``2 * patience`` epochs (the default 2000 steps is 40) thus
        always runs to its end.
    channel_axis
        Channel axis of one image, or None.
    n_spatial
        2 or 3; None means every non-channel axis of one array is spatial.
    model_kwargs
        Architecture options, e.g. ``{"channels": (16, 32, 64)}`` for the UNet or
        ``{"depth": 8, "features": 64}`` for the DnCNN.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    amp
        Mixed precision; see :func:`resolve_amp` (on by default on CUDA only).
    compile
        Compile the network with :func:`torch.compile`. None: on CUDA always, and on the CPU
        when the budget is long enough to repay the compile time (``max_time`` of at least
        :data:`CPU_COMPILE_MIN_SECONDS` or ``steps`` of at least
        :data:`CPU_COMPILE_MIN_STEPS`). On 2 CPU cores, compiling took about 20 s and then
        ran DnCNN 8x32 steps 4.6 times faster (benchmarks/RESULTS.md). If compilation fails
        (e.g. no C++ compiler), training warns and goes on without it.
    ema
        Keep an exponential moving average of the weights with this decay (e.g. 0.999, with
        a shorter warm-up average early on) and validate, keep and return the averaged
        weights; 0 turns it off; None takes the network's value in
        :data:`TRAINING_DEFAULTS` (0.99 for the UNet, off for the DnCNN). The
        self-supervised gradient is noisy (the loss is mostly noise variance), and averaging
        smooths it out.
    random_state
        Seed of the initialisation, patches and masks; on CPU, the same seed and a step
        budget give bit-identical weights.
    progress
        Show a tqdm progress bar.
    checkpoint_dir
        Folder where the best model so far is saved as ``best.pt``.
    callback
        Called after every epoch with a :class:`Noise2SelfModel` of the weights just
        validated (the averaged ones when ``ema`` is on) and the ``.history`` so far, e.g. to
        log or to score predictions against a clean reference. Returning True stops training
        (``history["stopped"] == "callback"``); the best weights are still the ones returned.
        It must not change the weights; its time counts against ``max_time``.

    Returns
    -------
    The trained :class:`Noise2SelfModel`, holding the weights with the lowest validation
    loss (the last weights when ``val_fraction=0``), and ``.history``.
    """
    arrays, layout = prepare_images(images, channel_axis, n_spatial)
    check_choice(model, MODEL_NAMES, name="model")
    batch_size, lr, ema = _training_defaults(model, batch_size=batch_size, lr=lr, ema=ema)
    torch_device = resolve_device(device)
    amp_dtype = resolve_amp(torch_device, amp)
    steps, max_time = _budget(steps, epochs, max_time, steps_per_epoch)
    check_choice(masking, MASKINGS, name="masking")
    if replacement is None:
        replacement = "mean" if masking == "grid" else "random"
    if mask_stride is None:
        mask_stride = 4 if masking == "grid" else 5
    masker = Masker(masking, replacement, mask_stride, layout.n_spatial)
    config = TrainConfig(
        model, architecture(model, model_kwargs), steps, max_time, int(batch_size),
        parse_patch_size(patch_size, layout.n_spatial), float(lr), masking, replacement,
        int(mask_stride), float(val_fraction), int(steps_per_epoch), int(patience),
        int(random_state), _check_ema(ema),
    )  # fmt: skip
    normalisation = Normalisation.fit(arrays)
    train_parts, val_parts = split_validation(
        [normalisation.forward(a) for a in arrays], val_fraction
    )
    with torch.random.fork_rng(devices=[]), _deterministic(torch_device):
        torch.manual_seed(config.random_state)  # forked: the caller's global RNG is untouched
        net = build_model(
            model, in_channels=arrays[0].shape[0], out_channels=arrays[0].shape[0],
            n_spatial=layout.n_spatial, **config.model_kwargs,
        ).to(torch_device)  # fmt: skip
        fitted = Noise2SelfModel(net, layout, normalisation, config)
        compile_ = _should_compile(torch_device, steps, max_time) if compile is None else compile
        trainer = _Trainer(net, config, masker, torch_device, amp_dtype, compile_)
        sampler = PatchSampler(
            [torch.as_tensor(p, device=torch_device) for p in train_parts],
            config.patch_size, np.random.default_rng(config.random_state),
        )  # fmt: skip
        val_set = [torch.as_tensor(part, device=torch_device)[None] for part in val_parts]
        _run(trainer, sampler, val_set, fitted, progress, checkpoint_dir, callback)
    return fitted


def _run(trainer: _Trainer, sampler, val_set, fitted: Noise2SelfModel, progress, checkpoint_dir,
         callback=None):
    """The loop: steps until the budget ends, the held-out loss plateaus or the callback stops."""
    from tqdm.auto import tqdm

    config = trainer.config
    bar = tqdm(total=config.steps, disable=not progress, desc=f"Noise2Self {config.model}")
    start, step, epoch, losses = time.perf_counter(), 0, 0, []
    stop = None
    trainer.net.train()
    while stop is None:
        elapsed = time.perf_counter() - start
        stop = _budget_spent(config, step, elapsed)
        if stop is None:
            lr = config.learning_rate(config.progress(step, elapsed))
            losses.append(trainer.step(sampler.batch(config.batch_size), lr))
            step += 1
            bar.update()
        if losses and (step % config.steps_per_epoch == 0 or stop is not None):
            epoch += 1
            val_loss = trainer.validate(val_set) if val_set else float("nan")
            trainer.record(epoch, step, time.perf_counter() - start, lr, losses, val_loss)
            bar.set_postfix(loss=f"{trainer.history['train_loss'][-1]:.4g}", val=f"{val_loss:.4g}")
            losses = []
            late = config.progress(step, elapsed) >= EARLY_STOP_FROM
            if val_set and _keep_or_count(trainer, fitted, val_loss, late, checkpoint_dir):
                stop = stop or "plateau"
            if callback is not None and callback(_kept_model(trainer, fitted)):
                stop = stop or "callback"
            trainer.net.train()  # the callback may have predicted, which sets eval mode
    bar.close()
    _finish(trainer, fitted, stop)


def _kept_model(trainer: _Trainer, fitted: Noise2SelfModel) -> Noise2SelfModel:
    """The weights just validated (the averaged copy when ema is on), ready to predict."""
    return Noise2SelfModel(trainer.kept, fitted.layout, fitted.normalisation, fitted.config,
                           trainer.history)  # fmt: skip


def _keep_or_count(trainer, fitted, val_loss: float, late: bool, checkpoint_dir) -> bool:
    """Keep (and save) improved weights, else count a plateau epoch once ``late``.

    Returns
    -------
    True when ``patience`` plateau epochs have passed in a row.
    """
    if trainer.improved(val_loss):
        trainer.bad_epochs = 0
        fitted.history = trainer.history
        if checkpoint_dir is not None:
            _kept_model(trainer, fitted).save(Path(checkpoint_dir) / "best.pt")
    elif late:
        trainer.bad_epochs += 1
    return trainer.bad_epochs >= trainer.config.patience


def _budget_spent(config: TrainConfig, step: int, elapsed: float) -> str | None:
    if config.steps is not None and step >= config.steps:
        return "steps"
    if config.max_time is not None and elapsed >= config.max_time:
        return "max_time"
    return None


def _finish(trainer: _Trainer, fitted: Noise2SelfModel, stop: str) -> None:
    """Restore the best weights and complete the history."""
    history = trainer.history
    if trainer.best is not None:
        trainer.net.load_state_dict(trainer.best[1])
        history["best_epoch"] = history["epoch"][int(np.nanargmin(history["val_loss"]))]
    else:
        trainer.net.load_state_dict(trainer.kept.state_dict())  # no validation: the last
        history["best_epoch"] = history["epoch"][-1] if history["epoch"] else 0
    history["stopped"] = stop
    trainer.net.eval()
    fitted.history = history


# --------------------------------------------------------------------------- the model


class Noise2SelfModel:
    """A trained Noise2Self network with its normalisation, ready to denoise.

    Parameters
    ----------
    net
        The network (:class:`~sc_noise2self.image.models.UNet` or
        :class:`~sc_noise2self.image.models.DnCNN`).
    layout
        How one image's axes map to ``(channels, *spatial)``.
    normalisation
        The percentile normalisation fitted on the training images; prediction uses the
        same one, so outputs are in the training images' units.
    config
        The training settings.
    history
        Per-epoch ``epoch``, ``step``, ``time``, ``lr``, ``train_loss`` and ``val_loss``
        lists, plus ``best_epoch`` and ``stopped`` (``"steps"``, ``"max_time"`` or
        ``"plateau"``).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        layout: Layout,
        normalisation: Normalisation,
        config: TrainConfig,
        history: dict | None = None,
    ) -> None:
        self.net, self.layout, self.normalisation, self.config = net, layout, normalisation, config
        self.history: dict[str, Any] = history if history is not None else {}

    @property
    def device(self) -> torch.device:
        """The device holding the weights."""
        return next(self.net.parameters()).device

    @property
    def n_channels(self) -> int:
        """Channels the network takes and returns."""
        return len(self.normalisation.low)

    def __repr__(self) -> str:
        return (
            f"Noise2SelfModel(model={self.config.model!r}, n_spatial={self.layout.n_spatial}, "
            f"channels={self.n_channels}, epochs={len(self.history.get('epoch', []))}, "
            f"device={self.device.type!r})"
        )

    def to(self, device: str | torch.device) -> Noise2SelfModel:
        """Move the weights to ``device`` (see :func:`resolve_device`).

        Parameters
        ----------
        device
            Target device.

        Returns
        -------
        self.
        """
        self.net.to(resolve_device(device))
        return self

    def predict(
        self,
        image: ImageLike,
        *,
        invariant: bool = False,
        augment: bool = False,
        tile_size: int | Sequence[int] | None = None,
        tile_overlap: int = 32,
        batch_size: int = 4,
        amp: bool | str | None = False,
        random_state: int = 0,
    ) -> np.ndarray | list[np.ndarray]:
        """Denoise an image of any size with the trained network.

        Parameters
        ----------
        image
            One image laid out like a training image (same ``channel_axis``), a stack of
            them along axis 0, or a list; integer or float, never modified.
        invariant
            False: one direct pass, which the paper found about 0.5 dB better. True: the
            J-invariant prediction, one pass per grid phase (``mask_stride ** n_spatial``),
            each pixel predicted with itself hidden as in training.
        augment
            Average the predictions of the 8 flipped (2D: and transposed) copies of the
            image, each mapped back: 8 times the passes, a smoother estimate. With
            ``invariant=True`` every copy is itself J-invariant, and so is the average.
        tile_size
            Predict tiles of this size (one int or one per axis) and blend them where they
            overlap, to bound memory; None predicts the whole image at once.
        tile_overlap
            Pixels shared by neighbouring tiles (at most half a tile); blended with linear
            ramps.
        batch_size
            Tiles per forward pass.
        amp
            Mixed precision for the passes (see :func:`resolve_amp`); off by default.
        random_state
            Seed of the stand-in values of ``invariant=True`` with random replacement.

        Returns
        -------
        Float array(s) of the input's shape, in the training images' units.
        """
        options = dict(invariant=invariant, augment=augment, tile_size=tile_size,
                       tile_overlap=tile_overlap, batch_size=batch_size, amp=amp,
                       random_state=random_state)  # fmt: skip
        if isinstance(image, list | tuple):
            return [self.predict(one, **options) for one in image]
        array = np.asarray(image)
        if array.ndim == self.layout.image_ndim + 1:
            return np.stack([self.predict(one, **options) for one in array])
        floats = self._check_image(array)
        x = torch.as_tensor(
            self.normalisation.forward(self.layout.to_internal(floats)), device=self.device
        )[None]
        tiler = Tiler(self.net, tile_size, tile_overlap, batch_size, resolve_amp(self.device, amp))
        self.net.eval()

        def one_pass(inputs: torch.Tensor) -> torch.Tensor:
            return self._invariant(inputs, tiler, random_state) if invariant else tiler(inputs)

        with torch.no_grad():
            out = _augmented(one_pass, x) if augment else one_pass(x)
        result = self.normalisation.inverse(out[0].float().cpu().numpy())
        return self.layout.to_user(result).astype(np.result_type(floats.dtype, np.float32))

    def _check_image(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != self.layout.image_ndim:
            raise ValueError(
                f"image has shape {array.shape}; this model takes images of "
                f"{self.layout.image_ndim} axes ({self.layout.n_spatial} spatial, channel_axis="
                f"{self.layout.channel_axis}), or a stack of them along axis 0."
            )
        floats = _as_float(array, "image")
        channels = 1 if self.layout.channel_axis is None else array.shape[self.layout.channel_axis]
        if channels != self.n_channels:
            raise ValueError(f"image has {channels} channels; the model was trained on "
                             f"{self.n_channels}.")  # fmt: skip
        return floats

    def _masker(self) -> Masker:
        c = self.config
        return Masker(c.masking, c.replacement, c.mask_stride, self.layout.n_spatial)

    def _invariant(self, x: torch.Tensor, tiler: Tiler, random_state: int) -> torch.Tensor:
        """One pass per grid phase, each with that phase hidden; keep each phase's output."""
        masker = self._masker()
        generator = torch.Generator(device=x.device).manual_seed(random_state)
        shape = (1, 1, *x.shape[2:])
        out = torch.zeros_like(x)
        for offsets in itertools.product(range(masker.stride), repeat=masker.n_spatial):
            mask = masker.phase_mask(shape, torch.tensor([offsets], device=x.device))
            predicted = tiler(masker.replace(x, mask, generator))
            out = torch.where(mask, predicted, out)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the weights, architecture, normalisation, settings and history.

        Parameters
        ----------
        path
            File to write (parent folders are created); ``.pt`` by convention.

        Returns
        -------
        The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {**vars(self.config), "patch_size": list(self.config.patch_size)}
        payload = {
            "format_version": _FORMAT_VERSION,
            "layout": vars(self.layout),
            "normalisation": {"low": list(self.normalisation.low),
                              "high": list(self.normalisation.high)},
            "config": config,
            "history": self.history,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }  # fmt: skip
        torch.save(payload, path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "auto") -> Noise2SelfModel:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path
            The file.
        device
            Where to put the weights (see :func:`resolve_device`).

        Returns
        -------
        The model, in evaluation mode.
        """
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        version = payload.get("format_version")
        if version not in (1, _FORMAT_VERSION):
            raise ValueError(f"{path} is not a Noise2SelfModel file (formats 1 to "
                             f"{_FORMAT_VERSION}).")  # fmt: skip
        config = TrainConfig(**{**payload["config"],
                                "patch_size": tuple(payload["config"]["patch_size"])})  # fmt: skip
        if version == 1 and config.model == "unet":
            # Only the widths changed since format 1 was last written (the second session's
            # files); earlier format-1 files with instance norm or a residual DnCNN have the
            # same weight names and are not told apart.
            config.model_kwargs = {"channels": _FORMAT_1_UNET_CHANNELS, **config.model_kwargs}
        # Complete, so that saving this model again writes every option (format 2).
        config.model_kwargs = architecture(config.model, config.model_kwargs)
        layout = Layout(**payload["layout"])
        normalisation = Normalisation(
            tuple(payload["normalisation"]["low"]), tuple(payload["normalisation"]["high"])
        )
        net = build_model(config.model, in_channels=len(normalisation.low),
                          out_channels=len(normalisation.low), n_spatial=layout.n_spatial,
                          **config.model_kwargs)  # fmt: skip
        net.load_state_dict(payload["state_dict"])
        net.eval()
        model = cls(net, layout, normalisation, config, payload["history"])
        return model.to(device)


class Tiler:
    """Run a network over tiles of an image and blend the overlaps with linear ramps.

    Parameters
    ----------
    net
        The network, in evaluation mode.
    tile_size
        One int or one per spatial axis; None means the whole image in one pass.
    overlap
        Pixels shared by neighbouring tiles (clipped to half a tile).
    batch_size
        Tiles per pass.
    amp_dtype
        Autocast dtype, or None.
    """

    def __init__(self, net, tile_size, overlap: int, batch_size: int, amp_dtype=None) -> None:
        if int(batch_size) < 1 or int(overlap) < 0:
            raise ValueError(
                f"batch_size={batch_size} must be >= 1 and tile_overlap={overlap} >= 0."
            )
        self.net, self.tile_size, self.overlap = net, tile_size, int(overlap)
        self.batch_size, self.amp_dtype = int(batch_size), amp_dtype

    def _tiles(self, sizes: tuple[int, ...]) -> tuple[tuple[int, ...], list[list[int]], list[int]]:
        """Tile size, tile starts and overlap per axis of an image padded to the multiple.

        Starts and steps are multiples of the network's size multiple, so every tile sees the
        same down-sampling grid as the whole image: this is what makes tiles agree.
        """
        multiple = getattr(_unwrap(self.net), "size_multiple", 1)
        if self.tile_size is None:
            return sizes, [[0]] * len(sizes), [0] * len(sizes)
        requested = parse_patch_size(self.tile_size, len(sizes))
        tiles = tuple(
            min(-(-t // multiple) * multiple, s) for t, s in zip(requested, sizes, strict=True)
        )
        overlaps, starts = [], []
        for size, tile in zip(sizes, tiles, strict=True):
            step = max(multiple, (tile - min(self.overlap, tile // 2)) // multiple * multiple)
            axis_starts = list(range(0, size - tile + 1, step))
            if axis_starts[-1] != size - tile:
                axis_starts.append(size - tile)
            starts.append(axis_starts)
            overlaps.append(tile - step)
        return tiles, starts, overlaps

    def _window(self, tiles, overlaps, device) -> torch.Tensor:
        window = torch.ones((1, 1, *tiles), device=device)
        for axis, (tile, overlap) in enumerate(zip(tiles, overlaps, strict=True)):
            ramp = torch.ones(tile, device=device)
            if overlap:
                edge = torch.arange(1, overlap + 1, device=device) / (overlap + 1)
                ramp[:overlap], ramp[tile - overlap :] = edge, edge.flip(0)
            shape = [1] * window.ndim
            shape[2 + axis] = tile
            window = window * ramp.view(shape)
        return window

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Predict ``x`` ``(1, channels, *spatial)`` tile by tile.

        Parameters
        ----------
        x
            Normalised image on the network's device.

        Returns
        -------
        The blended float32 output, of ``x``'s shape.
        """
        original = tuple(x.shape[2:])
        multiple = getattr(_unwrap(self.net), "size_multiple", 1)
        x = _pad(x, [(0, -size % multiple) for size in original])
        sizes = tuple(x.shape[2:])
        tiles, starts, overlaps = self._tiles(sizes)
        window = self._window(tiles, overlaps, x.device)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        weight = torch.zeros((1, 1, *sizes), dtype=torch.float32, device=x.device)
        corners = list(itertools.product(*starts))
        for first in range(0, len(corners), self.batch_size):
            chunk = corners[first : first + self.batch_size]
            crops = [
                (..., *(slice(c, c + t) for c, t in zip(corner, tiles, strict=True)))
                for corner in chunk
            ]
            with _autocast(x.device, self.amp_dtype):
                predicted = padded_forward(self.net, torch.cat([x[crop] for crop in crops]))
            for crop, tile_out in zip(crops, predicted.float(), strict=True):
                out[crop] += tile_out * window[0]
                weight[crop] += window[0]
        return (out / weight)[(..., *(slice(0, size) for size in original))]


def denoise_cnn(
    image: np.ndarray,
    model: str = "unet",
    *,
    channel_axis: int | None = None,
    invariant: bool = False,
    augment: bool = True,
    tile_size: int | Sequence[int] | None = None,
    return_model: bool = False,
    **train_kwargs,
) -> np.ndarray | tuple[np.ndarray, Noise2SelfModel]:
    """Train a Noise2Self CNN on one image and return the image denoised by it.

    Parameters
    ----------
    image
        2D image or 3D volume, integer or float, optionally with channels; never modified.
    model
        ``"unet"`` or ``"dncnn"``.
    channel_axis
        Channel axis, or None.
    invariant, augment, tile_size
        As in :meth:`Noise2SelfModel.predict`. ``augment`` is on here (8 passes in 2D): the
        mean over flips and transposes added 0.06 to 0.55 dB in every camera run where it
        was scored (benchmarks/RESULTS.md), at a small cost next to training.
    return_model
        Also return the trained :class:`Noise2SelfModel`.
    **train_kwargs
        Passed to :func:`train` (``max_time``, ``steps``, ``device``, ``random_state``, ...).

    Returns
    -------
    The denoised float image, or ``(denoised, model)``.
    """
    fitted = train(image, model, channel_axis=channel_axis, **train_kwargs)
    denoised = fitted.predict(image, invariant=invariant, augment=augment, tile_size=tile_size)
    return (denoised, fitted) if return_model else denoised
