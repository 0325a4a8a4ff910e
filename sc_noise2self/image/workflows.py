"""File to file: calibrate, train and predict on microscopy files, at any size.

What the image command line (``sc-noise2self image ...``) and the napari plugin run. Inputs
are read lazily (:func:`~sc_noise2self.image.files.read`), outputs are written block by block
(:mod:`~sc_noise2self.image.blocks`) into an OME-Zarr store, or a TIFF written page by page,
so a volume larger than memory is never held whole. Outputs keep the input's axes, scale and
shape, are written atomically, and replace an existing file only with ``overwrite=True``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .._validation import check_choice, check_whole
from ..io import HeldInterrupt, atomic_folder, check_output, claimed
from .blocks import calibrate_sample, denoise_blocks, predict_blocks
from .checks import check_pixel_dtype
from .files import ImageData, add_pyramid, create_zarr, kind_of, read, write

__all__ = ["calibrate_file", "channel_model_paths", "check_target", "predict_file",
           "spatial_axes_of", "train_file"]


def spatial_axes_of(image: ImageData, spatial: str | None = None) -> str:
    """The spatial axes a denoiser sees together: ``"ZYX"`` when Z is present, else ``"YX"``."""
    if spatial is not None:
        return spatial.upper()
    return "ZYX" if "Z" in image.axes else "YX"


def calibrate_file(source, output, *, method: str = "auto", axes: str | None = None,
                   spatial: str | None = None, per_channel: bool = False,
                   sample: int = 256, block: int = 256, mix: bool = True,
                   dtype: str = "input", overwrite: bool = False,
                   progress: bool | None = None, **options):
    """Calibrate a classical denoiser on a sample of a file and denoise all of it, by blocks.

    Parameters
    ----------
    source
        A TIFF or OME-Zarr path (or an :class:`ImageData`).
    output
        Where the denoised image goes (``.tif``/``.tiff`` or ``.zarr``); the input's axes,
        scale and shape are kept.
    method
        ``"auto"`` or a built-in method's name.
    axes
        Override the file's axis letters (e.g. ``"ZYX"``).
    spatial
        The spatial axes calibrated and denoised together (default ``"ZYX"`` when the image
        has Z, else ``"YX"``: each plane on its own).
    per_channel
        Calibrate each channel on its own (its own method and parameters) instead of one
        calibration shared by all channels.
    sample
        Size of the central sample calibrated, along each spatial axis.
    block
        Block size for denoising, along each spatial axis.
    mix
        Mix in the optimal share of the noisy input.
    dtype
        ``"input"``: an integer input's dtype (values rounded, and clipped to its range with a
        warning that says how many were), float32 for a float input; ``"float32"``: float32.
    overwrite
        Replace an existing output.
    progress
        Progress bars.
    **options
        Passed to the calibration (``param_grid``, ``stride``, ``mask``, ...). ``max_time``
        with ``method="auto"``: seconds for choosing between the classical methods and a
        UNet trained on the sample (shared equally by the channels with ``per_channel``);
        the winner then denoises the whole file, which takes as long as the file needs.

    Returns
    -------
    The calibration(s): one :class:`ImageCalibration` (an
    :class:`~sc_noise2self.image.budget.AutoChoice` with ``max_time``), or a list with one
    per channel.
    """
    check_choice(dtype, OUTPUT_DTYPES, name="dtype")
    check_whole(sample, name="sample", minimum=1,
                hint="pixels of the calibrated sample along each spatial axis, e.g. 256")
    check_whole(block, name="block", minimum=1,
                hint="pixels per block along each spatial axis, e.g. 256")
    given = _opened(source, axes)
    image = given.canonical()
    check_target(output, source, overwrite)
    spatial = spatial_axes_of(image, spatial)
    views = _channel_views(image, per_channel)
    if options.get("max_time") is not None and len(views) > 1:
        options["max_time"] = _shared_budget(options["max_time"], len(views))
    calibrations = [calibrate_sample(view, spatial=spatial, size=sample, method=method,
                                     progress=progress, mix=mix, **options) for view in views]

    def fill(out) -> None:
        for c, (view, calibration) in enumerate(zip(views, calibrations, strict=True)):
            target = out if len(views) == 1 else ChannelView(out, image.channel_axis, c)
            if getattr(calibration, "model", None) is not None and calibration.method == "unet":
                predict_blocks(view, calibration.model, spatial=spatial, block=block,
                               out=target, progress=progress, augment=True,
                               mix_weight=calibration.cnn_mix_weight)  # as denoise gives
                continue
            denoise_blocks(view, getattr(calibration, "calibration", calibration),
                           spatial=spatial, block=block, out=target, mix=mix,
                           progress=progress)

    _write_by_blocks(output, image, fill, overwrite, layout=given.axes, dtype=dtype)
    return calibrations[0] if len(calibrations) == 1 else calibrations


def _time_left(deadline: float, n_left: int) -> float:
    """One network's share of the seconds left before ``deadline``, refused under 1 s."""
    left = (deadline - time.perf_counter()) / n_left
    if left < 1.0:
        raise ValueError(f"The time budget leaves {left:.1f} s to train after starting and "
                         "reading; give the command more time (--max-time).")
    return left


def _shared_budget(max_time, n_channels: int):
    """Each channel's share of a budget for all of them (checked where it is used)."""
    try:
        return float(max_time) / n_channels
    except (TypeError, ValueError):
        return max_time  # denoise's own check names what is wrong with it


def train_file(source, *, model: str = "unet", axes: str | None = None,
               spatial: str | None = None, crop: int | None = None,
               frames: int | None = None, per_channel: bool = False, save_model=None,
               overwrite: bool = False, deadline: float | None = None, **train_options):
    """Train a Noise2Self CNN on a file: every time point (and channel) of it, or a crop.

    Parameters
    ----------
    source
        A TIFF or OME-Zarr path (or an :class:`ImageData`).
    model
        ``"unet"`` or ``"dncnn"``.
    axes
        Override the file's axis letters.
    spatial
        The spatial axes of one image (default ``"ZYX"`` when Z is present, else ``"YX"``);
        every other axis but the channels becomes a stack of training images.
    crop
        Train on the central ``crop`` pixels along each spatial axis (for files larger than
        memory); None reads the whole file.
    frames
        Train on at most this many images of the stack (time points, or planes when
        ``spatial="YX"``), evenly spaced; None takes all.
    per_channel
        Train one network per channel (each on that channel alone) instead of one network
        that sees every channel.
    save_model
        Write the trained model here (``.pt``); per channel, ``<name>.c0.pt``,
        ``<name>.c1.pt``, ... (see :func:`channel_model_paths`).
    overwrite
        Replace an existing model file.
    deadline
        A ``time.perf_counter()`` time by which training must end (``image train
        --max-time``): each network trains for its share of what is left once torch is
        loaded and its images are read, instead of ``max_time``.
    **train_options
        Passed to :func:`~sc_noise2self.image.train` (``max_time``, ``steps``, ``device``,
        ``patch_size``, ...). With ``per_channel``, the channels share ``max_time`` equally.

    Returns
    -------
    The trained :class:`~sc_noise2self.image.Noise2SelfModel`, or a list with one per
    channel.
    """
    from .cnn.training import train

    image = _opened(source, axes).canonical()
    views = _channel_views(image, per_channel)
    paths = [None] * len(views)
    if save_model is not None:
        paths = (channel_model_paths(save_model, len(views)) if per_channel
                 and image.channel_axis is not None else [Path(save_model)])
        for path in paths:
            check_output(path, overwrite=overwrite)
    spatial = spatial_axes_of(image, spatial)
    if frames is not None:
        check_whole(frames, name="frames", minimum=1, hint="images of the stack to train on")
    if train_options.get("max_time") is not None and len(views) > 1:
        train_options["max_time"] = _shared_budget(train_options["max_time"], len(views))
    fitted = []
    for index, (view, path) in enumerate(zip(views, paths, strict=True)):
        stack, channel_axis = _training_stack(view, spatial, crop, frames)
        if deadline is not None:
            train_options["max_time"] = _time_left(deadline, len(views) - index)
        one = train(stack, model, channel_axis=channel_axis, n_spatial=len(spatial),
                    **train_options)
        if path is not None:
            one.save(path, overwrite=overwrite)
        fitted.append(one)
    return fitted[0] if len(fitted) == 1 else fitted


def channel_model_paths(path, n_channels: int) -> list[Path]:
    """Where per-channel models go: ``unet.pt`` becomes ``unet.c0.pt``, ``unet.c1.pt``, ...

    Parameters
    ----------
    path
        The model path the user named.
    n_channels
        How many channels.

    Returns
    -------
    One path per channel.
    """
    path = Path(path)
    return [path.with_name(f"{path.stem}.c{c}{path.suffix or '.pt'}") for c in range(n_channels)]


def _channel_views(image: ImageData, per_channel: bool) -> list[ImageData]:
    """The image whole, or one view per channel when ``per_channel`` (and it has channels)."""
    if per_channel and image.channel_axis is not None:
        return [_channel(image, c) for c in range(image.shape[image.channel_axis])]
    return [image]


def predict_file(source, model, output, *, axes: str | None = None, block: int = 256,
                 augment: bool = False, fallback: bool = True, dtype: str = "input",
                 overwrite: bool = False, progress: bool | None = None) -> Path:
    """Denoise a file with a trained CNN, block by block, into ``output``.

    Parameters
    ----------
    source
        A TIFF or OME-Zarr path (or an :class:`ImageData`), in the model's layout.
    model
        A :class:`~sc_noise2self.image.Noise2SelfModel`, or the path of a saved one; or a
        list with one per channel (from ``train_file(per_channel=True)``), each applied to
        its channel.
    output
        ``.tif``/``.tiff`` or ``.zarr``.
    axes
        Override the file's axis letters.
    block
        Block size along each spatial axis (rounded up to the network's grid).
    augment
        Test-time augmentation.
    fallback
        Write the neighbour mean when the model lost to it on its held-out data (warned).
    dtype
        As for :func:`calibrate_file`: ``"input"`` or ``"float32"``.
    overwrite
        Replace an existing output.
    progress
        Progress bars.

    Returns
    -------
    The output path.
    """
    from .cnn.model import Noise2SelfModel

    check_choice(dtype, OUTPUT_DTYPES, name="dtype")
    given = _opened(source, axes)
    image = given.canonical()
    check_target(output, source, overwrite)
    models = list(model) if isinstance(model, list | tuple) else [model]
    views = _channel_views(image, len(models) > 1)
    if len(views) != len(models):
        raise ValueError(f"{len(models)} models were given for an image with "
                         f"{len(views)} channels; give one per channel, or one for all.")
    models = [m if isinstance(m, Noise2SelfModel) else Noise2SelfModel.load(m) for m in models]

    def fill(out) -> None:
        for c, (view, one) in enumerate(zip(views, models, strict=True)):
            target = out if len(views) == 1 else ChannelView(out, image.channel_axis, c)
            predict_blocks(view, one, spatial="ZYX"[-one.layout.n_spatial:], block=block,
                           out=target, augment=augment, fallback=fallback, progress=progress)

    return _write_by_blocks(output, image, fill, overwrite, layout=given.axes, dtype=dtype)


def export_model(model, sample, output, *, authors, axes: str | None = None,
                 overwrite: bool = False, **options) -> Path:
    """Write a trained model as a bioimage.io package, its test input cut from a file.

    Parameters
    ----------
    model
        A :class:`~sc_noise2self.image.Noise2SelfModel`, or the path of a saved one.
    sample
        A TIFF or OME-Zarr path (or an :class:`ImageData`) like the training images: the
        middle time point and a central crop of at most 256 pixels per spatial axis are
        read (never the whole file), with the file's pixel sizes and units.
    output
        The ``.zip`` to write.
    authors
        At least one name.
    axes
        Override the file's axis letters.
    overwrite
        Replace an existing output.
    **options
        Passed to :meth:`~sc_noise2self.image.Noise2SelfModel.export_bioimageio`.

    Returns
    -------
    The output path.
    """
    from .cnn.bioimageio import TEST_SIZE
    from .cnn.model import Noise2SelfModel

    model = model if isinstance(model, Noise2SelfModel) else Noise2SelfModel.load(model)
    image = _opened(sample, axes).canonical()
    crop = tuple(size // 2 if axis == "T" else slice(None) if axis == "C"
                 else slice(max(size - TEST_SIZE, 0) // 2, max(size - TEST_SIZE, 0) // 2
                            + min(size, TEST_SIZE))
                 for axis, size in zip(image.axes, image.shape, strict=True))
    kept = [i for i, axis in enumerate(image.axes) if axis != "T"]
    crop_image = ImageData(np.asarray(image.data[crop]), "".join(image.axes[i] for i in kept),
                           tuple(image.scale[i] for i in kept), dict(image.units),
                           image.channel_names)
    return model.export_bioimageio(output, sample=_in_model_layout(crop_image, model),
                                   authors=authors, overwrite=overwrite, **options)


def _in_model_layout(image: ImageData, model) -> ImageData:
    """``image`` (no time axis) with its axes where ``model`` takes them."""
    spatial = "ZYX"[-model.layout.n_spatial:]
    if set(image.axes) - {"C"} != set(spatial):
        raise ValueError(f"The sample has axes {image.axes!r}; this model takes "
                         f"{model.layout.n_spatial}D images ({spatial}). Pass --axes, or a "
                         "sample like the training images.")
    channel = model.layout.channel_axis
    if channel is None:
        if "C" in image.axes and image.shape[image.axes.index("C")] != 1:
            raise ValueError(f"The sample has {image.shape[image.axes.index('C')]} channels; "
                             "this model takes one (a per-channel model: export each with "
                             "a one-channel sample).")
        if "C" in image.axes:
            index = image.axes.index("C")
            image = ImageData(np.take(image.data, 0, axis=index), image.axes.replace("C", ""),
                              image.scale[:index] + image.scale[index + 1:], image.units)
        return image.in_order(spatial)
    if "C" not in image.axes:
        raise ValueError(f"The sample has no channel axis; this model takes "
                         f"{model.n_channels} channels.")
    return image.in_order(spatial[:channel] + "C" + spatial[channel:])


class ChannelView:
    """One channel of an output array, written like an array without that axis."""

    def __init__(self, out, axis: int, channel: int):
        self.out, self.axis, self.channel = out, axis, channel
        self.shape = tuple(s for i, s in enumerate(out.shape) if i != axis)
        self.dtype = out.dtype

    def __setitem__(self, index, value) -> None:
        index = list(index)
        index.insert(self.axis, self.channel)
        self.out[tuple(index)] = value


def _channel(image: ImageData, channel: int) -> ImageData:
    axis = image.channel_axis
    index = tuple(channel if i == axis else slice(None) for i in range(len(image.axes)))
    keep = [i for i in range(len(image.axes)) if i != axis]
    return ImageData(image.data[index], "".join(image.axes[i] for i in keep),
                     tuple(image.scale[i] for i in keep), dict(image.units))


def _opened(source, axes: str | None) -> ImageData:
    if isinstance(source, ImageData):
        image = source if axes is None else ImageData(source.data, axes, ())
    else:
        image = read(source, axes=axes, lazy=True)
    # Refused as the in-memory functions refuse it, before any work.
    check_pixel_dtype(image.dtype, f"The image {str(source)!r}")
    return image


def check_target(output, source, overwrite: bool) -> None:
    """Refuse a bad or existing output before any work (and writing over the input)."""
    kind = kind_of(output)
    inputs = (source,) if isinstance(source, str | os.PathLike) else ()
    check_output(output, overwrite=overwrite, inputs=inputs,
                 kind="store" if kind == "zarr" else "file")


def _write_by_blocks(output, image: ImageData, fill, overwrite: bool, layout: str,
                     dtype: str = "float32") -> Path:
    """Create the output, let ``fill(array)`` write it block by block; atomically.

    ``image`` is in OME's order, as the blocks are; a TIFF output is written in the input's
    ``layout`` (its axis order), so that it has the input's shape. OME-Zarr holds only
    OME's order. ``dtype`` ``"input"`` keeps an integer input's dtype (:class:`RoundedInto`).
    """
    output = Path(output)
    stored = output_dtype(dtype, image.dtype)

    def filled(array) -> None:
        target = array if stored.kind == "f" else RoundedInto(array)
        fill(target)
        if stored.kind != "f":
            target.warn_if_clipped()

    if kind_of(output) == "zarr":
        with atomic_folder(output, overwrite=overwrite) as folder:
            filled(create_zarr(folder, image, dtype=stored))
            add_pyramid(folder, image)
        return output
    # TIFF: blocks go to a scratch zarr store first, then to the TIFF one plane at a time;
    # the claim covers both, so a second writer cannot start beside the scratch.
    with claimed(output):
        with HeldInterrupt() as held:  # the scratch exists only with its cleanup
            scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".blocks",
                                            dir=output.resolve().parent))
        try:
            held.release()
            array = create_zarr(scratch, image, dtype=stored)
            filled(array)
            import dask.array as da

            denoised = image.with_data(da.from_zarr(array)).in_order(layout)
            write(output, denoised, overwrite=overwrite)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return output


#: What the file workflows write: the input's integer dtype ("input"), or float32.
OUTPUT_DTYPES = ("input", "float32")


def output_dtype(choice: str, input_dtype) -> np.dtype:
    """The stored dtype: an integer input's own for ``"input"``, else float32."""
    input_dtype = np.dtype(input_dtype)
    if choice == "input" and input_dtype.kind in "ui":
        return input_dtype
    return np.dtype(np.float32)


class RoundedInto:
    """An integer array written like a float one: each block rounded and clipped to its range.

    The denoised values of an integer image are in its intensity units (the file workflows
    never rescale them), so rounding costs at most half a grey level; the values clipped
    are counted, and :meth:`warn_if_clipped` says how many there were.
    """

    def __init__(self, out):
        self.out = out
        self.shape, self.dtype = tuple(out.shape), np.dtype(np.float32)
        self.stored = np.dtype(out.dtype)
        info = np.iinfo(self.stored)
        self.low, self.high = float(info.min), float(info.max)
        self.clipped = self.total = 0
        self._lock = threading.Lock()

    def __setitem__(self, index, value) -> None:
        value = np.rint(np.asarray(value, dtype=np.float64))
        outside = int(np.count_nonzero((value < self.low) | (value > self.high)))
        with self._lock:
            self.clipped += outside
            self.total += value.size
        self.out[index] = np.clip(value, self.low, self.high).astype(self.stored)

    def warn_if_clipped(self) -> None:
        """Warn when denoised values fell outside the dtype's range and were clipped."""
        if self.clipped:
            warnings.warn(
                f"{self.clipped} of {self.total} denoised values "
                f"({100 * self.clipped / max(self.total, 1):.3g}%) fell outside "
                f"{self.stored.name}'s range [{self.low:g}, {self.high:g}] and were clipped "
                "to it. To keep them, write float32: dtype='float32' (--dtype float32).",
                UserWarning, stacklevel=4)


def _training_stack(image: ImageData, spatial: str, crop: int | None, frames: int | None):
    """The training images as one array: looped axes flattened into a stack, channels kept."""
    core = "".join(a for a in image.axes if a in spatial or a == "C")
    looped = [a for a in image.axes if a not in core]
    index = []
    for letter, extent in zip(image.axes, image.shape, strict=True):
        if crop is not None and letter in spatial and extent > crop:
            first = extent // 2 - crop // 2
            index.append(slice(first, first + crop))
        elif frames is not None and looped and letter == looped[0] and extent > frames:
            index.append(np.unique(np.linspace(0, extent - 1, frames).round().astype(int)))
        else:
            index.append(slice(None))
    # As floats: the network then learns (and predicts) in the file's intensity units, as
    # the block path feeds it; integers would be rescaled to [0, 1] by the in-memory API.
    data = _taken(image.data, index).astype(np.float32, copy=False)
    loops = [i for i, a in enumerate(image.axes) if a not in core]
    order = loops + [i for i, a in enumerate(image.axes) if a in core]
    data = data.transpose(order)
    if loops:
        data = data.reshape((-1, *data.shape[len(loops):]))
    channel_axis = core.index("C") if "C" in core else None
    if not loops:
        return data, channel_axis
    return list(data), channel_axis


def _taken(data, index: list) -> np.ndarray:
    """``data`` indexed by slices and at most one list of positions, as a numpy array."""
    lists = [i for i, item in enumerate(index) if isinstance(item, np.ndarray)]
    if not lists:
        return np.asarray(data[tuple(index)])
    axis = lists[0]
    parts = [np.asarray(data[tuple([*index[:axis], int(k), *index[axis + 1:]])])
             for k in index[axis]]
    return np.stack(parts, axis=axis)
