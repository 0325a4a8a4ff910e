"""Microscopy files: TIFF (tifffile) and OME-Zarr (ome-zarr), with their axes and scale.

An :class:`ImageData` is the pixels and what a microscopist needs to keep with them: which
axis is which (``"TCZYX"`` letters), the physical size of a pixel along each, and the
dtype. :func:`read` and :func:`write` keep all three through a round trip. A file larger
than memory is read lazily (``lazy=True``: a dask array over the file's chunks or pages),
and a lazy image is written chunk by chunk, never whole.

Every write is atomic (a temporary file or folder beside the target, renamed when complete)
and refuses to replace an existing output unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_folder, atomic_path

__all__ = ["AXES", "ImageData", "create_zarr", "read", "write"]

#: Axis letters, in the order OME-Zarr requires (time, channel, then space).
AXES = "TCZYX"
_SPATIAL = "ZYX"
# tifffile's letters for "a sequence" (I: images, Q: unknown, P: pages, R: tiles, ...):
# treated as time, i.e. separate images, unless the caller says otherwise with axes=.
_SEQUENCE = "IQPRHEAVL"
_TIFF = (".tif", ".tiff")
_OME_SIZES = {"X": "PhysicalSizeX", "Y": "PhysicalSizeY", "Z": "PhysicalSizeZ",
              "T": "TimeIncrement"}


@dataclass
class ImageData:
    """Pixels with their axes and scale.

    Attributes
    ----------
    data
        A numpy array, or a dask array for a file read lazily.
    axes
        One letter per axis from ``"TCZYX"`` (time, channel, z, y, x).
    scale
        Physical size of a pixel (or time step) along each axis; 1.0 where unknown and
        along the channel axis.
    units
        Physical units by axis letter, where the file gives them.
    channel_names
        One name per channel (the stains), where the file gives them; empty otherwise.
    """

    data: Any
    axes: str
    scale: tuple[float, ...] = ()
    units: dict = field(default_factory=dict)
    channel_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.axes = check_axes(self.axes, np.ndim(self.data))
        self.scale = check_scale(self.scale, self.axes)
        self.channel_names = tuple(str(n) for n in self.channel_names or ())
        channels = self.shape[self.axes.index("C")] if "C" in self.axes else 0
        if self.channel_names and len(self.channel_names) != channels:
            raise ValueError(f"channel_names={self.channel_names!r} must name each of the "
                             f"{channels} channels of axes {self.axes!r}, or be empty.")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the pixels."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the pixels."""
        return np.dtype(self.data.dtype)

    @property
    def channel_axis(self) -> int | None:
        """Position of the channel axis, or None."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the Z, Y and X axes present."""
        return tuple(i for i, a in enumerate(self.axes) if a in _SPATIAL)

    def with_data(self, data) -> ImageData:
        """The same axes, scale and units around new pixels of the same shape."""
        if tuple(data.shape) != self.shape:
            raise ValueError(f"New pixels of shape {tuple(data.shape)} do not fit axes "
                             f"{self.axes!r} of shape {self.shape}.")
        return ImageData(data, self.axes, self.scale, dict(self.units), self.channel_names)

    def canonical(self) -> ImageData:
        """The axes in OME-Zarr's order (``"TCZYX"``), transposing lazily if needed."""
        return self.in_order("".join(sorted(self.axes, key=AXES.index)))

    def in_order(self, axes: str) -> ImageData:
        """The same image with its axes in the order ``axes`` (the same letters), lazily."""
        if sorted(axes) != sorted(self.axes):
            raise ValueError(f"axes {axes!r} are not a reordering of the image's "
                             f"{self.axes!r}.")
        order = [self.axes.index(a) for a in axes]
        if order == list(range(len(self.axes))):
            return self
        return ImageData(self.data.transpose(order), "".join(self.axes[i] for i in order),
                         tuple(self.scale[i] for i in order), dict(self.units),
                         self.channel_names)


def check_axes(axes: str, ndim: int) -> str:
    """Upper-case axis letters, one per dimension, each once, with Y and X; else raise."""
    if not isinstance(axes, str):
        raise TypeError(f"axes={axes!r} must be a string of letters from {AXES!r}, e.g. 'ZYX'.")
    axes = axes.upper().replace("S", "C")
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise ValueError(f"axes={axes!r} has letters {unknown} outside {AXES!r} (T time, C "
                         "channel, Z, Y, X); name each axis with one of them.")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes={axes!r} names an axis twice; each letter may appear once.")
    if len(axes) != ndim:
        raise ValueError(f"axes={axes!r} has {len(axes)} letters for an image of {ndim} "
                         "dimensions; give one letter per dimension.")
    if not {"Y", "X"} <= set(axes):
        raise ValueError(f"axes={axes!r} lacks Y or X: an image has both.")
    return axes


def check_scale(scale, axes: str) -> tuple[float, ...]:
    """One positive finite pixel size per axis (1.0 for all when empty)."""
    if scale is None or len(scale) == 0:
        return (1.0,) * len(axes)
    values = tuple(float(s) for s in scale)
    if len(values) != len(axes) or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"scale={tuple(scale)} must give one positive pixel size per axis "
                         f"of {axes!r}.")
    return values


def kind_of(path: str | os.PathLike) -> str:
    """``"tiff"`` or ``"zarr"`` from how the path ends; raise naming both otherwise."""
    name = str(path).rstrip("/").lower()
    if name.endswith(_TIFF):
        return "tiff"
    if name.endswith(".zarr"):
        return "zarr"
    raise ValueError(f"{str(path)!r} is neither a TIFF (.tif, .tiff, .ome.tif) nor an "
                     "OME-Zarr store (.zarr, .ome.zarr); name the file with one of these.")


def read(path: str | os.PathLike, *, axes: str | None = None, lazy: bool = False) -> ImageData:
    """Read a TIFF or OME-Zarr image with its axes and scale.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` (OME-TIFF and ImageJ metadata are read) or an OME-Zarr store
        (``.zarr``; its first, full-resolution level).
    axes
        The axis letters, overriding the file's (e.g. ``"ZYX"`` for a stack that the file
        calls a sequence of images).
    lazy
        Return a dask array over the file's chunks (or pages), for images larger than memory.

    Returns
    -------
    The :class:`ImageData`.
    """
    kind = kind_of(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"Input {str(path)!r} does not exist.")
    try:
        image = _read_tiff(Path(path), lazy) if kind == "tiff" else _read_zarr(Path(path), lazy)
    except (ValueError, OSError, KeyError) as error:  # tifffile's and zarr's own words
        raise ValueError(
            f"Input {str(path)!r} could not be read as {kind} ({error}); the file may be "
            "truncated or still being written. Check its size, or copy it again."
        ) from error
    if axes is not None:
        image = ImageData(image.data, axes, (), {})
    return image


def _read_tiff(path: Path, lazy: bool) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        letters = _tiff_axes(series.axes)
        scale = _tiff_scale(tif, letters)
        units, names = _tiff_units_and_channels(tif)
        if not lazy:
            data = series.asarray()
    if lazy:
        import dask.array as da
        import zarr

        store = tifffile.imread(path, aszarr=True)
        data = da.from_zarr(zarr.open(store, mode="r"))
    channels = data.shape[letters.index("C")] if "C" in letters else 0
    return ImageData(data, letters, scale, units, names if len(names) == channels else ())


def _tiff_units_and_channels(tif) -> tuple[dict, tuple[str, ...]]:
    """Units by axis letter and channel names, from OME or from our shaped metadata."""
    if tif.is_ome:
        import tifffile

        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        units = {a: pixels[f"{key}Unit"] for a, key in _OME_SIZES.items()
                 if f"{key}Unit" in pixels and a in _SPATIAL}
        channels = pixels.get("Channel", [])
        channels = channels if isinstance(channels, list) else [channels]
        names = tuple(str(c["Name"]) for c in channels if isinstance(c, dict) and "Name" in c)
        return units, names if len(names) == len(channels) else ()
    if tif.is_shaped and tif.shaped_metadata:
        meta = tif.shaped_metadata[0]
        return dict(meta.get("units", {})), tuple(meta.get("channel_names", ()))
    return {}, ()


def _tiff_axes(letters: str) -> str:
    letters = letters.upper().replace("S", "C")
    if any(a in _SEQUENCE for a in letters):
        sequence = [a for a in letters if a in _SEQUENCE]
        if len(sequence) > 1 or "T" in letters:
            raise ValueError(f"The TIFF's axes {letters!r} hold more than one sequence axis; "
                             "pass axes= naming each (e.g. axes='TZYX').")
        letters = letters.replace(sequence[0], "T")
    return letters


def _tiff_scale(tif, axes: str) -> tuple[float, ...]:
    sizes: dict[str, float] = {}
    if tif.is_ome:
        import tifffile

        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
        sizes = {a: float(pixels[k]) for a, k in _OME_SIZES.items() if k in pixels}
    elif tif.is_shaped:  # written by write() in an order OME-TIFF cannot hold
        meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        sizes = {a: float(meta[k]) for a, k in _OME_SIZES.items() if k in meta}
    elif tif.is_imagej:
        meta = tif.imagej_metadata or {}
        page = tif.pages[0]
        for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
            if tag in page.tags:
                numerator, denominator = page.tags[tag].value
                if numerator:
                    sizes[letter] = denominator / numerator
        if "spacing" in meta:
            sizes["Z"] = float(meta["spacing"])
        if "finterval" in meta:
            sizes["T"] = float(meta["finterval"])
    return tuple(sizes.get(a, 1.0) if a != "C" else 1.0 for a in axes)


def _zarr_image_node(path: str | os.PathLike):
    """The OME-Zarr reader's image node of ``path`` (its levels and metadata), checked."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    nodes = list(Reader(location)()) if location is not None else []
    if not nodes or not nodes[0].data:
        raise ValueError(f"{str(path)!r} holds no OME-Zarr image (no multiscales metadata).")
    return nodes[0]


def _read_zarr(path: Path, lazy: bool) -> ImageData:
    node = _zarr_image_node(path)
    data = node.data[0]
    axes = "".join(a if isinstance(a, str) else a["name"]
                   for a in node.metadata.get("axes", [])).upper() or _default_axes(data.ndim)
    scale = ()
    for transform in (node.metadata.get("coordinateTransformations") or [[]])[0]:
        if transform.get("type") == "scale":
            scale = tuple(transform["scale"])
    units = {a["name"].upper(): a["unit"] for a in node.metadata.get("axes", [])
             if isinstance(a, dict) and "unit" in a}
    names = tuple(node.metadata.get("channel_names") or ())
    channels = data.shape[axes.index("C")] if "C" in axes else 0
    return ImageData(data if lazy else np.asarray(data.compute()), axes, scale, units,
                     names if len(names) == channels else ())


def pyramid(path: str | os.PathLike) -> list:
    """Every level of an OME-Zarr image (lazy, finest first), for viewers; one for a TIFF."""
    if kind_of(path) != "zarr":
        return [read(path, lazy=True).data]
    return list(_zarr_image_node(path).data)


def _default_axes(ndim: int) -> str:
    return AXES[-ndim:]


def write(path: str | os.PathLike, image, *, axes: str | None = None, scale=None,
          overwrite: bool = False, chunks: tuple[int, ...] | None = None) -> Path:
    """Write an image to TIFF or OME-Zarr, with its axes and scale, atomically.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` (written as OME-TIFF) or ``.zarr`` (OME-Zarr, one level).
    image
        An :class:`ImageData`, or an array with ``axes`` (and optionally ``scale``).
    axes, scale
        For an array: its axis letters and pixel sizes.
    overwrite
        Replace an existing output; otherwise it is refused before any work.
    chunks
        Chunk shape of the OME-Zarr array (default: whole Y-X planes, or the dask chunks).

    Returns
    -------
    The path written. A dask image is written chunk by chunk (zarr) or page by page (TIFF).
    """
    if not isinstance(image, ImageData):
        if axes is None:
            raise ValueError("Writing an array needs axes= (e.g. 'ZYX'), so that readers "
                             "know which axis is which.")
        image = ImageData(image, axes, scale or ())
    elif axes is not None or scale is not None:
        raise ValueError("Pass axes= and scale= only with a plain array, not with ImageData.")
    kind = kind_of(path)
    if kind == "tiff":  # in the image's own order, so that a TIFF comes back as it went in
        return _write_tiff(Path(path), image, overwrite)
    return _write_zarr(Path(path), image.canonical(), overwrite, chunks)


def _write_tiff(path: Path, image: ImageData, overwrite: bool) -> Path:
    import tifffile

    sizes = {key: image.scale[image.axes.index(letter)]
             for letter, key in _OME_SIZES.items() if letter in image.axes}
    # OME-TIFF holds only OME's order; any other order (a user's "XY", an RGB "YXC") is
    # written as it is, with its axes and sizes in tifffile's own metadata, which read()
    # restores. Interleaved colour stays RGB(A) pixels, as viewers expect.
    ome = image.canonical() is image
    rgb = not ome and image.axes.endswith("YXC") and image.shape[-1] in (3, 4)
    metadata: dict[str, Any] = {"axes": image.axes, **sizes}
    units = {letter: image.units[letter] for letter in _SPATIAL if letter in image.units}
    if ome:  # OME's own fields, which Fiji, napari and QuPath read
        metadata.update({f"{_OME_SIZES[a]}Unit": unit for a, unit in units.items()})
        if image.channel_names:
            metadata["Channel"] = {"Name": list(image.channel_names)}
    else:  # tifffile's JSON, which read() restores
        metadata.update({"units": units, "channel_names": list(image.channel_names)})
    options = {"ome": ome, "photometric": "rgb" if rgb else "minisblack",
               "metadata": metadata}
    data = image.data
    with atomic_path(path, overwrite=overwrite) as temporary:
        if hasattr(data, "dask"):  # one page in memory at a time
            tifffile.imwrite(temporary, data=_pages(data, 3 if rgb else 2), shape=data.shape,
                             dtype=data.dtype, **options)
        else:
            tifffile.imwrite(temporary, np.asarray(data), **options)
    return path


def _pages(data, page_ndim: int):
    """The pages (Y-X planes, or Y-X-colour) of a lazy array, computed one at a time."""
    for index in np.ndindex(*data.shape[:-page_ndim]):
        yield np.asarray(data[index])


def _write_zarr(path: Path, image: ImageData, overwrite: bool, chunks) -> Path:
    with atomic_folder(path, overwrite=overwrite) as temporary:
        array = create_zarr(temporary, image, dtype=image.dtype, chunks=chunks or
                            _dask_chunks(image.data))
        import dask.array as da

        da.to_zarr(da.asarray(image.data).rechunk(array.chunks), array)
        add_pyramid(temporary, image)
    return path


def _dask_chunks(data):
    """A dask array's first chunk shape (its chunks, kept in the store), or None."""
    return tuple(c[0] for c in data.chunks) if hasattr(data, "dask") else None


#: Levels are added while both Y and X of the last one exceed this (tiles viewers fetch).
PYRAMID_MIN_SIZE = 512


def pyramid_levels(shape_yx: tuple[int, int]) -> int:
    """Levels below level 0 for an image of Y x X: halve while both exceed 512 pixels."""
    levels, (y, x) = 0, shape_yx
    while y > PYRAMID_MIN_SIZE and x > PYRAMID_MIN_SIZE:
        y, x, levels = y // 2, x // 2, levels + 1
    return levels


def add_pyramid(folder: Path, like: ImageData) -> None:
    """Add the multiscale pyramid of an OME-Zarr image whose level 0 is written.

    Each level halves Y and X (2 x 2 means, rounded for integers, in level 0's dtype), as
    viewers such as napari and OME-Zarr's own tools expect for large images; the metadata
    lists every level with its scale. ``like`` gives the axes, scale, units and channels.
    Small images keep one level.
    """
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    n_levels = pyramid_levels(like.shape[-2:])
    if n_levels == 0:
        return
    group = zarr.open_group(str(folder), mode="r+")
    level = da.from_zarr(group["0"])
    dtype = np.dtype(level.dtype)  # what was stored, which may not be the input's
    scale = list(like.scale)
    datasets = [_dataset("0", scale)]
    halve = {like.axes.index(a): 2 for a in "YX"}
    for k in range(1, n_levels + 1):
        level = da.coarsen(np.mean, level.astype(np.float64), halve, trim_excess=True)
        if dtype.kind in "ui":
            level = da.rint(level)
        level = level.astype(dtype)
        target = group.create_array(str(k), shape=level.shape, dtype=level.dtype,
                                    chunks=tuple(min(c, s) for c, s in
                                                 zip(group["0"].chunks, level.shape,
                                                     strict=True)), fill_value=0)
        da.to_zarr(level.rechunk(target.chunks), target)
        level = da.from_zarr(target)
        scale = [s * halve.get(i, 1) for i, s in enumerate(scale)]
        datasets.append(_dataset(str(k), scale))
    write_multiscales_metadata(
        group, datasets, axes=like.axes.lower(),
        axes_units={key.lower(): v for key, v in like.units.items()} or None,
        metadata=omero_of(like))


def _dataset(path: str, scale: list[float]) -> dict:
    return {"path": path, "coordinateTransformations": [{"type": "scale", "scale": list(scale)}]}


#: Channel colours of the ``omero`` block, in order (one channel: grey).
_COLOURS = ("00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00")


def omero_of(image: ImageData) -> dict:
    """OME-Zarr's ``omero`` block naming the channels (viewers label them), or nothing.

    The display window is the dtype's range for integers and [0, 1] for floats (the image
    package's units), so that nothing is computed from a lazy image to write it.
    """
    if not image.channel_names:
        return {}
    low, high = ((float(np.iinfo(image.dtype).min), float(np.iinfo(image.dtype).max))
                 if image.dtype.kind in "ui" else (0.0, 1.0))
    window = {"start": low, "end": high, "min": low, "max": high}
    colours = ("FFFFFF",) if len(image.channel_names) == 1 else _COLOURS
    return {"omero": {"channels": [
        {"label": name, "active": True, "color": colours[i % len(colours)], "window": window}
        for i, name in enumerate(image.channel_names)]}}


def create_zarr(folder: Path, like: ImageData, *, dtype=np.float32, chunks=None):
    """An empty OME-Zarr image shaped like ``like`` (axes, scale) in ``folder``; its array.

    For outputs written block by block: the caller fills the returned zarr array (level 0),
    inside :func:`~sc_noise2self.io.atomic_folder` so that only a complete store appears.
    ``like`` must have its axes in OME-Zarr's order (:meth:`ImageData.canonical`).
    """
    import zarr
    from ome_zarr.writer import write_multiscales_metadata

    if like.canonical() is not like:
        raise ValueError(f"axes {like.axes!r} are not in OME-Zarr's order {AXES!r}; use "
                         "image.canonical() first.")
    if chunks is None:  # whole Y-X planes
        chunks = (1,) * (len(like.shape) - 2) + tuple(like.shape[-2:])
    group = zarr.open_group(str(folder), mode="w")
    array = group.create_array("0", shape=like.shape, dtype=dtype, chunks=tuple(chunks),
                               fill_value=0)
    write_multiscales_metadata(
        group, [_dataset("0", list(like.scale))],
        axes=like.axes.lower(),
        axes_units={k.lower(): v for k, v in like.units.items()} or None,
        metadata=omero_of(like))  # this writer takes the omero block one level down
    return array


def is_image_path(path: str | os.PathLike) -> bool:
    """True when ``path`` names a TIFF or a zarr store (by its ending)."""
    return re.search(r"\.(tiff?|zarr)/?$", str(path).lower()) is not None
