"""The "Noise2Self: calibrate" widget: denoisers chosen by the J-invariant loss, a UNet too."""

from __future__ import annotations

import importlib.util

import napari
import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._core import CalibrationRun, Layout, Progress, calibration_steps, layouts_for, method_choices
from ._qt import LayerPicker, LayoutChoice, LossCanvas, add_result


class CalibrateWidget(LayoutChoice, QWidget):
    """Calibrate classical denoisers on an image layer and add the denoised layer.

    The computation (:func:`~sc_noise2self.napari._core.calibration_steps`) runs in a napari
    thread worker; Cancel stops it between two methods (or two planes of a stack).

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: GeneratorWorker | None = None
        self.result: CalibrationRun | None = None
        self.result_layer = None
        self._source = None
        self._layouts: list[Layout] = []

        self.layer_picker = LayerPicker(napari_viewer, self)
        self.layout_box = QComboBox(self)
        self.method_box = QComboBox(self)
        self.mix_box = QCheckBox("mix with the input (optimal weight)", self)
        self.mix_box.setChecked(True)
        self.budget_box = QDoubleSpinBox(self)
        self.budget_box.setRange(0, 3600)  # Cancel waits for the budgeted choice
        self.budget_box.setDecimals(0)
        self.budget_box.setSingleStep(30)
        self.budget_box.setSuffix(" s")
        self.budget_box.setSpecialValueText("off: classical methods only")
        self.budget_box.setToolTip(
            "With 'auto': seconds for the classical methods and a masked UNet together; the "
            "lowest loss on the same held-out pixels wins (needs torch: the [torch] extra)."
        )
        self.run_button = QPushButton("Calibrate and denoise", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.status = QLabel("", self)
        self.summary = QLabel("", self)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.summary.setWordWrap(True)
        self.canvas = LossCanvas(n_axes=2)

        form = QFormLayout()
        form.addRow("image", self.layer_picker)
        form.addRow("axes", self.layout_box)
        form.addRow("method", self.method_box)
        form.addRow("CNN time budget", self.budget_box)
        form.addRow(self.mix_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addWidget(self.summary)
        column.addWidget(self.canvas)
        column.addStretch()

        self.layer_picker.currentIndexChanged.connect(self._layer_changed)
        self.layout_box.currentIndexChanged.connect(self._layout_changed)
        self.method_box.currentTextChanged.connect(self._method_changed)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._layer_changed()

    # -- choices ------------------------------------------------------------------------

    def _layer_changed(self, *_) -> None:
        layer = self.layer_picker.layer()
        self._layouts = [] if layer is None else layouts_for(layer.data.shape, layer.rgb)
        # One update of the method box, after the new layouts are in (it keeps the method).
        self.layout_box.blockSignals(True)
        self.layout_box.clear()
        self.layout_box.addItems([layout.label for layout in self._layouts])
        self.layout_box.blockSignals(False)
        self._layout_changed()
        self.run_button.setEnabled(bool(self._layouts) and self.worker is None)
        if layer is not None and not self._layouts:
            self.status.setText(f"{layer.name}: shape {layer.data.shape} is not 2D or 3D")

    def _layout_changed(self, *_) -> None:
        layout = self.selected_layout()
        layer = self.layer_picker.layer()
        current = self.method_box.currentText()
        self.method_box.clear()
        if layout is not None and layer is not None:
            names = method_choices(layout.n_spatial(layer.data.ndim))
            self.method_box.addItems(names)
            if current in names:
                self.method_box.setCurrentText(current)
        self._method_changed()

    def _method_changed(self, *_) -> None:
        # The budget buys a UNet beside the classical methods: "auto" only, torch installed.
        self.budget_box.setEnabled(self.method_box.currentText() == "auto"
                                   and importlib.util.find_spec("torch") is not None)

    def max_time(self) -> float | None:
        """The time budget for ``auto`` with a UNet, or None (classical methods only)."""
        return (self.budget_box.value() or None) if self.budget_box.isEnabled() else None

    # -- running --------------------------------------------------------------------------

    def run(self) -> GeneratorWorker | None:
        """Start calibrating the chosen layer in a thread worker.

        Returns
        -------
        The started worker, or None when there is nothing to run (or a run is going on).
        """
        layer, layout = self.layer_picker.layer(), self.selected_layout()
        if layer is None or layout is None or self.worker is not None:
            return None
        if layer.multiscale:
            self.status.setText("multiscale layers are not supported: open one level")
            return None
        self._source = layer
        self.result = None
        self.worker = create_worker(
            calibration_steps, np.asarray(layer.data), layout, self.method_box.currentText(),
            self.mix_box.isChecked(), True, self.max_time(), _start_thread=False,
            # The error shows in the widget (and as napari's notification), not re-raised.
            _connect={"errored": self._on_error},
        )  # fmt: skip
        self.worker.yielded.connect(self._on_progress)
        self.worker.returned.connect(self._on_result)
        self.worker.aborted.connect(lambda: self.status.setText("cancelled"))
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText("starting")
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        """Stop the run at its next step (between two methods or two planes)."""
        if self.worker is not None:
            self.status.setText("cancelling after the current step")
            self.worker.quit()

    def closeEvent(self, event) -> None:
        """Cancel a run when the widget closes (napari removes the dock)."""
        self.cancel()
        self.layer_picker.disconnect_viewer()
        super().closeEvent(event)

    def _on_progress(self, progress: Progress) -> None:
        self.progress.setMaximum(progress.total)
        self.progress.setValue(progress.done)
        self.status.setText(progress.message)

    def _on_error(self, error: Exception) -> None:
        self.status.setText(f"failed: {type(error).__name__}: {error}")

    def _on_finished(self) -> None:
        self.worker = None
        self.cancel_button.setEnabled(False)
        self.run_button.setEnabled(bool(self._layouts))

    def _on_result(self, result: CalibrationRun) -> None:
        self.result = result
        method = result.method
        source = self._source
        if source is not None and source in self.viewer.layers:
            self.result_layer = add_result(self.viewer, source, result.denoised,
                                           f"Noise2Self {method}")
        self.summary.setText(result.summary())
        self.status.setText("done")
        self.plot(result)

    def plot(self, result: CalibrationRun) -> None:
        """Draw the chosen classical method's loss curve, and the candidates' losses beside it.

        The candidates are every classical method's best loss on the image, or, when a UNet
        was trained within a time budget, each finalist's expected error on the held-out band.

        Parameters
        ----------
        result
            A finished run.
        """
        self.canvas.clear()
        curve, methods = self.canvas.axes
        result.calibration.plot(ax=curve)
        curve.set_title(f"{result.calibration.method}: loss per parameter", fontsize=9)
        curve.legend(frameon=False, fontsize=7)
        if result.choice is not None and result.choice.model is not None:
            rows = [row for row in result.choice.table if row["expected_error"] is not None]
            names = [row["method"] for row in rows]
            losses = [row["expected_error"] for row in rows]
            methods.set_title("held-out band: expected MSE", fontsize=9)
            baseline = None
        else:
            names = list(result.candidates)
            losses = [result.candidates[name] for name in names]
            methods.set_title("best loss per method", fontsize=9)
            baseline = result.calibration.baseline_loss
        colours = ["tab:red" if name == result.method else "tab:blue" for name in names]
        methods.bar(names, losses, color=colours)
        methods.axhline(result.noise_variance, color="grey", ls="--", label="noise variance")
        if baseline is not None:
            methods.axhline(baseline, color="tab:orange", ls=":", label="neighbour mean")
        # The losses differ by a small fraction of the noise variance: zoom on the tops.
        low = min([*losses, result.noise_variance])
        high = max([*losses, baseline or 0.0])
        span = (high - low) or max(abs(high), 1e-12)
        methods.set_ylim(low - 0.05 * span, high + 0.1 * span)
        methods.tick_params(axis="x", labelrotation=45, labelsize=7)
        methods.legend(frameon=False, fontsize=7)
        self.canvas.draw_idle()
