"""napari plugin: calibrate classical denoisers and train Noise2Self CNNs on image layers.

napari finds it through the ``napari.manifest`` entry point (``napari.yaml`` here), which
names two dock widgets, "Noise2Self: calibrate" (:mod:`._calibrate`) and "Noise2Self: train
CNN" (:mod:`._train`), and sample images (:mod:`._samples`). Their computations live in
:mod:`._core`, free of Qt, and are re-exported here; importing this package imports neither
napari nor Qt (the widget modules do, and napari loads them only when they are opened).
Install with ``pip install "sc-noise2self[napari]"``.
"""

from ._core import (
    CalibrationRun,
    Layout,
    Progress,
    calibration_steps,
    device_report,
    layouts_for,
    method_choices,
    predict,
    prediction_steps,
    run_calibration,
    train_model,
)

__all__ = [
    "CalibrationRun",
    "Layout",
    "Progress",
    "calibration_steps",
    "device_report",
    "layouts_for",
    "method_choices",
    "predict",
    "prediction_steps",
    "run_calibration",
    "train_model",
]
