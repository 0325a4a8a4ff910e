"""The napari reader: TIFF and OME-Zarr files open with their pixel sizes, units and stains.

Without it napari opened our OME-TIFF outputs at unit scale (issue 27). Channels become one
layer each, named after the file's channel names; the data stay lazy (dask), so a file
larger than memory opens as napari pages it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..image.files import is_image_path, pyramid, read


def get_reader(path: str | list[str]) -> Callable | None:
    """npe2's reader hook: :func:`read_layers` for one TIFF or OME-Zarr path, else None."""
    if isinstance(path, list):
        return None if len(path) != 1 else get_reader(path[0])
    return read_layers if is_image_path(path) else None


def read_layers(path: str | list[str]) -> list[tuple]:
    """The file as napari layer data: ``[(data, kwargs, "image")]``.

    Parameters
    ----------
    path
        A TIFF or OME-Zarr path (or a list holding one).

    Returns
    -------
    One layer-data tuple; with a channel axis, napari splits it into a layer per channel.
    """
    path = path[0] if isinstance(path, list) else path
    image = read(path, lazy=True)
    kept = [i for i, axis in enumerate(image.axes) if axis != "C"]
    name = Path(str(path).rstrip("/")).name.split(".")[0]
    kwargs: dict = {
        "scale": [image.scale[i] for i in kept],
        "axis_labels": [image.axes[i].lower() for i in kept],
        "metadata": {"axes": image.axes, "units": dict(image.units), "path": str(path)},
    }
    units = [image.units.get(image.axes[i], "pixel") for i in kept]
    if any(unit != "pixel" for unit in units):
        kwargs["units"] = units
    if image.channel_axis is not None:
        kwargs["channel_axis"] = image.channel_axis
        channels = image.shape[image.channel_axis]
        kwargs["name"] = (list(image.channel_names) if image.channel_names
                          else [f"{name} c{c}" for c in range(channels)])
    else:
        kwargs["name"] = name
    levels = pyramid(path)  # an OME-Zarr pyramid lets napari fetch only what it shows
    if len(levels) > 1:
        kwargs["multiscale"] = True
        return [(levels, kwargs, "image")]
    return [(image.data, kwargs, "image")]
