"""Qt pieces both widgets share: the layer picker, result layers and the loss canvas."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image
from qtpy.QtWidgets import QComboBox, QWidget

# Layer attributes that place the data in the world and show it: a result layer copies them
# so that it lies exactly over its input (anisotropic voxels, stage positions, units).
PLACEMENT = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")
DISPLAY = ("colormap", "contrast_limits", "gamma", "rgb")


class LayerPicker(QComboBox):
    """A combo box of the viewer's image layers that follows layers added and removed.

    Parameters
    ----------
    viewer
        The napari viewer.
    parent
        Parent widget.
    """

    def __init__(self, viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Rebuild the list, keeping the current choice while that layer exists.

        ``currentIndexChanged`` is emitted only when the choice changes, so that adding a
        result layer does not reset the widget's other settings.
        """
        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        index = names.index(current) if current in names else (len(names) - 1)
        self.setCurrentIndex(index)
        self.blockSignals(False)
        if self.currentText() != current or not names:
            self.currentIndexChanged.emit(index)

    def layer(self) -> Image | None:
        """The chosen image layer, or None.

        Returns
        -------
        The layer.
        """
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def select(self, name: str) -> None:
        """Choose the layer called ``name``.

        Parameters
        ----------
        name
            Its name; refused when no image layer has it.
        """
        index = self.findText(name)
        if index < 0:
            raise ValueError(f"No image layer called {name!r}.")
        self.setCurrentIndex(index)

    def disconnect_viewer(self) -> None:
        """Stop following the viewer (the widget is closing)."""
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.disconnect(self.refresh)


def layer_kwargs(source: Image, data: np.ndarray) -> dict:
    """Keyword arguments of ``viewer.add_image`` that lay a result over ``source``.

    Parameters
    ----------
    source
        The input layer.
    data
        The result (the input's shape).

    Returns
    -------
    Placement (scale, translate, ...) always; display settings (contrast limits, ...) when
    the result has the input's shape, so both show at the same contrast.
    """
    kwargs = {name: getattr(source, name) for name in PLACEMENT if hasattr(source, name)}
    if "affine" in kwargs:
        kwargs["affine"] = kwargs["affine"].affine_matrix
    if data.shape == tuple(source.data.shape):
        kwargs.update({name: getattr(source, name) for name in DISPLAY if hasattr(source, name)})
    return kwargs


def add_result(viewer, source: Image, data: np.ndarray, suffix: str) -> Image:
    """Add ``data`` as a new image layer over ``source``, named after it.

    Parameters
    ----------
    viewer
        The napari viewer.
    source
        The input layer.
    data
        The result.
    suffix
        Appended to the input's name, e.g. ``"Noise2Self nl_means"``.

    Returns
    -------
    The new layer.
    """
    return viewer.add_image(data, name=f"{source.name} ({suffix})", **layer_kwargs(source, data))


class LayoutChoice:
    """How a widget's layer is read (its axes): the layouts offered and the one chosen.

    Mixed into the widgets: they hold ``self._layouts`` (from
    :func:`~sc_noise2self.napari._core.layouts_for`) and a ``self.layout_box`` combo box.
    """

    _layouts: list
    layout_box: QComboBox

    def selected_layout(self):
        """The axes chosen for the layer.

        Returns
        -------
        The :class:`~sc_noise2self.napari._core.Layout`, or None without a layer.
        """
        index = self.layout_box.currentIndex()
        return self._layouts[index] if 0 <= index < len(self._layouts) else None

    def select_layout(self, label: str) -> None:
        """Choose the axes by the label shown (e.g. ``"stack of 2D images (t or z, y, x)"``).

        Parameters
        ----------
        label
            One of the labels in the axes box.
        """
        index = self.layout_box.findText(label)
        if index < 0:
            raise ValueError(f"{label!r} does not fit this layer; choose one of "
                             f"{[layout.label for layout in self._layouts]}.")
        self.layout_box.setCurrentIndex(index)


class LossCanvas(FigureCanvasQTAgg):
    """A matplotlib figure inside the widget, redrawn by the widget's results.

    Parameters
    ----------
    n_axes
        Panels, one above the other (a dock widget is narrow).
    height
        Height of one panel in inches.
    """

    def __init__(self, n_axes: int = 1, height: float = 2.5) -> None:
        self.figure = Figure(figsize=(4.0, height * n_axes), layout="constrained")
        super().__init__(self.figure)
        self.axes = [self.figure.add_subplot(n_axes, 1, i + 1) for i in range(n_axes)]
        self.setMinimumHeight(int(height * n_axes * 80))

    def clear(self) -> None:
        """Empty every panel."""
        for ax in self.axes:
            ax.clear()

    def save(self, path) -> None:
        """Write the figure as a PNG.

        Parameters
        ----------
        path
            File to write.
        """
        self.figure.savefig(path, dpi=100)
