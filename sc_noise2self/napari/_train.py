"""The "Noise2Self: train CNN" widget: a masked UNet or DnCNN trained on the layer itself."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import napari
import numpy as np
from napari.qt.threading import FunctionWorker, GeneratorWorker, create_worker
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .. import image
from ._core import (
    DEVICE_CHOICES,
    MODEL_CHOICES,
    Layout,
    Progress,
    device_report,
    layouts_for,
    prediction_steps,
    train_model,
)
from ._qt import LayerPicker, LayoutChoice, LossCanvas, add_result

PROGRESS_STEPS = 1000  # resolution of the progress bar, which follows steps or time


def _train_caught(*args, **kwargs):
    """:func:`train_model`, returning the model and the messages of its warnings."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        model = train_model(*args, **kwargs)
    messages = list(dict.fromkeys(str(r.message) for r in records))
    return model, messages


class TrainWidget(LayoutChoice, QWidget):
    """Train a Noise2Self CNN on an image layer, watch its loss, predict, save and load.

    Training runs in a napari thread worker; after every epoch the training thread sends
    the history through :attr:`epoch_done` (a queued Qt signal) to redraw the curve. Stop
    asks the epoch callback to end training: the best weights so far are kept.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).

    Attributes
    ----------
    model
        The trained or loaded :class:`~sc_noise2self.image.Noise2SelfModel`, or None.
    options
        Other keyword arguments of :func:`~sc_noise2self.image.train` (e.g.
        ``{"model_kwargs": {"depth": 8}}``), for scripts and tests.
    """

    epoch_done = Signal(object)  # a plain dict, passed as it is (no QVariant conversion)

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model = None
        self.options: dict = {}
        self.worker: FunctionWorker | None = None
        self.predict_worker: GeneratorWorker | None = None
        self.result_layer = None
        self.history: dict = {}
        self.warnings: list[str] = []
        self._stop = threading.Event()
        self._layouts: list[Layout] = []
        self._budget: tuple[int | None, float | None] = (None, None)
        self._sources: dict[str, object] = {}

        self.layer_picker = LayerPicker(napari_viewer, self)
        self.layout_box = QComboBox(self)
        self.model_box = QComboBox(self)
        self.model_box.addItems(list(MODEL_CHOICES))
        self.time_box = QDoubleSpinBox(self)
        self.time_box.setRange(0, 7 * 24 * 3600)
        self.time_box.setDecimals(0)
        self.time_box.setValue(120)
        self.time_box.setSpecialValueText("no limit")
        self.time_box.setSuffix(" s")
        self.steps_box = QSpinBox(self)
        self.steps_box.setRange(0, 10_000_000)
        self.steps_box.setSpecialValueText("no limit")
        self.epoch_box = QSpinBox(self)
        self.epoch_box.setRange(1, 100_000)
        self.epoch_box.setValue(50)
        # Validation, the curve's points and Stop all happen at the end of an epoch.
        self.epoch_box.setToolTip("Steps between validations; the curve updates and Stop "
                                  "takes effect once per epoch.")
        self.device_box = QComboBox(self)
        self.device_box.addItems(list(DEVICE_CHOICES))
        self.device_label = QLabel(device_report(), self)
        self.device_label.setWordWrap(True)
        self.train_button = QPushButton("Train", self)
        self.stop_button = QPushButton("Stop (keep best)", self)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.progress.setMaximum(PROGRESS_STEPS)
        self.status = QLabel("no model", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.canvas = LossCanvas(n_axes=1)

        self.predict_picker = LayerPicker(napari_viewer, self)
        self.predict_button = QPushButton("Predict", self)
        self.save_button = QPushButton("Save model...", self)
        self.load_button = QPushButton("Load model...", self)
        self.export_button = QPushButton("Export bioimage.io...", self)
        self.export_button.setToolTip("Write a bioimage.io model package (.zip) for Fiji, "
                                      "ilastik or BiaPy; its test input is cut from the "
                                      "image chosen above.")

        form = QFormLayout()
        form.addRow("image", self.layer_picker)
        form.addRow("axes", self.layout_box)
        form.addRow("model", self.model_box)
        form.addRow("time budget", self.time_box)
        form.addRow("step budget", self.steps_box)
        form.addRow("steps per epoch", self.epoch_box)
        form.addRow("device", self.device_box)
        form.addRow(self.device_label)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        use = QGroupBox("use the model", self)
        use_form = QFormLayout(use)
        use_form.addRow("image", self.predict_picker)
        files = QHBoxLayout()
        for button in (self.predict_button, self.save_button, self.load_button):
            files.addWidget(button)
        use_form.addRow(files)
        use_form.addRow(self.export_button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addWidget(self.canvas)
        column.addWidget(use)
        column.addStretch()

        self.layer_picker.currentIndexChanged.connect(self._layer_changed)
        self.train_button.clicked.connect(self.train)
        self.stop_button.clicked.connect(self.stop)
        self.predict_button.clicked.connect(self.predict)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        self.export_button.clicked.connect(self._export_dialog)
        self.epoch_done.connect(self._on_epoch)
        self._layer_changed()
        self._update_buttons()

    # -- choices ------------------------------------------------------------------------

    def _layer_changed(self, *_) -> None:
        layer = self.layer_picker.layer()
        self._layouts = [] if layer is None else layouts_for(layer.data.shape, layer.rgb)
        self.layout_box.clear()
        self.layout_box.addItems([layout.label for layout in self._layouts])
        self._update_buttons()

    def _update_buttons(self) -> None:
        training = self.worker is not None
        self.train_button.setEnabled(not training and bool(self._layouts))
        self.stop_button.setEnabled(training)
        idle = not training and self.predict_worker is None
        self.predict_button.setEnabled(idle and self.model is not None)
        self.save_button.setEnabled(idle and self.model is not None)
        self.load_button.setEnabled(idle)
        self.export_button.setEnabled(idle and self.model is not None)

    # -- training -------------------------------------------------------------------------

    def train(self) -> FunctionWorker | None:
        """Start training on the chosen layer in a thread worker.

        Returns
        -------
        The started worker, or None when there is nothing to train (or training is on).
        """
        layer, layout = self.layer_picker.layer(), self.selected_layout()
        if layer is None or layout is None or self.worker is not None:
            return None
        steps = self.steps_box.value() or None
        max_time = self.time_box.value() or None
        self._budget = (steps, max_time)
        self._stop.clear()
        self.history, self.warnings = {}, []
        self.worker = create_worker(
            _train_caught, np.asarray(layer.data), layout, self.model_box.currentText(),
            max_time=max_time, steps=steps, device=self.device_box.currentText(),
            stop=self._stop, on_epoch=self.epoch_done.emit,
            steps_per_epoch=self.epoch_box.value(), _start_thread=False,
            # The error shows in the widget (and as napari's notification), not re-raised.
            _connect={"errored": self._on_error}, **self.options,
        )  # fmt: skip
        self.worker.returned.connect(self._on_trained)
        self.worker.finished.connect(self._on_training_finished)
        self.progress.setValue(0)
        self.status.setText(f"training a {self.model_box.currentText()} on {layer.name}")
        self.worker.start()
        self._update_buttons()
        return self.worker

    def stop(self) -> None:
        """End training after the current epoch, keeping the best weights so far."""
        if self.worker is not None:
            self._stop.set()
            self.status.setText("stopping at the end of this epoch (the best model is kept)")

    def _on_epoch(self, history: dict) -> None:
        self.history = history
        steps, max_time = self._budget
        done = [history["step"][-1] / steps if steps else 0.0,
                history["time"][-1] / max_time if max_time else 0.0]  # fmt: skip
        self.progress.setValue(int(PROGRESS_STEPS * min(1.0, max(done))))
        if not self._stop.is_set():
            self.status.setText(f"epoch {history['epoch'][-1]}, step {history['step'][-1]}: "
                                f"held-out loss {history['val_loss'][-1]:.4g}")
        self.plot(history)

    def _on_trained(self, result) -> None:
        self.model, self.warnings = result
        self.history = self.model.history
        if self.history.get("stopped") != "callback":  # a stopped run keeps its real progress
            self.progress.setValue(PROGRESS_STEPS)
        self.status.setText(self.describe())
        self.plot(self.history)

    def _on_error(self, error: Exception) -> None:
        self.status.setText(f"failed: {type(error).__name__}: {error}")

    def _on_training_finished(self) -> None:
        self.worker = None
        self._update_buttons()

    def describe(self) -> str:
        """The model in a few lines: architecture, how training ended, losses, warnings.

        Returns
        -------
        Plain text ("no model" without one).
        """
        model = self.model
        if model is None:
            return "no model"
        h = model.history
        steps = h["step"][-1] if h.get("step") else 0
        lines = [f"{model.config.model} on {model.device.type}: {len(h.get('epoch', []))} "
                 f"epochs, {steps} steps, stopped by {h.get('stopped', '?')}"]
        if model.val_loss is not None:
            baseline = model.baseline_loss
            lines.append(f"best held-out loss {model.val_loss:.4g} (epoch {h.get('best_epoch')})"
                         + (f"; neighbour mean {baseline:.4g}" if baseline is not None else ""))
        lines += [f"warning: {message}" for message in self.warnings]
        return "\n".join(lines)

    def plot(self, history: dict) -> None:
        """Draw the training and held-out losses against steps.

        Parameters
        ----------
        history
            A model's ``history`` (or a snapshot of it).
        """
        self.canvas.clear()
        ax = self.canvas.axes[0]
        if history.get("step"):
            ax.plot(history["step"], history["train_loss"], label="training (masked)")
            ax.plot(history["step"], history["val_loss"], "o-", ms=3, label="held-out")
            baseline = history.get("baseline_loss")
            if baseline is not None and np.isfinite(baseline):
                ax.axhline(baseline, color="tab:orange", ls=":", label="neighbour mean")
            best = history.get("best_epoch")
            if best in history["epoch"]:
                i = history["epoch"].index(best)
                ax.plot(history["step"][i], history["val_loss"][i], "r*", ms=12, label="best")
            ax.set_yscale("log")
            ax.legend(frameon=False, fontsize=7)
        ax.set_xlabel("step")
        ax.set_ylabel("self-supervised loss")
        self.canvas.draw_idle()

    def closeEvent(self, event) -> None:
        """Stop training and prediction when the widget closes (napari removes the dock)."""
        self._stop.set()
        if self.predict_worker is not None:
            self.predict_worker.quit()
        for picker in (self.layer_picker, self.predict_picker):
            picker.disconnect_viewer()
        super().closeEvent(event)

    # -- using the model ------------------------------------------------------------------

    def predict(self) -> GeneratorWorker | None:
        """Denoise the layer chosen under "use the model" in a thread worker.

        Returns
        -------
        The started worker, or None without a model or a layer.
        """
        layer = self.predict_picker.layer()
        if layer is None or self.model is None or self.predict_worker is not None:
            return None
        self._sources["predict"] = layer
        self.predict_worker = create_worker(prediction_steps, self.model,
                                            np.asarray(layer.data), _start_thread=False,
                                            _connect={"errored": self._on_error})
        self.predict_worker.yielded.connect(self._on_predict_progress)
        self.predict_worker.returned.connect(self._on_predicted)
        self.predict_worker.finished.connect(self._on_predict_finished)
        self.predict_worker.start()
        self._update_buttons()
        return self.predict_worker

    def _on_predict_progress(self, progress: Progress) -> None:
        self.status.setText(progress.message)

    def _on_predicted(self, denoised: np.ndarray) -> None:
        source = self._sources.pop("predict", None)
        if source is not None and source in self.viewer.layers:
            self.result_layer = add_result(self.viewer, source, denoised,
                                           f"Noise2Self {self.model.config.model}")
        self.status.setText(self.describe())

    def _on_predict_finished(self) -> None:
        self.predict_worker = None
        self._update_buttons()

    def save_model(self, path: str | Path) -> Path | None:
        """Write the model to ``path``, replacing the file if it exists.

        Parameters
        ----------
        path
            The file (``.pt`` by convention).

        Returns
        -------
        The path written, or None without a model.
        """
        if self.model is None:
            return None
        written = self.model.save(path, overwrite=True)  # the dialog has asked already
        self.status.setText(f"saved {written}")
        return written

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the Noise2Self model",
                                              "noise2self.pt", "PyTorch model (*.pt)")
        if path:
            try:
                self.save_model(path)
            except OSError as error:
                self.status.setText(f"could not save: {error}")

    def export_bioimageio(self, path: str | Path, authors: list[str]) -> Path | None:
        """Write the model as a bioimage.io package, its test input from the "use" image.

        Parameters
        ----------
        path
            The ``.zip``, replaced if it exists (the dialog has asked already).
        authors
            At least one name.

        Returns
        -------
        The path written, or None without a model or an image.
        """
        layer = self.predict_picker.layer()
        if self.model is None or layer is None:
            return None
        sample = np.asarray(layer.data)
        layout = self.model.layout
        if sample.ndim == layout.image_ndim + 1:  # a stack: its middle image
            sample = sample[len(sample) // 2]
        spatial = [float(s) for s in layer.scale[-layout.n_spatial:]]
        pixel_size = spatial if layout.channel_axis is None and set(spatial) != {1.0} else None
        written = self.model.export_bioimageio(path, sample=sample, authors=authors,
                                               pixel_size=pixel_size, overwrite=True)
        self.status.setText(f"exported {written}")
        return written

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export a bioimage.io model package",
                                              "noise2self.zip", "bioimage.io package (*.zip)")
        if not path:
            return
        names, given = QInputDialog.getText(self, "Authors", "Authors, comma-separated:")
        if not given:
            return
        try:
            self.export_bioimageio(path, [n.strip() for n in names.split(",") if n.strip()])
        except (OSError, ValueError, ImportError) as error:  # no author, no extra, bad image
            self.status.setText(f"could not export: {error}")

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a Noise2Self model", "",
            "PyTorch model (*.pt);;bioimage.io package (*.zip);;All files (*)")
        if path:
            try:
                self.load_model(path)
            except (OSError, ValueError, RuntimeError) as error:  # not a model, no such device
                self.status.setText(f"could not load: {error}")

    def load_model(self, path: str | Path):
        """Read a model saved by :meth:`save_model` (or ``Noise2SelfModel.save``), or exported.

        Parameters
        ----------
        path
            A ``.pt`` file written by this widget, ``image train --save-model`` or
            ``Noise2SelfModel.save``; or a bioimage.io ``.zip`` that this package exported.

        Returns
        -------
        The :class:`~sc_noise2self.image.Noise2SelfModel` (also kept as ``self.model``), on
        the device chosen in the widget.
        """
        self.model = image.Noise2SelfModel.load(path, device=self.device_box.currentText())
        self.warnings = []
        self.history = self.model.history
        self.status.setText(f"loaded {path}\n{self.describe()}")
        self.plot(self.history)
        self._update_buttons()
        return self.model
