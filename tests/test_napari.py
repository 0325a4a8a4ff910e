"""The napari plugin (issue 18): its computations, manifest, samples and widgets.

The computations (``sc_noise2self.napari._core``) need no napari and always run. The widget
tests need napari, pytest-qt and a display with OpenGL (vispy draws the canvas): run them
under Xvfb, ``xvfb-run -a -s "-screen 0 1280x1024x24" python -m pytest tests/test_napari.py
-p no:xdist``; without a display they are skipped. Set ``SC_NOISE2SELF_SCREENSHOTS=1`` to
write the widget screenshots into ``tutorials/images/`` (tutorial 07 shows them).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from sc_noise2self import image
from sc_noise2self.napari import (
    Layout,
    layouts_for,
    method_choices,
    predict,
    run_calibration,
    train_model,
)
from sc_noise2self.napari import _samples as samples

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "sc_noise2self" / "napari" / "napari.yaml"
SCREENSHOTS = ROOT / "tutorials" / "images"
# A small CNN and no compilation: a few steps take well under a second on one CPU thread.
TINY = {"model_kwargs": {"depth": 4, "features": 16}, "compile": False}
WAIT_MS = 60_000


def noisy_crop(size: int = 64, seed: int = 0) -> np.ndarray:
    from skimage import data

    clean = data.camera()[200:200 + size, 200:200 + size] / 255.0
    return (clean + np.random.default_rng(seed).normal(0, 0.1, clean.shape)).astype(np.float32)


def noisy_stack() -> np.ndarray:
    return np.stack([noisy_crop(48, seed) for seed in range(4)])


# -- the computations, without Qt --------------------------------------------------------

def test_layouts_name_every_axis_and_fit_the_shape():
    assert [x.label for x in layouts_for((64, 64))] == ["2D image (y, x)"]
    labels = [x.label for x in layouts_for((4, 48, 48))]
    assert labels[0] == "3D volume (z, y, x)" and "stack of 2D images (t or z, y, x)" in labels
    for shape in [(8, 8), (3, 8, 8), (2, 3, 8, 8), (2, 3, 4, 8, 8)]:
        for layout in layouts_for(shape):
            assert layout.n_spatial(len(shape)) in (2, 3), layout
            assert layout.label.split("(")[-1].count(",") + 1 == len(shape), layout
    rgb = layouts_for((32, 32, 3), rgb=True)
    assert [(x.channel_axis, x.stacked) for x in rgb] == [(2, False)]
    assert layouts_for((8,)) == [] and layouts_for((2, 2, 2, 2, 2, 2)) == []
    stack = Layout("t, c, y, x", channel_axis=1, stacked=True)
    assert stack.image_channel_axis() == 0 and stack.n_spatial(4) == 2
    assert method_choices(2)[0] == "auto" and "tv" in method_choices(2)
    assert "bilateral" not in method_choices(3)  # 2D only


def test_calibration_chooses_as_image_denoise_does():
    x = noisy_crop()
    run = run_calibration(x, layouts_for(x.shape)[0], "auto", mix=True)
    expected, calibration = image.denoise(x, "auto", return_calibration=True)
    np.testing.assert_allclose(run.denoised, expected, rtol=1e-6, atol=1e-7)
    assert run.calibration.method == calibration.method
    assert run.candidates.keys() == calibration.candidates.keys()
    assert run.noise_variance == pytest.approx(0.01, rel=0.3)  # sigma 0.1
    text = run.summary()
    assert calibration.method in text and "noise variance" in text and "mix weight" in text
    # Issue 27: a best at the grid's edge is said in the widget too.
    for name, end in calibration.edge_parameters.items():
        assert f"note: the best {name} is the {end} value of the grid" in text
    from sc_noise2self.napari._core import CalibrationRun

    with pytest.warns(image.GridEdgeWarning):
        at_edge = image.calibrate(x, "gaussian", {"sigma": [0.1, 0.2]}, progress=False)
    summary = CalibrationRun(x, at_edge, {}, 0.01, None, [], 0.0).summary()
    assert "note: the best sigma is the highest value of the grid" in summary


def test_the_calibration_widget_hides_the_lines_that_image_denoise_hides():
    """Noise correlated along rows: the widget's run finds it, hides whole rows, says so in
    its summary, and denoises as image.denoise does."""
    from scipy import ndimage as ndi

    white = noisy_crop(size=128)
    rows = ndi.correlate1d(np.random.default_rng(4).normal(0, 0.1, white.shape),
                           np.ones(5) / np.sqrt(5), axis=1)  # correlated over 5 pixels
    x = (white + rows).astype(np.float32)
    run = run_calibration(x, layouts_for(x.shape)[0], "gaussian", mix=True)
    with pytest.warns(image.StructuredNoiseWarning):
        expected, calibration = image.denoise(x, "gaussian", return_calibration=True)
    assert calibration.settings["mask"] == "rows" and run.calibration.settings["mask"] == "rows"
    np.testing.assert_allclose(run.denoised, expected, rtol=1e-6, atol=1e-7)
    text = run.summary()
    assert "mask: rows" in text and "warning: noise correlated along x" in text


def test_a_stack_is_calibrated_on_its_middle_plane_and_denoised_plane_by_plane():
    stack = noisy_stack()
    layout = next(x for x in layouts_for(stack.shape) if x.stacked)
    run = run_calibration(stack, layout, "gaussian", mix=False)
    assert run.denoised.shape == stack.shape and run.calibrated_on == 2
    _, middle = image.denoise(stack[2], "gaussian", return_calibration=True,
                              noise_variance=run.noise_variance)
    assert run.calibration.best_params == middle.best_params
    for plane, out in zip(stack, run.denoised, strict=True):
        np.testing.assert_allclose(out, run.calibration.denoise(plane, mix=False), atol=1e-7)
    with pytest.raises(ValueError, match="does not fit"):
        run_calibration(stack[0], layout)


@pytest.fixture
def short_budget(monkeypatch):
    """A CNN trains within a few seconds (the benchmarks run the real constants)."""
    pytest.importorskip("torch")
    from sc_noise2self.image import budget

    monkeypatch.setattr(budget, "CNN_MIN_SECONDS", 1.0)
    monkeypatch.setattr(budget, "CLASSICAL_SHARE", 0.9)
    return budget


def test_a_budgeted_unet_that_wins_denoises_every_plane(short_budget, monkeypatch):
    """Issue 27: with a time budget the widget's run chooses as ``image.denoise(x, "auto",
    max_time=T)`` does, says the table, and the winner denoises every plane of a stack.

    Mutation: denoise the other planes with the classical calibration (as the run without a
    budget does): they then differ from the UNet's prediction.
    """
    from sc_noise2self.image.referee import neighbour_mean

    losses = iter([0.02, 0.012])  # the classical finalist's band loss, then the UNet's
    monkeypatch.setattr(short_budget, "_band_loss", lambda prediction, band: next(losses))
    stack = noisy_stack()[:3]
    layout = next(x for x in layouts_for(stack.shape) if x.stacked)
    run = run_calibration(stack, layout, "auto", max_time=6.0)
    assert run.method == "unet" and run.choice.model is not None
    assert run.calibration.method in run.candidates  # the classical finalist is kept
    model = run.choice.model
    for plane, out in zip(stack, run.denoised, strict=True):
        lost = model.val_loss >= model.baseline_loss  # the referee's fallback
        expected = neighbour_mean(plane) if lost else model.predict(plane, augment=True)
        np.testing.assert_allclose(out, expected, atol=1e-5)
    text = run.summary()
    assert text.startswith("method: unet\nbest classical method: ")
    assert "within the time budget: unet wins" in text
    assert "  unet: " in text and "held-out loss 0.012" in text


def test_a_budget_too_short_for_a_unet_keeps_the_classical_choice_and_says_so(short_budget):
    x = noisy_crop()
    run = run_calibration(x, layouts_for(x.shape)[0], "auto", max_time=1e-3)
    assert run.choice.model is None and run.method == run.calibration.method
    np.testing.assert_allclose(run.denoised, run.calibration.denoise(x), atol=1e-7)
    assert "no time was left to train a UNet" in run.summary()
    with pytest.raises(TypeError, match="max_time applies to method='auto'"):
        run_calibration(x, layouts_for(x.shape)[0], "tv", max_time=10.0)
    # A constant layer is returned as the classical path returns it (review: it raised).
    flat = np.full((40, 40), 7.0, np.float32)
    with pytest.warns(UserWarning, match="constant"):
        run = run_calibration(flat, layouts_for(flat.shape)[0], "auto", max_time=5.0)
    np.testing.assert_array_equal(run.denoised, flat)


def test_the_reader_gives_layers_their_scale_units_and_channel_names(tmp_path):
    # Issue 27: napari opened our OME-TIFF at unit scale: the plugin had no reader.
    from sc_noise2self.napari._reader import get_reader

    pixels = (np.random.default_rng(0).random((2, 5, 32, 40)) * 200).astype(np.uint8)
    written = image.write(tmp_path / "cells.ome.tif", image.ImageData(
        pixels, "CZYX", (1.0, 0.5, 0.2, 0.1), {"Z": "micrometer", "Y": "micrometer",
                                              "X": "micrometer"}, ("dapi", "actin")))
    assert get_reader(str(tmp_path / "notes.txt")) is None
    [(data, kwargs, kind)] = get_reader(str(written))(str(written))
    assert kind == "image" and data.shape == pixels.shape
    assert kwargs["channel_axis"] == 0 and kwargs["name"] == ["dapi", "actin"]
    assert kwargs["scale"] == [0.5, 0.2, 0.1] and kwargs["units"] == ["micrometer"] * 3
    np.testing.assert_array_equal(np.asarray(data), pixels)


def test_integer_layers_stay_in_their_units():
    x = (noisy_crop().clip(0, 1) * 1000).astype(np.uint16)
    run = run_calibration(x, layouts_for(x.shape)[0], "gaussian")
    assert run.denoised.dtype.kind == "f" and 100 < run.denoised.mean() < 1000


def test_training_stops_when_asked_and_keeps_the_best_model():
    x = noisy_crop()
    stop, seen = threading.Event(), []

    def on_epoch(history):
        seen.append(history)
        if len(seen) == 2:
            stop.set()

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = train_model(x, layouts_for(x.shape)[0], "dncnn", max_time=300, device="cpu",
                            stop=stop, on_epoch=on_epoch, steps_per_epoch=5, **TINY)
    assert time.perf_counter() - started < 60
    assert model.history["stopped"] == "callback" and model.history["epoch"] == [1, 2]
    assert [h["epoch"] for h in seen] == [[1], [1, 2]]  # copies, not the live history
    assert predict(model, x).shape == x.shape
    assert predict(model, noisy_stack()).shape == (4, 48, 48)  # a stack of such images
    model.history["baseline_loss"] = model.val_loss * 0.5  # make it lose to the baseline
    from sc_noise2self.image.referee import neighbour_mean

    with pytest.warns(UserWarning, match="neighbour mean is shown instead"):
        np.testing.assert_allclose(predict(model, x), neighbour_mean(x), atol=1e-6)
    with pytest.warns(UserWarning, match="shown anyway"):
        np.testing.assert_allclose(predict(model, x, fallback=False), model.predict(x))
    with pytest.raises(ValueError, match="axes"):
        predict(model, np.zeros((2, 2, 16, 16)))


def test_samples_are_seeded_and_noisy():
    (camera, meta, kind), = samples.noisy_camera()
    assert kind == "image" and camera.shape == (512, 512) and meta["name"] == "noisy camera"
    from skimage import data, util

    assert np.std(camera - util.img_as_float(data.camera())) == pytest.approx(0.1, rel=0.02)
    np.testing.assert_array_equal(camera, samples.noisy_camera()[0][0])
    (blobs, meta, _), = samples.noisy_blobs_3d()
    assert blobs.ndim == 3 and meta["scale"] == (3.0, 1.0, 1.0)
    try:
        (set12, _, _), = samples.noisy_set12()
    except FileNotFoundError:  # Set12 is read from $SC_NOISE2SELF_DATA, never downloaded
        return
    assert set12.shape == (256, 256)


def test_the_manifest_validates_and_names_importable_objects():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(MANIFEST)
    assert manifest.name == "sc-noise2self"
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {"Noise2Self: calibrate", "Noise2Self: train CNN"}
    assert len(manifest.contributions.sample_data) == 3
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    for contribution in [*manifest.contributions.widgets, *manifest.contributions.sample_data]:
        assert contribution.command in commands
    has_qt = importlib.util.find_spec("napari") is not None
    for python_name in commands.values():
        module, _, name = python_name.partition(":")
        if module.endswith("_samples") or has_qt:
            assert callable(getattr(importlib.import_module(module), name)), python_name


def test_importing_the_plugin_package_imports_neither_napari_nor_qt():
    import subprocess

    code = ("import sys, sc_noise2self.napari; "
            "print(sorted(m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6', 'torch') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]"


# -- the widgets in a viewer ------------------------------------------------------------

def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@pytest.fixture
def viewer(request):
    """A hidden napari viewer; skips without napari, pytest-qt or a display."""
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    if not _has_display():
        pytest.skip("no display: run under xvfb-run (vispy needs OpenGL)")
    for plugin in ("napari", "pytest-qt"):  # their fixtures (absent under -p no:napari)
        if not request.config.pluginmanager.hasplugin(plugin):
            pytest.skip(f"the {plugin} pytest plugin is not loaded")
    return request.getfixturevalue("make_napari_viewer")()


@pytest.fixture
def bot(viewer, request):
    """pytest-qt's ``qtbot``, requested only once :func:`viewer` has not skipped."""
    return request.getfixturevalue("qtbot")


def calibrate_widget(viewer):
    from sc_noise2self.napari._calibrate import CalibrateWidget

    widget = CalibrateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Noise2Self: calibrate")
    return widget


def train_widget(viewer, **budget):
    from sc_noise2self.napari._train import TrainWidget

    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Noise2Self: train CNN")
    widget.options = dict(TINY)
    widget.model_box.setCurrentText("dncnn")
    widget.device_box.setCurrentText("cpu")
    widget.epoch_box.setValue(5)
    widget.time_box.setValue(budget.get("max_time", 0))
    widget.steps_box.setValue(budget.get("steps", 0))
    return widget


def test_calibrate_widget_adds_the_denoised_layer_over_its_input(viewer, bot):
    x = noisy_crop()
    source = viewer.add_image(x, name="crop", scale=(2.0, 0.5), translate=(10.0, -3.0))
    widget = calibrate_widget(viewer)
    assert widget.layer_picker.currentText() == "crop"
    widget.method_box.setCurrentText("gaussian")
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.result is not None, widget.status.text()
    layer = widget.result_layer
    assert layer is viewer.layers["crop (Noise2Self gaussian)"]
    assert layer.data.shape == x.shape
    np.testing.assert_allclose(layer.scale, source.scale)
    np.testing.assert_allclose(layer.translate, source.translate)
    np.testing.assert_allclose(layer.contrast_limits, source.contrast_limits)
    np.testing.assert_allclose(layer.data, image.denoise(x, "gaussian"), atol=1e-6)
    assert "gaussian" in widget.summary.text() and "noise variance" in widget.summary.text()
    curve, methods = widget.canvas.axes
    assert curve.lines and len(methods.patches) == 1  # one bar: one method was compared
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_calibrate_widget_on_a_stack_keeps_the_stack_and_its_scale(viewer, bot):
    stack = noisy_stack()
    viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 0.5))
    widget = calibrate_widget(viewer)
    assert widget.layout_box.currentText() == "3D volume (z, y, x)"
    widget.run()  # 4 planes are too few to estimate the noise of a volume: the error shows
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("failed: ValueError") and widget.result is None
    widget.select_layout("stack of 2D images (t or z, y, x)")
    assert widget.method_box.itemText(0) == "auto"
    widget.method_box.setCurrentText("tv")
    widget.run()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    layer = widget.result_layer
    assert layer is not None, widget.status.text()
    assert layer.data.shape == stack.shape
    np.testing.assert_allclose(layer.scale, (3.0, 1.0, 0.5))
    assert "plane 2" in widget.summary.text()
    assert widget.progress.value() == widget.progress.maximum() == 1 + 4  # 1 method, 4 planes


def test_calibrate_widget_runs_auto_with_a_unet_within_its_budget(viewer, bot, short_budget):
    """Issue 27: the budget box (``auto`` only) adds a UNet to the comparison; the summary
    holds the table and the bars show the finalists on the held-out band."""
    viewer.add_image(noisy_crop(), name="crop")
    widget = calibrate_widget(viewer)
    widget.method_box.setCurrentText("tv")
    assert not widget.budget_box.isEnabled() and widget.max_time() is None
    widget.method_box.setCurrentText("auto")
    assert widget.budget_box.isEnabled() and widget.max_time() is None  # off by default
    widget.budget_box.setValue(6)
    assert widget.max_time() == 6.0
    widget.run()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    result = widget.result
    assert result is not None and result.choice is not None, widget.status.text()
    assert "within the time budget" in widget.summary.text()
    assert "  unet: " in widget.summary.text()
    assert widget.result_layer.name == f"crop (Noise2Self {result.method})"
    _, bars = widget.canvas.axes
    assert bars.get_title() == "held-out band: expected MSE"
    assert len(bars.patches) == 2  # the classical finalist and the UNet


def test_calibrate_cancel_stops_before_the_end(viewer, bot):
    viewer.add_image(noisy_crop(128), name="crop")
    widget = calibrate_widget(viewer)
    widget.run()
    widget.cancel_button.click()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.result is None and widget.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["crop"]


def test_train_widget_trains_predicts_saves_and_loads(viewer, bot, tmp_path):
    x = noisy_crop()
    source = viewer.add_image(x, name="crop", scale=(2.0, 0.5), translate=(1.0, 2.0))
    stack = viewer.add_image(noisy_stack(), name="stack", scale=(4.0, 1.0, 1.0))
    widget = train_widget(viewer, steps=20)
    assert "cpu" in widget.device_label.text()
    assert not widget.predict_button.isEnabled()  # no model yet
    widget.layer_picker.select("crop")
    widget.train()
    assert widget.stop_button.isEnabled()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    model = widget.model
    assert model is not None, widget.status.text()
    assert model.history["stopped"] == "steps" and model.history["step"][-1] == 20
    assert len(widget.history["epoch"]) == 4 and widget.progress.value() == 1000
    assert len(widget.canvas.axes[0].lines) >= 2  # training and held-out curves

    for name, layer in (("crop", source), ("stack", stack)):  # the same layer and another
        widget.predict_picker.select(name)
        widget.predict()
        bot.waitUntil(lambda: widget.predict_worker is None, timeout=WAIT_MS)
        result = viewer.layers[f"{name} (Noise2Self dncnn)"]
        assert result.data.shape == layer.data.shape
        np.testing.assert_allclose(result.scale, layer.scale)
        np.testing.assert_allclose(result.translate, layer.translate)
    # The referee: a network that lost to the neighbour mean shows the neighbour mean.
    from sc_noise2self.image.referee import neighbour_mean

    expected = model.predict(x) if model.beats_baseline is not False else neighbour_mean(x)
    np.testing.assert_allclose(viewer.layers["crop (Noise2Self dncnn)"].data, expected,
                               atol=1e-6)

    viewer.add_image(np.zeros((2, 2, 16, 16), np.float32), name="4D")
    widget.predict_picker.select("4D")  # a 2D model cannot take (2, 2, 16, 16)
    widget.predict()
    bot.waitUntil(lambda: widget.predict_worker is None, timeout=WAIT_MS)
    assert widget.status.text().startswith("failed: ValueError")
    assert "4D (Noise2Self dncnn)" not in viewer.layers

    path = widget.save_model(tmp_path / "model.pt")
    assert path.exists()
    other = train_widget(viewer)
    loaded = other.load_model(path)
    assert loaded is other.model and loaded.history["step"] == model.history["step"]
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), atol=1e-6)
    assert other.predict_button.isEnabled() and "loaded" in other.status.text()

    # Issue 27: the Export button writes a bioimage.io package that bioimageio.core passes
    # and that Load reads back to the same predictions.
    core = pytest.importorskip("bioimageio.core")
    widget.predict_picker.select("crop")
    assert widget.export_button.isEnabled()
    package = widget.export_bioimageio(tmp_path / "model.zip", ["A. Author"])
    assert core.test_model(package).status == "passed"
    third = train_widget(viewer)
    np.testing.assert_array_equal(third.load_model(package).predict(x), model.predict(x))


def test_train_widget_stop_keeps_the_best_model_so_far(viewer, bot, tmp_path):
    viewer.add_image(noisy_crop(), name="crop")
    widget = train_widget(viewer, max_time=600)
    started = time.perf_counter()
    widget.train()
    bot.waitUntil(lambda: len(widget.history.get("epoch", [])) >= 2, timeout=WAIT_MS)
    assert widget.worker is not None  # still training: 600 s is far away
    widget.stop_button.click()
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert time.perf_counter() - started < 60
    model = widget.model
    assert model is not None, widget.status.text()
    assert model.history["stopped"] == "callback"
    assert model.history["best_epoch"] in model.history["epoch"]
    assert "stopped by callback" in widget.status.text()
    assert model.predict(noisy_crop()).shape == (64, 64)
    folder = SCREENSHOTS if os.environ.get("SC_NOISE2SELF_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    viewer.window.resize(1400, 900)
    viewer.screenshot(str(folder / "napari_train.png"), canvas_only=False)
    assert (folder / "napari_train.png").stat().st_size > 10_000


def test_screenshot_of_the_docked_widgets(viewer, bot, tmp_path):
    from skimage import io

    (camera, meta, _), = samples.noisy_camera()
    viewer.add_image(camera[160:352, 160:352], **meta)
    widget = calibrate_widget(viewer)
    widget.run()  # "auto": every method's best loss in the bar chart
    bot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.result is not None, widget.status.text()
    assert widget.method_box.currentText() == "auto"  # adding the result kept the settings
    assert len(widget.canvas.axes[1].patches) == len(image.auto_methods(2))
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # moved in 0.9
    grid.enabled = True  # input and result side by side
    folder = SCREENSHOTS if os.environ.get("SC_NOISE2SELF_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "napari_calibrate.png"
    viewer.window.resize(1400, 900)
    viewer.screenshot(str(path), canvas_only=False)
    widget.canvas.save(folder / "napari_calibrate_curves.png")
    shot = io.imread(path)
    assert shot.ndim == 3 and shot.shape[0] > 300 and shot.shape[1] > 600
    pixels = shot[..., :3].reshape(-1, 3)
    # A blank or black window has a handful of colours; images, text and plots have many.
    assert len(np.unique(pixels[:: max(1, len(pixels) // 200_000)], axis=0)) > 500
    assert pixels.std() > 20


def test_napari_opens_our_files_with_the_plugin_at_their_scale(viewer, tmp_path):
    written = image.write(tmp_path / "cells.ome.tif", image.ImageData(
        np.zeros((2, 32, 40), np.uint8), "CYX", (1.0, 0.2, 0.1), {}, ("dapi", "actin")))
    layers = viewer.open(str(written), plugin="sc-noise2self")
    assert [layer.name for layer in layers] == ["dapi", "actin"]
    for layer in layers:
        np.testing.assert_allclose(layer.scale, (0.2, 0.1))
