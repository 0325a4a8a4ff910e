"""``sc-noise2self image ...`` (issue 18): calibrate, train and predict on files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage import data

from sc_noise2self import cli
from sc_noise2self import image as im
from sc_noise2self.image import GridEdgeWarning, files

pytest.importorskip("ome_zarr")

RNG = np.random.default_rng(0)
STACK = np.stack([data.camera()[:96, :96], data.camera()[200:296, 300:396]]) / 255.0
NOISY = (STACK + 0.1 * RNG.standard_normal(STACK.shape)).astype(np.float32)


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "in.ome.tif"
    files.write(path, NOISY, axes="TYX", scale=(5.0, 0.2, 0.2))
    return path


def test_calibrate_writes_the_image_report_and_plot(source, tmp_path, capsys):
    out = tmp_path / "out.ome.zarr"
    code = cli.main(["image", "calibrate", str(source), "--out", str(out), "--method",
                     "gaussian", "--sample", "64", "--block", "48", "--report",
                     str(tmp_path / "r.json"), "--plot", str(tmp_path / "curve.png")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "method gaussian" in text and "neighbour mean" in text
    result = files.read(out)
    assert result.axes == "TYX" and result.shape == NOISY.shape
    np.testing.assert_allclose(result.scale, (5.0, 0.2, 0.2))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "gaussian" and np.isfinite(report["loss"]).all()
    assert (tmp_path / "curve.png").stat().st_size > 1000
    # denoising helps: closer to the clean images than the noisy input is
    assert np.mean((result.data - STACK) ** 2) < np.mean((NOISY - STACK) ** 2)


def test_outputs_are_refused_before_any_work(source, tmp_path, capsys):
    out = tmp_path / "out.tif"
    assert cli.main(["image", "calibrate", str(source), "--out", str(out), "--method",
                     "median", "--sample", "64"]) == 0
    capsys.readouterr()
    assert cli.main(["image", "calibrate", str(source), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli.main(["image", "calibrate", str(source), "--out", str(source)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert cli.main(["image", "calibrate", str(source), "--out", str(tmp_path / "x.png")]) == 2
    assert "OME-Zarr" in capsys.readouterr().err
    assert cli.main(["image", "calibrate", str(source), "--out", str(tmp_path / "y.zarr"),
                     "--axes", "QYX"]) == 2
    assert "axes='QYX'" in capsys.readouterr().err
    assert cli.main(["image", "calibrate", str(source), "--out", str(out), "--method",
                     "median", "--sample", "64", "--overwrite"]) == 0
    capsys.readouterr()
    # Issue 25: a report (or plot) on the output's own path would replace the image with
    # JSON and exit 0; it is refused before any work, and the image is kept.
    before = out.read_bytes()
    assert cli.main(["image", "calibrate", str(source), "--out", str(out), "--method",
                     "median", "--report", str(out), "--overwrite"]) == 2
    assert "--report and --out are both" in capsys.readouterr().err
    assert cli.main(["image", "calibrate", str(source), "--out", str(out), "--method",
                     "median", "--report", str(tmp_path / "r.png"), "--plot",
                     str(tmp_path / "r.png"), "--overwrite"]) == 2
    assert "--plot and --report are both" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_the_cli_refuses_a_bool_tiff_and_keeps_an_xy_layout(tmp_path, capsys):
    # Issue 25: the CLI denoised a bool TIFF that the Python API refuses, and --axes XY
    # wrote a 96 x 128 image as 128 x 96.
    import tifffile

    tifffile.imwrite(tmp_path / "mask.tif", NOISY[0] > 0.5)
    assert cli.main(["image", "calibrate", str(tmp_path / "mask.tif"), "--out",
                     str(tmp_path / "m.tif"), "--method", "median"]) == 2
    assert "convert a mask with .astype(float)" in capsys.readouterr().err
    assert not (tmp_path / "m.tif").exists()
    tifffile.imwrite(tmp_path / "xy.tif", NOISY[0, :80, :96])
    assert cli.main(["image", "calibrate", str(tmp_path / "xy.tif"), "--axes", "XY", "--out",
                     str(tmp_path / "xy_out.tif"), "--method", "median"]) == 0
    assert tifffile.imread(tmp_path / "xy_out.tif").shape == (80, 96)


def test_train_then_predict_with_the_saved_model(source, tmp_path, capsys):
    model = tmp_path / "m.pt"
    with pytest.warns(UserWarning):  # two steps do not beat the neighbour mean
        code = cli.main(["image", "train", str(source), "--out", str(tmp_path / "t.zarr"),
                         "--steps", "2", "--device", "cpu", "--save-model", str(model),
                         "--block", "64"])
    assert code == 0, capsys.readouterr()
    assert model.exists() and files.read(tmp_path / "t.zarr").shape == NOISY.shape
    with pytest.warns(UserWarning, match="neighbour mean is written instead"):
        code = cli.main(["image", "predict", str(source), "--model", str(model), "--out",
                         str(tmp_path / "p.tif")])
    assert code == 0
    assert np.array_equal(files.read(tmp_path / "p.tif").data,
                          files.read(tmp_path / "t.zarr").data)
    assert cli.main(["image", "train", str(source), "--out", str(tmp_path / "t.zarr"),
                     "--steps", "2", "--save-model", str(model)]) == 2  # both exist


def test_integer_files_keep_their_intensity_units(tmp_path, capsys):
    """A uint8 file denoised by a classical method and by a CNN stays on the 0-255 scale."""
    source = tmp_path / "u8.tif"
    files.write(source, np.round(NOISY.clip(0, 1) * 255).astype(np.uint8), axes="TYX")
    assert cli.main(["image", "calibrate", str(source), "--out", str(tmp_path / "c.zarr"),
                     "--method", "gaussian", "--sample", "64"]) == 0
    denoised = files.read(tmp_path / "c.zarr").data
    assert denoised.max() > 100  # not rescaled to [0, 1]
    assert np.mean((denoised / 255 - STACK) ** 2) < np.mean((NOISY.clip(0, 1) - STACK) ** 2)
    with pytest.warns(UserWarning):  # two steps: the network's own output, as asked
        assert cli.main(["image", "train", str(source), "--out", str(tmp_path / "t.zarr"),
                         "--steps", "2", "--device", "cpu", "--save-model",
                         str(tmp_path / "m.pt")]) == 0
        assert cli.main(["image", "predict", str(source), "--model", str(tmp_path / "m.pt"),
                         "--out", str(tmp_path / "p.zarr"), "--no-fallback"]) == 0
    assert files.read(tmp_path / "t.zarr").data.max() > 100  # the neighbour mean, 0-255
    from sc_noise2self.image import Noise2SelfModel

    model = Noise2SelfModel.load(tmp_path / "m.pt", device="cpu")
    assert max(model.normalisation.high) > 100  # it learned in the file's 0-255 units
    u8 = files.read(source).data
    predicted = files.read(tmp_path / "p.zarr").data
    assert predicted.dtype == np.uint8  # issue 27: a uint8 file stays uint8 (4x smaller)
    expected = np.clip(np.rint(model.predict(u8[1].astype(np.float32))), 0, 255)
    assert np.abs(predicted[1].astype(float) - expected).max() <= 1  # rounding at .5 ties
    assert cli.main(["image", "predict", str(source), "--model", str(tmp_path / "m.pt"),
                     "--out", str(tmp_path / "f.zarr"), "--no-fallback", "--dtype",
                     "float32"]) == 0
    np.testing.assert_allclose(files.read(tmp_path / "f.zarr").data[1],
                               model.predict(u8[1].astype(np.float32)), atol=1e-4)


def test_one_network_per_channel(tmp_path, capsys):
    source = tmp_path / "two.zarr"
    two = np.stack([NOISY[0], 3.0 * NOISY[1]])  # two stains on different scales
    files.write(source, two, axes="CYX")
    with pytest.warns(UserWarning):
        code = cli.main(["image", "train", str(source), "--out", str(tmp_path / "t.zarr"),
                         "--steps", "2", "--device", "cpu", "--per-channel", "--save-model",
                         str(tmp_path / "m.pt")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "channel 1: trained unet" in text
    assert (tmp_path / "m.c0.pt").exists() and (tmp_path / "m.c1.pt").exists()
    from sc_noise2self.image import Noise2SelfModel

    models = [Noise2SelfModel.load(tmp_path / f"m.c{c}.pt", device="cpu") for c in (0, 1)]
    assert all(m.n_channels == 1 for m in models)
    with pytest.warns(UserWarning):
        code = cli.main(["image", "predict", str(source), "--model", str(tmp_path / "m.c0.pt"),
                         "--model", str(tmp_path / "m.c1.pt"), "--out",
                         str(tmp_path / "p.zarr"), "--no-fallback"])
    assert code == 0
    predicted = files.read(tmp_path / "p.zarr").data
    np.testing.assert_allclose(predicted[1], models[1].predict(two[1]), atol=1e-5)
    assert cli.main(["image", "predict", str(source), "--model", str(tmp_path / "m.c0.pt"),
                     "--model", str(tmp_path / "m.c1.pt"), "--model",
                     str(tmp_path / "m.c1.pt"), "--out", str(tmp_path / "q.zarr")]) == 2
    assert "3 models were given for an image with" in capsys.readouterr().err


def test_per_channel_calibration_flags_a_best_at_the_grid_edge_and_plots_every_channel(
        tmp_path, capsys):
    # Issue 27: --per-channel did not flag a best at the grid's edge, and --plot drew
    # channel 0 only.
    path = tmp_path / "cyx.tif"
    files.write(path, np.stack([NOISY[0], NOISY[1], NOISY[0]]), axes="CYX")
    report = tmp_path / "r.json"
    with pytest.warns(GridEdgeWarning):
        assert cli.main(["image", "calibrate", str(path), "--out", str(tmp_path / "o.zarr"),
                         "--method", "gaussian", "--per-channel", "--sample", "64",
                         "--report", str(report), "--plot", str(tmp_path / "c.png")]) == 0
    text = capsys.readouterr().out
    records = json.loads(report.read_text())
    assert len(records) == 3
    for index, record in enumerate(records):
        for name, end in record["edge"].items():
            assert f"channel {index}: note: the best {name} is the {end} value" in text
    import matplotlib.image

    picture = matplotlib.image.imread(tmp_path / "c.png")
    assert picture.shape[1] > 2.5 * picture.shape[0]  # three panels side by side


def test_a_best_at_the_grid_edge_is_flagged_in_memory():
    image = NOISY[0].astype(np.float64)
    with pytest.warns(GridEdgeWarning, match=r"sigma=0\.2 is the highest value tried"):
        calibration = im.calibrate(image, "gaussian", {"sigma": [0.1, 0.2]}, progress=False)
    assert calibration.edge_parameters == {"sigma": "highest"}
    inside = im.calibrate(image, "gaussian", {"sigma": [1.0, 5.0, 20.0]}, progress=False)
    assert inside.best_params == {"sigma": 5.0} and inside.edge_parameters == {}
    assert inside.to_dict()["edge"] == {}


def test_the_cli_shows_progress_on_a_terminal_unless_told_not_to(source, tmp_path, capsys,
                                                                 monkeypatch):
    # Issue 27: long runs printed nothing until the end.
    from sc_noise2self import cli_image

    monkeypatch.setattr(cli_image, "shows_progress_on_a_terminal", lambda: True)
    arguments = ["image", "calibrate", str(source), "--method", "gaussian", "--sample", "64"]
    assert cli.main([*arguments, "--out", str(tmp_path / "a.zarr")]) == 0
    assert "%|" in capsys.readouterr().err  # a tqdm bar
    assert cli.main([*arguments, "--out", str(tmp_path / "b.zarr"), "--no-progress"]) == 0
    assert "%|" not in capsys.readouterr().err



@pytest.fixture
def unet_wins(monkeypatch):
    """A budget that fits a UNet, and band losses that make it win (the file path is tested
    here; which one wins on its merits is tested in test_image_budget.py)."""
    pytest.importorskip("torch")
    from sc_noise2self.image import budget

    monkeypatch.setattr(budget, "CNN_MIN_SECONDS", 1.0)
    monkeypatch.setattr(budget, "CLASSICAL_SHARE", 0.9)
    losses = iter([1.0, 1e-6])  # the classical method's band loss, then the UNet's
    monkeypatch.setattr(budget, "_band_loss", lambda prediction, band: next(losses))


def test_calibrate_auto_within_a_budget_prints_and_reports_the_table(source, tmp_path,
                                                                     capsys, unet_wins):
    out = tmp_path / "out.tif"
    code = cli.main(["image", "calibrate", str(source), "--out", str(out), "--method", "auto",
                     "--max-time", "6", "--sample", "64", "--block", "48", "--mask", "pixel",
                     "--report", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "chose unet" in text and "held-out loss 1e-06, expected error 0" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "unet" and report["table"][-1]["method"] == "unet"
    assert report["calibration"]["params"]["mask"] == "pixel"
    assert files.read(out).shape == NOISY.shape


@pytest.mark.parametrize("mask", ["pixel", "rows", "blocks"])
def test_a_unet_chosen_within_the_budget_denoises_the_whole_file(source, tmp_path, mask,
                                                                  monkeypatch):
    """The UNet that won writes every plane: its direct pass, or for a line or block model
    its J-invariant prediction mixed at the weight the band gave.

    Mutations: denoise the file with the classical calibration whatever won, or drop the
    line model's mix weight on the file path: the planes then differ.
    """
    pytest.importorskip("torch")
    from sc_noise2self.image import budget, workflows
    from sc_noise2self.image.referee import neighbour_mean

    monkeypatch.setattr(budget, "CNN_MIN_SECONDS", 1.0)
    monkeypatch.setattr(budget, "CLASSICAL_SHARE", 0.9)
    losses = iter([0.03, 0.015])  # the UNet's is lower; mixed at about 0.01 / 0.015
    monkeypatch.setattr(budget, "_band_loss", lambda prediction, band: next(losses))
    out = tmp_path / "out.tif"
    choice = workflows.calibrate_file(source, out, method="auto", sample=64, block=48,
                                      max_time=6.0, progress=False, mask=mask,
                                      noise_variance=0.01)
    assert choice.method == "unet" and choice.model is not None
    weight = choice.cnn_mix_weight
    assert weight == (pytest.approx(0.01 / 0.015) if mask != "pixel" else 1.0)
    assert choice.model.reach == (mask == "blocks")  # reach 1 on this white noise
    written = files.read(out).data
    line_axes = choice.model.line_axes
    for plane, noisy in zip(written, NOISY, strict=True):
        predicted = weight * choice.model.predict(noisy, augment=True) + (1 - weight) * noisy
        expected = (predicted if choice.model.beats_baseline
                    else neighbour_mean(noisy, None, line_axes, choice.model.reach))
        np.testing.assert_allclose(plane, expected, atol=1e-4)


def test_train_max_time_budgets_the_whole_command(source, tmp_path, capsys, monkeypatch):
    """``--max-time`` covers the process's start and the reading: what is left trains, and
    too little left is refused before any training.

    Mutation: ignore the process's start when run from the shell: 40 of 60 s would then be
    left, and training would start.
    """
    from sc_noise2self import cli_image

    out = tmp_path / "out.tif"
    code = cli.main(["image", "train", str(source), "--out", str(out), "--max-time", "0.5"])
    assert code == 2 and "leaves" in capsys.readouterr().err and not out.exists()
    # From the shell (argv None), a process that has run 100 s has nothing left of 60.
    monkeypatch.setattr(cli, "seconds_since_process_start", lambda: 100.0)
    monkeypatch.setattr("sys.argv", ["sc-noise2self", "image", "train", str(source), "--out",
                                     str(out), "--max-time", "60"])
    assert cli.main() == 2 and "leaves" in capsys.readouterr().err and not out.exists()
    assert cli_image.seconds_since_process_start() > 0  # this process's age, from /proc


def test_the_training_deadline_keeps_a_share_for_predicting(monkeypatch):
    """Mutation: forget the reserve for predicting and writing: the deadline is then 60 s."""
    import argparse
    import time

    from sc_noise2self import cli_image

    started = time.perf_counter() - 2.0
    args = argparse.Namespace(max_time=60.0, started=started)
    assert cli_image._training_deadline(args) == pytest.approx(
        started + 60 * (1 - cli_image.PREDICTION_SHARE))


def test_per_channel_networks_share_the_time_budget(tmp_path, monkeypatch):
    """Mutation: give every channel the whole ``max_time``: three channels then take 3 T."""
    pytest.importorskip("torch")
    from sc_noise2self.image import workflows
    from sc_noise2self.image.cnn import training

    path = tmp_path / "three.ome.tif"
    files.write(path, np.stack([NOISY[0]] * 3), axes="CYX")
    budgets = []
    monkeypatch.setattr(training, "train",
                        lambda *args, max_time=None, **kwargs: budgets.append(max_time))
    workflows.train_file(path, per_channel=True, max_time=30.0)
    assert budgets == [10.0, 10.0, 10.0]


def test_predict_blocks_mixes_the_prediction_at_the_weight_given(tmp_path):
    """What a line UNet chosen within a budget writes: the J-invariant prediction, mixed.

    Mutation: ignore ``mix_weight``: the blocks then hold the prediction alone.
    """
    pytest.importorskip("torch")
    from sc_noise2self.image import blocks

    x = NOISY[0]
    model = im.train(x, "dncnn", steps=2, val_fraction=0.0, progress=False, mask="rows",
                     model_kwargs={"depth": 3, "features": 8})
    data = files.ImageData(x, "YX")
    out = blocks.predict_blocks(data, model, block=48, fallback=False, mix_weight=0.7)
    expected = 0.7 * model.predict(x) + 0.3 * x
    np.testing.assert_allclose(out, expected, atol=1e-5)
