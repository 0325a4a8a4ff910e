"""Trust on the CNN path (issue 15): the baseline referee, the time budget, seamless tiles,
and model files that cannot load corrupted."""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
import torch

from sc_noise2self import image as im
from sc_noise2self.image.cnn import training
from sc_noise2self.image.cnn.grading import ConvergenceWarning, late_improvement
from sc_noise2self.image.cnn.model import Noise2SelfModel
from sc_noise2self.image.cnn.networks import DnCNN, UNet, unet_reach
from sc_noise2self.image.cnn.predict import Tiler
from sc_noise2self.image.cnn.training import train
from sc_noise2self.image.referee import BaselineWarning, neighbour_mean

TINY_UNET = {"channels": (4, 8)}
TINY_DNCNN = {"depth": 3, "features": 8}
FAST = {"batch_size": 4, "patch_size": 16, "progress": False, "steps_per_epoch": 5}


def smooth_noisy(shape=(32, 32), seed=0, sigma=0.1) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
    return 0.5 + 0.4 * np.sin(sum(grids)) + sigma * np.random.default_rng(seed).normal(
        size=shape)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------- the baseline


def test_a_cnn_trained_10_steps_warns_and_denoise_falls_back_to_the_baseline():
    image = smooth_noisy((40, 40))
    options = dict(steps=10, lr=1e-6, model_kwargs=TINY_DNCNN, **FAST)
    with pytest.warns(BaselineWarning, match=r"no better than .* neighbour mean"):
        model = train(image, "dncnn", **options)
    assert model.beats_baseline is False
    assert model.history["beats_baseline"] is False
    assert model.val_loss >= model.baseline_loss > 0
    with pytest.warns(BaselineWarning, match="neighbour mean is returned instead") as caught:
        out, fitted = im.denoise(image, "dncnn", return_calibration=True, **options)
    assert sum(issubclass(w.category, BaselineWarning) for w in caught) == 1  # graded once
    np.testing.assert_allclose(out, neighbour_mean(image), rtol=1e-6)
    assert fitted.beats_baseline is False
    with pytest.warns(BaselineWarning, match="fallback=False"):
        raw = im.denoise(image, "dncnn", fallback=False, augment=False, **options)
    np.testing.assert_array_equal(raw, fitted.predict(image))


def test_a_trained_cnn_beats_the_baseline_and_is_returned():
    # The neighbour mean is a strong baseline on a smooth image (its true error is a quarter
    # of the noise variance): it takes a few hundred steps to beat, here by about 12%.
    image = smooth_noisy((48, 48), sigma=0.3)
    out, model = im.denoise(image, "dncnn", steps=300, lr=1e-2, batch_size=8, patch_size=24,
                            steps_per_epoch=10, patience=1000, augment=False, progress=False,
                            model_kwargs={"depth": 5, "features": 16},
                            return_calibration=True)  # fmt: skip
    assert model.beats_baseline, (model.val_loss, model.baseline_loss)
    assert model.val_loss < 0.95 * model.baseline_loss
    np.testing.assert_array_equal(out, model.predict(image))


def test_without_a_held_out_band_the_image_itself_grades_the_network():
    image = smooth_noisy((32, 32))
    model = train(image, "dncnn", steps=2, val_fraction=0.0, model_kwargs=TINY_DNCNN, **FAST)
    assert model.beats_baseline is None and model.val_loss is None
    scores = model.score(image)
    assert set(scores) == {"loss", "baseline_loss"} and scores["baseline_loss"] > 0
    with pytest.warns(BaselineWarning):
        out = im.denoise(image, "dncnn", steps=2, lr=1e-6, val_fraction=0.0,
                         model_kwargs=TINY_DNCNN, **FAST)  # fmt: skip
    np.testing.assert_allclose(out, neighbour_mean(image), rtol=1e-6)


def test_a_constant_image_is_not_trained_on():
    with pytest.warns(UserWarning, match="constant"):
        out, model = im.denoise(np.ones((16, 16)), "unet", return_calibration=True, **FAST)
    assert model is None and np.array_equal(out, np.ones((16, 16)))


# --------------------------------------------------------------------- the time budget


def test_max_time_includes_validation(monkeypatch):
    slow = 0.3
    validate = training._Trainer.validate

    def slow_validate(self, val_set, phases=None):
        time.sleep(slow)
        return validate(self, val_set, phases)

    monkeypatch.setattr(training._Trainer, "validate", slow_validate)
    began = time.perf_counter()
    model = train(smooth_noisy(), "dncnn", steps=10**6, max_time=1.5, patience=10**6,
                  model_kwargs=TINY_DNCNN, **FAST)  # fmt: skip
    wall = time.perf_counter() - began
    assert model.history["stopped"] == "max_time"
    # Stepping stopped early enough for the last validation (0.3 s) to end in time; the
    # old loop validated once more after the budget had run out.
    assert model.history["time"][-1] <= 1.5 + 0.15
    assert wall < 1.5 + 0.5


def test_under_a_time_budget_validation_scores_the_phases_that_fit(monkeypatch):
    # Issue 27: a 48 x 192 x 192 stack spent 238 s of a 60 s budget validating every phase
    # of its band before training. Here each phase's validation costs 50 ms: all 16 phases
    # would cost 0.8 s per epoch, more than the epochs' training.
    every_phase = training.Masker.every_phase

    def slow_phases(self, x, generator, phases=None):
        for item in every_phase(self, x, generator, phases):
            time.sleep(0.05)
            yield item

    monkeypatch.setattr(training.Masker, "every_phase", slow_phases)
    model = train(smooth_noisy(), "dncnn", steps=10**6, max_time=2.0, patience=10**6,
                  model_kwargs=TINY_DNCNN, **FAST)  # fmt: skip
    # Fails if every phase is always validated. (The wall time is a benchmark's to measure:
    # benchmarks/bench_cnn_budget.py.)
    assert model.history["val_phases"] < 16


def test_validation_phases_fit_their_share_and_the_baseline_grades_the_same_pixels():
    from dataclasses import replace

    config = train(smooth_noisy(), "dncnn", steps=1, model_kwargs=TINY_DNCNN, **FAST).config
    trainer = training._Trainer(DnCNN(**TINY_DNCNN), replace(config, ema=0.0),
                                training.Masker("grid", "mean", 4, 2), torch.device("cpu"),
                                None, False)  # fmt: skip
    trainer.choose_val_phases(train_seconds=1.0, phase_seconds=0.01)  # 5% of 1.05 s: 5
    assert trainer.val_phases == [0, 4, 8, 11, 15] and trainer.history["val_phases"] == 5
    trainer.choose_val_phases(train_seconds=1.0, phase_seconds=10.0)  # at least one
    assert trainer.val_phases == [0]
    image = smooth_noisy()
    x = torch.as_tensor(image, dtype=torch.float32)[None, None]
    hidden = np.zeros(image.shape, bool)
    hidden[0::4, 0::4] = True  # phase 0 of the grid, stride 4
    expected = np.mean((neighbour_mean(image) - image)[hidden] ** 2)
    assert trainer.baseline([x]) == pytest.approx(expected, rel=1e-5)
    trainer.choose_val_phases(train_seconds=1.0, phase_seconds=1e-6)  # all fit: all scored
    assert trainer.val_phases is None
    everywhere = np.mean((neighbour_mean(image) - image) ** 2)
    assert trainer.baseline([x]) == pytest.approx(everywhere, rel=1e-5)


def test_a_run_still_learning_at_its_budget_warns():
    image = smooth_noisy((48, 48))
    with pytest.warns(ConvergenceWarning, match=r"steps=20.*still falling"):
        train(image, "dncnn", steps=20, lr=5e-3, model_kwargs=TINY_DNCNN,
              **{**FAST, "steps_per_epoch": 2, "patch_size": 24})  # fmt: skip


def test_late_improvement_tells_flat_from_falling():
    assert late_improvement([1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]) == pytest.approx(0.25)
    assert late_improvement([1.0, 0.5, 0.41, 0.40, 0.40, 0.40, 0.40, 0.40]) is None
    assert late_improvement([1.0]) is None and late_improvement([np.nan, np.nan]) is None


# --------------------------------------------------------------------- seamless tiles


def test_unet_reach_follows_the_architecture():
    assert unet_reach(1) == 2  # one block: two 3x3 convolutions
    assert [unet_reach(n) for n in (2, 3, 4)] == [9, 23, 51]
    assert UNet().reach == 51 and DnCNN(depth=17).reach == 17


@pytest.mark.parametrize("options", [{}, {"blur_pool": True}, {"top_skip": False},
                                     {"blur_pool": True, "top_skip": False}])
def test_the_reach_of_n2v2_unets_is_what_an_output_pixel_depends_on(options):
    # Issue 27: N2V2's blur pool widens the reach (seams in tiles if it were not counted).
    torch.manual_seed(0)
    net = UNet(channels=(4, 8, 8), **options).double().eval()
    reach = 0
    for position in range(60, 64):  # one down-sampling period
        x = torch.rand(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
        net(x)[0, 0, position, 64].backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(dim=1) > 0).ravel()
        reach = max(reach, position - int(rows.min()), int(rows.max()) - position)
    assert net.reach == reach
    assert reach == (26 if options.get("blur_pool") else 23)


def test_n2v2_median_replacement_is_the_median_of_the_neighbours_and_hides_the_pixel():
    from scipy import ndimage

    from sc_noise2self.image.masking_torch import hide_torch, neighbour_median_torch

    x = torch.rand(1, 2, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    footprint = np.ones((3, 3), bool)
    footprint[1, 1] = False
    expected = [ndimage.rank_filter(x[0, c].numpy(), 3, footprint=footprint, mode="mirror")
                for c in range(2)]  # the lower middle of 8: torch.median's
    np.testing.assert_array_equal(neighbour_median_torch(x)[0].numpy(), np.stack(expected))
    mask = torch.zeros(1, 1, 9, 11, dtype=torch.bool)
    mask[..., ::4, ::4] = True  # a grid phase: no hidden pixel has a hidden neighbour
    changed = x.clone()
    changed[mask.expand_as(x)] += 5.0
    generator = torch.Generator().manual_seed(1)
    torch.testing.assert_close(hide_torch(x, mask, "median", generator),
                               hide_torch(changed, mask, "median", generator))


def test_a_unet_trains_with_every_n2v2_option():
    model = train(smooth_noisy(), "unet", steps=2, replacement="median",
                  model_kwargs={"channels": (4, 8), "blur_pool": True, "top_skip": False},
                  **FAST)  # fmt: skip
    assert model.config.replacement == "median" and model.net.reach == 10
    assert model.predict(smooth_noisy()).shape == (32, 32)


def _untrained(model: str, n_spatial: int, shape) -> Noise2SelfModel:
    kwargs = {"channels": (4, 8, 8)} if model == "unet" else {"depth": 5, "features": 8}
    fitted = train(smooth_noisy(shape), model, steps=2, model_kwargs=kwargs,
                   **{**FAST, "patch_size": 8})  # fmt: skip
    # Batch-norm statistics away from (0, 1), so that the test sees them used per pixel.
    with torch.no_grad():
        for module in fitted.net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return fitted


@pytest.mark.parametrize("model", ["unet", "dncnn"])
@pytest.mark.parametrize(("shape", "tile"), [((101, 37), 40), ((29, 38, 23), 28)],
                         ids=["2d", "3d"])
def test_tiled_prediction_equals_whole_image_prediction(model, shape, tile):
    fitted = _untrained(model, len(shape), shape)
    image = smooth_noisy(shape, seed=1)
    whole = fitted.predict(image)
    tiled = fitted.predict(image, tile_size=tile, batch_size=3)
    assert np.abs(tiled - whole).max() < 1e-4
    # Several windows really were used, and without their halo they would show seams,
    # which is why predict refuses an overlap below the reach.
    seams = Tiler(fitted.net, tile, 0, 3)(fitted._internal(image))
    assert np.abs(fitted.normalisation.inverse(seams[0].detach().numpy())[0] - whole).max() > 1e-3
    with pytest.raises(ValueError, match="below this network's reach"):
        fitted.predict(image, tile_size=tile, tile_overlap=0)


@pytest.mark.parametrize("channels", [1, 2])
def test_a_constant_channel_is_its_own_prediction(channels):
    # Issue 25: predict on a constant 0.3 returned 0.21 to 0.40.
    fitted = train(np.stack([smooth_noisy(), smooth_noisy(seed=3)], -1)[..., :channels]
                   if channels > 1 else smooth_noisy(), "dncnn", steps=2,
                   channel_axis=-1 if channels > 1 else None, model_kwargs=TINY_DNCNN, **FAST)
    flat = np.full((24, 24), 0.3, np.float32)
    image = flat if channels == 1 else np.stack([flat, smooth_noisy((24, 24), seed=4)], -1)
    out = fitted.predict(image)
    assert np.array_equal(out[..., 0] if channels > 1 else out, flat)
    raw = fitted.predict(image, keep_constant=False)  # what the network itself gives
    assert not np.allclose(raw[..., 0] if channels > 1 else raw, flat, atol=1e-3)
    if channels > 1:  # the varied channel is the network's, as without the constant one
        np.testing.assert_array_equal(out[..., 1], raw[..., 1])


def test_a_tile_too_small_for_the_receptive_field_is_enlarged_with_a_warning():
    fitted = _untrained("unet", 2, (64, 64))
    image = smooth_noisy((90, 90), seed=2)
    with pytest.warns(UserWarning, match="receptive field"):
        tiled = fitted.predict(image, tile_size=8)
    assert np.abs(tiled - fitted.predict(image)).max() < 1e-4


# --------------------------------------------------------------------- model files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = train(smooth_noisy(), "dncnn", steps=1, model_kwargs={"depth": 3, "features": 16},
                  **FAST)  # fmt: skip
    return model, model.save(tmp_path_factory.mktemp("model") / "model.pt")


def largest_record(path) -> tuple[int, int]:
    """Offset and size of the largest weight record inside a torch zip file."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length), info.file_size


def test_a_flipped_weight_record_is_caught_by_the_checksum(saved, tmp_path):
    model, path = saved
    start, size = largest_record(path)
    assert size >= 256 + 64
    data = bytearray(path.read_bytes())
    data[start + 64 : start + 64 + 256] = bytes(b ^ 0xFF for b in data[start + 64 : start + 320])
    corrupted = tmp_path / "corrupted.pt"
    corrupted.write_bytes(bytes(data))
    # The control: torch itself reads the flipped weights without complaint.
    flipped = torch.load(corrupted, weights_only=True)["state_dict"]
    original = torch.load(path, weights_only=True)["state_dict"]
    assert any(not torch.equal(flipped[k], original[k]) for k in original)
    with pytest.raises(ValueError, match=r"corrupted\.pt.*corrupted: its weights no longer"):
        Noise2SelfModel.load(corrupted)
    loaded = Noise2SelfModel.load(path, device="cpu")  # the intact file still loads
    image = smooth_noisy((20, 20))
    np.testing.assert_array_equal(loaded.predict(image), model.predict(image))


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "tensor", "dict"])
def test_broken_or_foreign_files_name_the_file(saved, tmp_path, damage):
    _, path = saved
    bad = tmp_path / f"{damage}.pt"
    content = path.read_bytes()
    if damage == "truncated":
        bad.write_bytes(content[: len(content) // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("not a model")
    elif damage == "tensor":
        torch.save(torch.zeros(3), bad)
    else:
        torch.save({"format_version": 2, "weights": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match=rf"{damage}\.pt"):
        Noise2SelfModel.load(bad)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        Noise2SelfModel.load(tmp_path / "nothing.pt")


def test_saves_never_replace_a_file_unless_asked(saved, tmp_path):
    model, _ = saved
    target = tmp_path / "m.pt"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(target)
    assert target.read_bytes() == b"precious"
    model.save(target, overwrite=True)
    assert Noise2SelfModel.load(target, device="cpu").config == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left


def test_saved_files_carry_a_checksum_and_stay_format_2(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 2 and len(payload["checksum"]) == 64
