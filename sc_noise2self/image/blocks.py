"""Images larger than memory: denoise block by block with a halo, writing as it goes.

A volume read lazily (:func:`~sc_noise2self.image.files.read` with ``lazy=True``) is cut into
blocks along its spatial axes. Each block is read with a halo of neighbouring pixels,
denoised, and only its interior is written, into a numpy array or a zarr store, so at most
one block and its halo are in memory at a time. Time points (and any other axis but the
channels and the spatial axes the denoiser sees) are taken one at a time.

The output equals the whole-image output, up to float rounding, when the halo covers how far
an output pixel reaches into its input and the blocks sit on the pixel grid the denoiser
assumes:

- a trained CNN: the halo is the network's reach and blocks start on its down-sampling grid
  (the same rule as :class:`~sc_noise2self.image.cnn.predict.Tiler`); the model's stored
  normalisation is used for every block;
- a calibrated classical method: the halo is the method's reach at its best parameters, plus
  one pixel for the replacement of hidden pixels, and blocks start on the masking grid, so
  each block sees the same phases as the whole image.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .._progress import progress_bar
from .._validation import check_real, check_whole
from .budget import mixed_prediction
from .files import ImageData
from .referee import baseline_wins
from .selection import CNN_METHODS, denoise

__all__ = ["BlockPlan", "calibrate_sample", "denoise_blocks", "method_reach", "predict_blocks",
           "run_blocks"]

#: Halo used for methods whose output pixel depends on the whole image (TV, wavelets):
#: their blocks approximate the whole-image output, and a warning says so.
GLOBAL_METHOD_HALO = 32


@dataclass(frozen=True)
class BlockPlan:
    """How an image is cut: the axes a function sees together, block size, halo, grid.

    Attributes
    ----------
    axes
        The image's axis letters.
    core
        The letters the function sees together: the spatial axes it denoises jointly and
        the channel axis; every other axis is looped over, one index at a time.
    block
        Block size along each spatial axis of ``core`` (a multiple of ``align``).
    halo
        Pixels read on each side of a block (a multiple of ``align``).
    align
        Blocks and halos start on multiples of this (the masking stride, or a network's
        down-sampling factor).
    """

    axes: str
    core: str
    block: tuple[int, ...]
    halo: tuple[int, ...]
    align: int = 1

    @property
    def spatial(self) -> str:
        """The spatial letters of ``core``."""
        return "".join(a for a in self.core if a != "C")

    def blocks(self, shape: Sequence[int]) -> Iterator[tuple[tuple, tuple, tuple]]:
        """``(out_index, region_index, kept_within_region)`` for every block of ``shape``."""
        loops = [i for i, a in enumerate(self.axes) if a not in self.core]
        cuts = {self.axes.index(a): (size, halo) for a, size, halo in
                zip(self.spatial, self.block, self.halo, strict=True)}
        starts = {i: range(0, shape[i], cuts[i][0]) for i in cuts}
        for loop in itertools.product(*(range(shape[i]) for i in loops)):
            for corner in itertools.product(*starts.values()):
                out, region, kept = [], [], []
                at = dict(zip(loops, loop, strict=True))
                begin = dict(zip(starts, corner, strict=True))
                for axis, size in enumerate(shape):
                    if axis in at:
                        out.append(at[axis])
                        region.append(at[axis])
                    elif axis in begin:
                        block, halo = cuts[axis]
                        first, last = begin[axis], min(begin[axis] + block, size)
                        low, high = max(0, first - halo), min(size, last + halo)
                        out.append(slice(first, last))
                        region.append(slice(low, high))
                        kept.append(slice(first - low, last - low))
                    else:  # the channel axis, whole
                        out.append(slice(None))
                        region.append(slice(None))
                        kept.append(slice(None))
                yield tuple(out), tuple(region), tuple(kept)

    def count(self, shape: Sequence[int]) -> int:
        """How many blocks :meth:`blocks` yields for ``shape``."""
        n = 1
        for i, a in enumerate(self.axes):
            if a not in self.core:
                n *= shape[i]
            elif a != "C":
                n *= math.ceil(shape[i] / self.block[self.spatial.index(a)])
        return n


def make_plan(image: ImageData, spatial: str, block, halo: int, align: int) -> BlockPlan:
    """A :class:`BlockPlan` with sizes rounded up to the alignment, checked first."""
    spatial = spatial.upper()
    if any(a not in image.axes for a in spatial) or not spatial.endswith("YX"):
        raise ValueError(f"spatial={spatial!r} must be 'YX' or 'ZYX' and present in the "
                         f"image's axes {image.axes!r}.")
    sizes = (block,) * len(spatial) if np.isscalar(block) else tuple(block)
    if len(sizes) != len(spatial):
        raise ValueError(f"block={block!r} needs one size per axis of {spatial!r}.")
    for size in sizes:
        check_whole(size, name="block (each size)", minimum=1, hint="pixels per block")
    round_up = lambda n: -(-int(n) // align) * align  # noqa: E731
    core = "".join(a for a in image.axes if a in spatial or a == "C")
    return BlockPlan(image.axes, core, tuple(round_up(s) for s in sizes),
                     (round_up(halo),) * len(spatial), align)


def _cut_into_blocks(image: ImageData, spatial: str, plan: BlockPlan) -> bool:
    """Whether some spatial axis is longer than one block (else the image is one block)."""
    sizes = [image.shape[image.axes.index(a)] for a in spatial.upper()]
    return any(size > block for size, block in zip(sizes, plan.block, strict=True))


def run_blocks(image: ImageData, function: Callable[[np.ndarray], np.ndarray], plan: BlockPlan,
               *, out=None, dtype=np.float32, progress: bool | None = None):
    """Apply ``function`` to every block (with its halo) and write the interiors to ``out``.

    Parameters
    ----------
    image
        The input, numpy or lazy (dask); blocks are read one at a time.
    function
        ``function(region) -> array`` of the region's shape; the region holds the plan's
        ``core`` axes in the image's order.
    plan
        How to cut the image.
    out
        Where to write: anything indexable like the image (a zarr array), or None for a new
        numpy array.
    dtype
        dtype of a new output.
    progress
        A progress bar over blocks; None shows it on a terminal.

    Returns
    -------
    ``out``.
    """
    shape = image.shape
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {tuple(out.shape)}; the image has {tuple(shape)}.")
    for out_index, region_index, kept in progress_bar(
            plan.blocks(shape), desc="blocks", total=plan.count(shape), progress=progress):
        region = np.asarray(image.data[region_index])
        result = np.asarray(function(region))
        out[out_index] = result[kept].astype(out.dtype, copy=False)
    return out


def method_reach(method: str, params: dict) -> int | None:
    """Pixels an output pixel of a built-in method reaches on each side; None: the whole image.

    Parameters
    ----------
    method
        A built-in method's name.
    params
        Its parameters (the calibration's best).

    Returns
    -------
    The reach, or None for methods that couple every pixel (TV, wavelets, BM3D).
    """
    if method == "median":
        return math.ceil(params.get("radius", 1))
    if method == "gaussian":  # scikit-image truncates the kernel at 4 sigma
        return math.ceil(4.0 * float(params.get("sigma", 1.0))) + 1
    if method == "nl_means":
        return int(params.get("patch_size", 7)) // 2 + int(params.get("patch_distance", 11))
    if method == "bilateral":
        sigma = float(params.get("sigma_spatial", 1.0))
        window = params.get("win_size") or max(5, 2 * math.ceil(3 * sigma) + 1)
        return int(window) // 2
    return None


def calibrate_sample(image: ImageData, *, spatial: str = "YX", size: int = 256,
                     method: str = "auto", **options):
    """Calibrate a classical method on one in-memory sample of a (possibly lazy) image.

    The sample is the central ``size`` pixels along each spatial axis of the middle index of
    every looped axis, with all channels: large enough to hold the noise and the
    structures, small enough for memory.

    Parameters
    ----------
    image
        The image, numpy or lazy.
    spatial
        The spatial axes calibrated together (``"YX"`` or ``"ZYX"``).
    size
        Pixels of the sample along each spatial axis.
    method
        ``"auto"`` or a built-in method's name.
    **options
        Passed to :func:`~sc_noise2self.image.denoise` (``param_grid``, ``stride``, ...).

    Returns
    -------
    The sample's :class:`ImageCalibration`, graded against the neighbour mean; with
    ``max_time`` (``method="auto"``), the :class:`~sc_noise2self.image.budget.AutoChoice`
    between the classical methods and a UNet trained on the sample.
    """
    if method in CNN_METHODS:  # refused before any work, not after training it
        raise ValueError(f"calibrate_sample calibrates classical methods, not method="
                         f"{method!r}; for a CNN use image.train on a sample and "
                         "predict_blocks.")
    plan = make_plan(image, spatial, size, 0, 1)
    index = []
    for letter, extent in zip(image.axes, image.shape, strict=True):
        if letter not in plan.core:
            index.append(extent // 2)
        elif letter == "C":
            index.append(slice(None))
        else:
            width = plan.block[plan.spatial.index(letter)]
            first = max(0, extent // 2 - width // 2)
            index.append(slice(first, min(extent, first + width)))
    # As floats: the output then stays in the file's intensity units (integers are not
    # rescaled to [0, 1], as the in-memory API does).
    sample = np.asarray(image.data[tuple(index)]).astype(np.float32, copy=False)
    channel_axis = plan.core.index("C") if "C" in plan.core else None
    _, calibration = denoise(sample, method, return_calibration=True,
                             channel_axis=channel_axis, **options)
    if calibration is None:
        raise ValueError("calibrate_sample calibrates classical methods; for a CNN use "
                         "image.train on a sample and predict_blocks.")
    return calibration


def denoise_blocks(image: ImageData, calibration, *, spatial: str = "YX", block: int = 256,
                   out=None, mix: bool = True, fallback: bool = True,
                   progress: bool | None = None):
    """Denoise a (possibly lazy) image block by block with a calibrated classical method.

    Parameters
    ----------
    image
        The input; its blocks hold the same axes, in the same order, as the calibrated image.
    calibration
        An :class:`~sc_noise2self.image.ImageCalibration` (e.g. from :func:`calibrate_sample`).
    spatial
        The spatial axes the method sees together (``"YX"`` or ``"ZYX"``).
    block
        Block size along each spatial axis (rounded up to the masking stride).
    out
        Where to write (a zarr array), or None for a numpy array.
    mix, fallback
        As in :meth:`ImageCalibration.denoise`.
    progress
        A progress bar over blocks.

    Returns
    -------
    ``out``: the J-invariant output mixed with the input, float32, in the image's own
    intensity units (integer images are not rescaled).
    """
    stride = int(calibration.settings["stride"])
    reach = method_reach(calibration.method, calibration.best_params)
    # The stand-ins reach one pixel past a hidden pixel; with blocks, a kept pixel reads
    # block pixels up to 2 reach away from it whose stand-ins lie reach + 1 further.
    halo = (reach or GLOBAL_METHOD_HALO) + 1 + 2 * calibration.reach
    plan = make_plan(image, spatial, block, halo, stride)
    if reach is None and _cut_into_blocks(image, spatial, plan):
        # An image within one block is denoised whole: nothing is approximated then.
        warnings.warn(
            f"{calibration.method!r} couples every pixel of the image, so blocks of "
            f"{block} pixels with a halo of {GLOBAL_METHOD_HALO} approximate its whole-image "
            "output; use a larger block to come closer.", UserWarning, stacklevel=2)

    def one(region: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a flat block (background) is returned as it is
            warnings.filterwarnings("ignore", message=".*constant.*")
            return calibration.denoise(region.astype(np.float32, copy=False), mix=mix,
                                       fallback=fallback)

    return run_blocks(image, one, plan, out=out, progress=progress)


def predict_blocks(image: ImageData, model, *, spatial: str | None = None, block: int = 256,
                   out=None, augment: bool = False, fallback: bool = True,
                   progress: bool | None = None, mix_weight: float = 1.0):
    """Predict a (possibly lazy) image block by block with a trained Noise2Self CNN.

    Every block is read with the network's reach as its halo, starting on its down-sampling
    grid, and predicted with the model's stored normalisation: the output equals one
    whole-image prediction up to float rounding.

    Parameters
    ----------
    image
        The input, in the layout the model was trained on (its channel axis where the
        model's was), with any looped axes (time) around it.
    model
        A :class:`~sc_noise2self.image.Noise2SelfModel`.
    spatial
        The spatial axes of one image (default: the model's number of spatial axes).
    block
        Block size along each spatial axis (rounded up to the network's grid).
    out
        Where to write (a zarr array), or None for a numpy array.
    augment
        Test-time augmentation (flips, and transposes unless the model hides whole lines),
        as in ``model.predict``; blocks then
        match the whole image only approximately (flips move the down-sampling grid).
    fallback
        When the model lost to the J-invariant neighbour mean on its held-out data
        (``model.beats_baseline`` is False), write the neighbour mean instead, with a
        warning; False writes the network's output anyway (still warned).
    progress
        A progress bar over blocks.
    mix_weight
        Weight of the prediction in a mix with the input (1: the prediction alone), as
        ``image.denoise(x, "auto", max_time=T)`` chose it for a network that hides lines.

    Returns
    -------
    ``out``, float32.
    """
    from .cnn.grading import baseline_output
    from .cnn.predict import DEFAULT_HALO, unwrap

    mix_weight = check_real(mix_weight, name="mix_weight", minimum=0.0,
                            hint="the prediction's share in a mix with the input")
    if mix_weight > 1.0:
        raise ValueError(f"mix_weight={mix_weight} must be at most 1: the prediction's share "
                         "in a mix with the input (1: the prediction alone).")

    if spatial is None:
        spatial = "ZYX"[-model.layout.n_spatial:]
    net = unwrap(model.net)
    multiple = int(getattr(net, "size_multiple", 1))
    halo = int(getattr(net, "reach", DEFAULT_HALO))
    if model.hides_structure:  # predicted J-invariantly: the stand-ins reach further
        halo += 2 * model.reach + 1
    if baseline_wins(f"The {model.config.model} being applied", model.val_loss,
                     model.baseline_loss, fallback, verb="written", stacklevel=3):
        # the neighbour mean reaches one pixel (reach + 1 with blocks)
        plan = make_plan(image, spatial, block, model.reach + 1, 1)
        return run_blocks(image, lambda region: baseline_output(model, region.astype(
            np.float32)), plan, out=out, progress=progress)
    if _holds_one_value(image.data):  # its own prediction, as model.predict returns it
        return run_blocks(image, lambda region: region, make_plan(image, spatial, block, 0, 1),
                          out=out, progress=progress)
    plan = make_plan(image, spatial, block, halo, multiple)

    def one(region: np.ndarray) -> np.ndarray:  # floats: the output keeps the file's units
        # A constant block of a varied image is the network's to predict, as in one
        # whole-image prediction.
        return mixed_prediction(model, region.astype(np.float32, copy=False), mix_weight,
                                augment=augment, keep_constant=False)

    return run_blocks(image, one, plan, out=out, progress=progress)


def _holds_one_value(data) -> bool:
    """Whether a (possibly lazy) image holds a single value: one pass over it."""
    if hasattr(data, "dask"):
        import dask

        low, high = dask.compute(data.min(), data.max())
    else:
        low, high = np.min(data), np.max(data)
    return bool(low == high)
