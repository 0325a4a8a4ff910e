"""Noise2Self masked CNNs: J-invariance, shapes, tiling, training, save/load, bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sc_noise2self._device import cpu_computes_bf16, resolve_amp, resolve_device
from sc_noise2self.image.cnn.data import Normalisation
from sc_noise2self.image.cnn.masker import Masker, masked_loss
from sc_noise2self.image.cnn.model import Noise2SelfModel
from sc_noise2self.image.cnn.networks import DnCNN, UNet
from sc_noise2self.image.cnn.training import denoise_cnn, train

TINY_UNET = {"channels": (4, 8)}
TINY_DNCNN = {"depth": 3, "features": 8}
FAST = {"batch_size": 4, "patch_size": 16, "progress": False, "steps_per_epoch": 5}


def smooth_noisy(shape=(32, 32), seed=0, sigma=0.1) -> np.ndarray:
    """A smooth pattern plus Gaussian noise: something a net can learn in a few steps."""
    grids = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
    clean = 0.5 + 0.4 * np.sin(sum(grids))
    return clean + sigma * np.random.default_rng(seed).standard_normal(shape)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier waits that cost ~30 ms per op on a busy
    2-core machine (measured), which would make these tests 100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fitted() -> Noise2SelfModel:
    """A tiny DnCNN trained for a few steps, shared by the prediction tests."""
    return train(smooth_noisy(), "dncnn", steps=10, model_kwargs=TINY_DNCNN, **FAST)


# --------------------------------------------------------------------- J-invariance


def _input_gradient(net, masker: Masker, x: torch.Tensor, mask_input: bool):
    """Gradient of the summed output on the hidden pixels with respect to the raw input."""
    x = x.clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    mask = masker.sample(x, generator)
    inputs = masker.replace(x, mask, generator) if mask_input else x
    out = net(inputs)
    out[mask.expand_as(out)].sum().backward()
    return x.grad, mask.expand_as(x)


@pytest.mark.parametrize(
    ("masking", "replacement"), [("random", "random"), ("grid", "mean"), ("grid", "random")]
)
@pytest.mark.parametrize("net_cls", ["unet", "dncnn"])
def test_masked_output_ignores_hidden_pixels(masking, replacement, net_cls):
    torch.manual_seed(0)
    net = UNet(channels=TINY_UNET["channels"]) if net_cls == "unet" else DnCNN(**TINY_DNCNN)
    net.train()  # training mode: instance/batch statistics of the masked batch
    masker = Masker(masking, replacement, stride=3, n_spatial=2)
    x = torch.rand(2, 1, 16, 16)
    grad, mask = _input_gradient(net, masker, x, mask_input=True)
    assert mask.any()
    assert torch.all(grad[mask] == 0)
    assert torch.count_nonzero(grad[~mask]) > 0  # the visible pixels do matter
    # Control: without the masking the same check fails, so the test can detect a leak.
    grad_unmasked, mask = _input_gradient(net, masker, x, mask_input=False)
    assert torch.count_nonzero(grad_unmasked[mask]) > 0


@pytest.mark.parametrize("masking", ["random", "grid"])
def test_masked_output_ignores_hidden_voxels(masking):
    torch.manual_seed(0)
    net = DnCNN(2, 2, n_spatial=3, **TINY_DNCNN)
    masker = Masker(masking, "mean" if masking == "grid" else "random", stride=2, n_spatial=3)
    grad, mask = _input_gradient(net, masker, torch.rand(2, 2, 6, 7, 8), mask_input=True)
    assert mask.any()
    assert torch.all(grad[mask] == 0)
    assert torch.count_nonzero(grad[~mask]) > 0


def test_invariant_prediction_ignores_each_pixel(fitted):
    image = smooth_noisy((20, 23), seed=3)
    changed = image.copy()
    changed[7, 11] += 5.0
    before = fitted.predict(image, invariant=True)
    after = fitted.predict(changed, invariant=True)
    assert after[7, 11] == before[7, 11]
    assert not np.array_equal(after, before)  # its neighbours do see the change
    direct = fitted.predict(changed)
    assert direct[7, 11] != fitted.predict(image)[7, 11]


def test_random_mask_density_and_grid_phases():
    x = torch.zeros(8, 1, 100, 100)
    generator = torch.Generator().manual_seed(1)
    random_mask = Masker("random", "random", 5, 2).sample(x, generator)
    assert abs(random_mask.float().mean().item() - 1 / 25) < 0.003
    grid = Masker("grid", "mean", 5, 2)
    phases = [
        grid.phase_mask((1, 1, 12, 13), torch.tensor([[a, b]])) for a in range(5) for b in range(5)
    ]
    assert torch.equal(torch.stack(phases).sum(0), torch.ones(1, 1, 12, 13, dtype=torch.long))
    assert grid.sample(x, generator).float().mean().item() == pytest.approx(1 / 25)


def test_loss_counts_only_hidden_pixels():
    target = torch.zeros(1, 1, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 1, 2] = True
    output = torch.zeros(1, 1, 4, 4)
    output[0, 0, 0, 0] = 10.0  # a visible pixel: ignored
    assert masked_loss(output, target, mask).item() == 0.0
    output[0, 0, 1, 2] = 3.0
    assert masked_loss(output, target, mask).item() == pytest.approx(9.0)


def test_mean_replacement_with_random_masking_is_refused():
    with pytest.raises(ValueError, match="not J-invariant"):
        Masker("random", "mean", 5, 2)


# --------------------------------------------------------------------- models and shapes


@pytest.mark.parametrize("n_spatial", [2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_model_shapes(n_spatial, channels):
    x = torch.rand(2, channels, *([8] * n_spatial))
    unet = UNet(channels, channels, channels=TINY_UNET["channels"], n_spatial=n_spatial)
    dncnn = DnCNN(channels, channels, n_spatial=n_spatial, **TINY_DNCNN)
    assert unet(x).shape == x.shape
    assert dncnn(x).shape == x.shape
    assert unet.size_multiple == 2


@pytest.mark.parametrize(("norm", "layer"), [("instance", torch.nn.InstanceNorm2d),
                                             ("batch", torch.nn.BatchNorm2d)])  # fmt: skip
def test_unet_norm_choice(norm, layer):
    unet = UNet(channels=TINY_UNET["channels"], norm=norm)
    assert any(isinstance(m, layer) for m in unet.modules())
    with pytest.raises(ValueError, match="Unknown norm='group'"):
        UNet(norm="group")


def test_paper_architectures():
    unet = UNet(channels=(32, 64, 128, 256), norm="instance")
    assert [block.body[0].out_channels for block in unet.encoders] == [32, 64, 128, 256]
    # The default keeps the paper's four levels at half the widths (faster on a CPU).
    assert [block.body[0].out_channels for block in UNet().encoders] == [16, 32, 64, 128]
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in unet.modules())
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in unet.modules()) == 3
    convs = [m for m in DnCNN().modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 17
    assert convs[0].out_channels == 64


@pytest.mark.parametrize("tile_size", [None, 16])
def test_predict_odd_sizes(fitted, tile_size):
    image = smooth_noisy((37, 53), seed=1)
    out = fitted.predict(image, tile_size=tile_size)
    assert out.shape == image.shape
    assert np.all(np.isfinite(out))


def test_tiled_equals_untiled():
    image = smooth_noisy((45, 61), seed=2)
    # The tolerance suits this lightly trained net (lr pinned): nets that use more context
    # differ more near tile edges at this small overlap.
    model = train(image, "unet", steps=10, lr=5e-3, model_kwargs=TINY_UNET, **FAST)
    whole = model.predict(image)
    tiled = model.predict(image, tile_size=24, tile_overlap=10, batch_size=3)
    scale = np.ptp(image)
    assert tiled.shape == whole.shape
    assert np.max(np.abs(tiled - whole)) < 0.015 * scale
    assert np.mean(np.abs(tiled - whole)) < 0.0015 * scale
    # Tiles that do not overlap would show seams: refused (test_image_cnn_trust shows them).
    with pytest.raises(ValueError, match="below this network's reach"):
        model.predict(image, tile_size=24, tile_overlap=0)


def test_unet_predicts_images_smaller_than_its_size_multiple():
    model = train(smooth_noisy((16, 16)), "unet", steps=2,
                  model_kwargs={"channels": (4, 8, 16, 32)}, **FAST)  # fmt: skip
    out = model.predict(smooth_noisy((5, 3)))
    assert out.shape == (5, 3)
    assert np.all(np.isfinite(out))


def test_volumes_and_channels():
    volume = smooth_noisy((12, 14, 13))
    model = train(volume, "unet", steps=2, model_kwargs=TINY_UNET, **{**FAST, "patch_size": 8})
    assert model.predict(volume, tile_size=8).shape == volume.shape
    rgb = np.stack([smooth_noisy((24, 31), seed=s) for s in range(3)], axis=-1)
    model = train(rgb, "dncnn", steps=2, channel_axis=-1, model_kwargs=TINY_DNCNN, **FAST)
    assert model.n_channels == 3
    assert model.predict(rgb).shape == rgb.shape
    with pytest.raises(ValueError, match="channels"):
        model.predict(rgb[..., :2])


def test_stack_and_list_of_sizes():
    stack = np.stack([smooth_noisy((20, 20), seed=s) for s in range(3)])
    model = train(stack, "dncnn", steps=2, n_spatial=2, model_kwargs=TINY_DNCNN, **FAST)
    assert model.predict(stack).shape == stack.shape
    images = [smooth_noisy((20, 26)), smooth_noisy((33, 17), seed=1)]
    model = train(images, "dncnn", steps=2, model_kwargs=TINY_DNCNN, **FAST)
    assert [p.shape for p in model.predict(images)] == [(20, 26), (33, 17)]


def test_inputs_are_not_modified(fitted):
    image = smooth_noisy((20, 20)).astype(np.float32)
    original = image.copy()
    train(image, "dncnn", steps=2, model_kwargs=TINY_DNCNN, **FAST)
    fitted.predict(image, invariant=True)
    assert np.array_equal(image, original)


def test_normalisation_round_trip():
    array = np.random.default_rng(0).random((2, 10, 10)).astype(np.float32) * [[[3]], [[0.1]]]
    norm = Normalisation.fit([array])
    assert np.allclose(norm.inverse(norm.forward(array)), array, atol=1e-6)
    assert norm.low[0] != norm.low[1]


# --------------------------------------------------------------------- training


def test_augmented_invariant_prediction_ignores_each_pixel(fitted):
    image = smooth_noisy((20, 23), seed=3)
    changed = image.copy()
    changed[7, 11] += 5.0
    before = fitted.predict(image, invariant=True, augment=True)
    after = fitted.predict(changed, invariant=True, augment=True)
    assert after[7, 11] == pytest.approx(before[7, 11], abs=1e-6)
    assert not np.allclose(after, before)


@pytest.mark.parametrize("flip", [(0,), (1,), (0, 1)])
def test_augmented_prediction_is_flip_equivariant(fitted, flip):
    image = smooth_noisy((20, 23), seed=5)
    plain = fitted.predict(image, augment=True)
    flipped = fitted.predict(np.flip(image, flip), augment=True)
    np.testing.assert_allclose(np.flip(flipped, flip), plain, atol=1e-5)
    # Without augmentation the network alone is not flip-equivariant.
    single = np.flip(fitted.predict(np.flip(image, flip)), flip)
    assert np.abs(single - fitted.predict(image)).max() > 1e-4


def test_augmented_volume_keeps_its_shape():
    volume = smooth_noisy((9, 12, 10))
    model = train(volume, "unet", steps=2, model_kwargs=TINY_UNET, **{**FAST, "patch_size": 8})
    assert model.predict(volume, augment=True).shape == volume.shape


def test_weight_average_is_what_is_kept(tmp_path):
    image = smooth_noisy((40, 40))
    options = dict(steps=20, model_kwargs=TINY_DNCNN, **FAST)
    raw = train(image, "dncnn", **options)
    averaged = train(image, "dncnn", ema=0.9, checkpoint_dir=tmp_path / "run", **options)
    checkpoint = Noise2SelfModel.load(tmp_path / "run" / "best.pt", device="cpu")
    assert np.array_equal(checkpoint.predict(image), averaged.predict(image))
    assert averaged.config.ema == 0.9
    assert not np.array_equal(raw.predict(image), averaged.predict(image))
    loaded = Noise2SelfModel.load(averaged.save(tmp_path / "ema.pt"), device="cpu")
    assert np.array_equal(loaded.predict(image), averaged.predict(image))
    with pytest.raises(ValueError, match=r"ema=1\.5"):
        train(image, "dncnn", ema=1.5, **options)


def test_weight_average_also_averages_batch_norm_statistics():
    from dataclasses import replace

    from sc_noise2self.image.cnn.training import _Trainer

    config = train(smooth_noisy(), "dncnn", steps=1, model_kwargs=TINY_DNCNN, **FAST).config
    torch.manual_seed(0)
    net = DnCNN(**TINY_DNCNN)
    trainer = _Trainer(net, replace(config, ema=0.5), Masker("grid", "mean", 4, 2),
                       torch.device("cpu"), None, False)  # fmt: skip
    batches = torch.rand(6, 4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    statistics = []
    for batch in batches:
        trainer.step(batch, lr=1e-2)
        statistics.append(net.body[3].running_mean.clone())
    kept = trainer.kept.body[3].running_mean
    # Averaged like the weights, with the same warm-up weights, from the initial zeros.
    expected = torch.zeros_like(kept)
    for n, live in enumerate(statistics, start=1):
        expected += (1.0 - min(0.5, (1.0 + n) / (10.0 + n))) * (live - expected)
    torch.testing.assert_close(kept, expected)
    assert not torch.allclose(kept, statistics[-1])
    assert trainer.kept.body[3].num_batches_tracked == net.body[3].num_batches_tracked


def test_training_defaults_follow_the_network_and_yield_to_given_values():
    image = smooth_noisy()
    options = {**FAST, "batch_size": None, "steps": 1, "val_fraction": 0}
    unet = train(image, "unet", model_kwargs=TINY_UNET, **options).config
    dncnn = train(image, "dncnn", model_kwargs=TINY_DNCNN, **options).config
    assert (unet.batch_size, unet.lr, unet.ema) == (8, 1e-2, 0.99)
    assert (dncnn.batch_size, dncnn.lr, dncnn.ema) == (16, 5e-3, 0.0)
    given = train(image, "unet", model_kwargs=TINY_UNET, lr=1e-3, ema=0.0, **options).config
    assert (given.batch_size, given.lr, given.ema) == (8, 1e-3, 0.0)


def test_training_lowers_the_self_supervised_loss():
    image = smooth_noisy((48, 48))
    model = train(image, "dncnn", steps=40, lr=5e-3, model_kwargs=TINY_DNCNN, patience=100,
                  **{**FAST, "steps_per_epoch": 1, "patch_size": 24})  # fmt: skip
    val = model.history["val_loss"]  # after every step
    assert len(val) == 40
    assert min(val) < 0.7 * val[0]
    assert model.history["train_loss"][-1] < model.history["train_loss"][0]
    assert model.history["stopped"] == "steps"


def test_same_seed_same_result_other_seed_differs():
    image = smooth_noisy()
    runs = [train(image, "unet", steps=4, random_state=s, model_kwargs=TINY_UNET, **FAST)
            for s in (5, 5, 6)]  # fmt: skip
    outputs = [m.predict(image) for m in runs]
    assert np.array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_max_time_stops_training():
    # No validation, so no early stop on a plateau: only the clock can end this run.
    model = train(smooth_noisy(), "dncnn", steps=10**6, max_time=1.0, val_fraction=0.0,
                  model_kwargs=TINY_DNCNN, **FAST)  # fmt: skip
    assert model.history["stopped"] == "max_time"
    assert np.isnan(model.history["val_loss"]).all()
    assert model.history["time"][-1] < 10.0
    assert model.history["step"][-1] < 10**6


def test_best_checkpoint_is_kept_and_saved(tmp_path):
    image = smooth_noisy((40, 40))
    model = train(image, "dncnn", steps=30, model_kwargs=TINY_DNCNN, checkpoint_dir=tmp_path,
                  **FAST)  # fmt: skip
    history = model.history
    best = int(np.argmin(history["val_loss"]))
    assert history["best_epoch"] == history["epoch"][best]
    saved = Noise2SelfModel.load(tmp_path / "best.pt", device="cpu")
    assert np.array_equal(saved.predict(image), model.predict(image))


def test_callback_sees_each_epoch_and_can_stop_training():
    image = smooth_noisy()
    seen = []

    def follow(model: Noise2SelfModel) -> bool:
        seen.append((len(model.history["epoch"]), model.predict(image)))
        return len(seen) == 3

    stopped = train(image, "unet", steps=100, model_kwargs=TINY_UNET, ema=0.9, callback=follow,
                    **FAST)  # fmt: skip
    assert [n for n, _ in seen] == [1, 2, 3]
    assert stopped.history["stopped"] == "callback" and stopped.history["step"][-1] == 15
    assert not np.array_equal(seen[0][1], seen[2][1])  # the weights it sees are the live ones
    # A callback that only predicts leaves training exactly as without one (batch norm is
    # back in training mode after each call, even when the kept net is the live one).
    plain = train(image, "dncnn", steps=15, model_kwargs=TINY_DNCNN, **FAST)
    followed = train(image, "dncnn", steps=15, model_kwargs=TINY_DNCNN,
                     callback=lambda m: m.predict(image) is None, **FAST)  # fmt: skip
    assert np.array_equal(plain.predict(image), followed.predict(image))
    assert followed.history["stopped"] == "steps"


def test_compile_default_follows_device_and_budget():
    from sc_noise2self.image.cnn.training import _should_compile

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _should_compile(cuda, 10, None)
    assert _should_compile(cpu, 2000, None) and _should_compile(cpu, None, 240.0)
    assert not _should_compile(cpu, 20, None) and not _should_compile(cpu, None, 5.0)
    assert not _should_compile(cpu, 10**6, 1.0)  # the clock ends it first


def test_failed_compilation_falls_back_to_eager(monkeypatch):
    def broken_compile(net):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        model = train(smooth_noisy(), "dncnn", steps=3, compile=True, model_kwargs=TINY_DNCNN,
                      **FAST)  # fmt: skip
    assert model.history["step"][-1] == 3


def test_torch_jits_own_deprecation_is_not_shown_to_the_user(monkeypatch):
    # Issue 27: compiling imports torch.jit, which warned of its own deprecation on every
    # compiled run. Here a stand-in compile warns as torch 2.13's does.
    import warnings

    def warning_compile(net):
        warnings.warn("`torch.jit.script_method` is deprecated. Please switch to "
                      "`torch.compile` or `torch.export`.", DeprecationWarning, stacklevel=2)
        return net

    monkeypatch.setattr(torch, "compile", warning_compile)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(smooth_noisy(), "dncnn", steps=2, compile=True, model_kwargs=TINY_DNCNN,
              **FAST)  # fmt: skip
    assert not [w for w in caught if "torch.jit" in str(w.message)]


def test_early_stopping_on_a_plateau():
    # lr = 0 freezes the weights, so the validation loss cannot keep improving.
    model = train(smooth_noisy(), "dncnn", steps=500, lr=0.0, patience=2, compile=False,
                  model_kwargs={**TINY_DNCNN, "depth": 2}, **FAST)  # fmt: skip
    assert model.history["stopped"] == "plateau"
    # Bad epochs count from the second half of the schedule on: the epochs ending at steps
    # 250 and 255 are the two that patience=2 allows.
    assert model.history["step"][-1] == 255


def test_saved_files_record_every_architecture_option(tmp_path):
    image = smooth_noisy((24, 24))
    model = train(image, "unet", steps=1, model_kwargs={"channels": (4, 8)}, **FAST)
    assert model.config.model_kwargs == {"channels": [4, 8], "residual": False, "norm": "batch",
                                         "blur_pool": False, "top_skip": True}
    dncnn = train(image, "dncnn", steps=1, model_kwargs={"depth": 3}, **FAST)
    assert dncnn.config.model_kwargs == {"depth": 3, "features": 64, "residual": False}
    with pytest.raises(TypeError, match=r"Unknown model_kwargs \['width'\].*'channels'"):
        train(image, "unet", steps=1, model_kwargs={"width": 8}, **FAST)
    with pytest.raises(TypeError, match=r"\['n_spatial'\] are set from the images"):
        train(image, "unet", steps=1, model_kwargs={"n_spatial": 2}, **FAST)
    # numpy values are stored as plain Python, which a weights_only load accepts.
    given = {"channels": np.array([4, 8]), "residual": np.bool_(False)}
    path = train(image, "unet", steps=1, model_kwargs=given, **FAST).save(tmp_path / "m.pt")
    stored = torch.load(path, weights_only=True)["config"]["model_kwargs"]
    assert stored == {"channels": [4, 8], "residual": False, "norm": "batch",
                      "blur_pool": False, "top_skip": True}
    assert type(stored["channels"][0]) is int


def test_format_1_files_rebuild_the_unet_widths_of_their_time(tmp_path):
    # Format 1 stored only the options given, and the UNet's widths were then the paper's.
    image = smooth_noisy((24, 24))
    model = train(image, "unet", steps=1, model_kwargs={"channels": (32, 64, 128, 256)}, **FAST)
    payload = torch.load(model.save(tmp_path / "new.pt"), weights_only=True)
    payload["format_version"] = 1
    payload["config"]["model_kwargs"] = {}
    torch.save(payload, tmp_path / "old.pt")
    loaded = Noise2SelfModel.load(tmp_path / "old.pt", device="cpu")
    assert np.array_equal(loaded.predict(image), model.predict(image))
    # Saved again, it is a complete format-2 file.
    again = torch.load(loaded.save(tmp_path / "again.pt"), weights_only=True)
    assert again["format_version"] == 2
    assert again["config"]["model_kwargs"] == {"channels": [32, 64, 128, 256],
                                               "residual": False, "norm": "batch",
                                               "blur_pool": False, "top_skip": True}
    payload["format_version"] = 7
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="not a Noise2SelfModel file"):
        Noise2SelfModel.load(tmp_path / "future.pt")


def test_save_load_identical(tmp_path, fitted):
    image = smooth_noisy((29, 31), seed=4)
    path = fitted.save(tmp_path / "sub" / "model.pt")
    loaded = Noise2SelfModel.load(path, device="cpu")
    assert np.array_equal(loaded.predict(image), fitted.predict(image))
    assert np.array_equal(
        loaded.predict(image, invariant=True), fitted.predict(image, invariant=True)
    )
    assert loaded.config == fitted.config
    assert loaded.normalisation == fitted.normalisation
    assert loaded.history["val_loss"] == fitted.history["val_loss"]


def test_denoise_cnn_one_call():
    image = smooth_noisy((24, 24))
    # fallback=False: 3 steps lose to the neighbour mean (test_image_cnn_trust.py), and this
    # test is about the network's own prediction.
    out, model = denoise_cnn(image, "dncnn", steps=3, model_kwargs=TINY_DNCNN, return_model=True,
                             fallback=False, **FAST)  # fmt: skip
    assert out.shape == image.shape
    # The one call averages over flips and transposes, which a single pass does not.
    assert np.array_equal(out, model.predict(image, augment=True))
    assert not np.array_equal(out, model.predict(image))
    plain = denoise_cnn(image, "dncnn", steps=3, model_kwargs=TINY_DNCNN, augment=False,
                        fallback=False, **FAST)  # fmt: skip
    assert np.array_equal(plain, model.predict(image))


# --------------------------------------------------------------------- bad inputs, devices


def test_nan_is_refused():
    image = smooth_noisy()
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train(image, "dncnn", steps=1, **FAST)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="at least 4 pixels"):
        train(np.zeros((3, 30)), "dncnn", steps=1, **FAST)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Unknown model='resnet'"):
        train(smooth_noisy(), "resnet", steps=1, **FAST)
    with pytest.raises(ValueError, match="Unknown masking"):
        train(smooth_noisy(), "dncnn", steps=1, masking="checkerboard", **FAST)
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"CUDA is not available.*device='cpu'"):
        train(smooth_noisy(), "dncnn", steps=1, device="cuda", **FAST)


def test_device_auto_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"


def test_amp_is_cuda_and_native_bf16_cpus_only(monkeypatch):
    from sc_noise2self import _device

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_amp(cpu, None) is None  # float32 on a CPU unless asked
    monkeypatch.setattr(_device, "cpu_computes_bf16", lambda: False)
    with pytest.warns(UserWarning, match="ignored"):
        assert resolve_amp(cpu, True) is None  # emulated bfloat16 is slower than float32
    monkeypatch.setattr(_device, "cpu_computes_bf16", lambda: True)
    assert resolve_amp(cpu, True) is torch.bfloat16
    assert resolve_amp(cpu, "bf16") is torch.bfloat16
    with pytest.warns(UserWarning, match="ignored"):
        assert resolve_amp(cpu, "fp16") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_amp(cuda, None) is torch.bfloat16
    assert resolve_amp(cuda, "fp16") is torch.float16
    assert resolve_amp(cuda, False) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_amp(cuda, True) is torch.float16
    with pytest.raises(ValueError, match="amp="):
        resolve_amp(cuda, "fp8")


def test_predict_wrong_rank(fitted):
    with pytest.raises(ValueError, match="this model takes images of 2 axes"):
        fitted.predict(np.zeros((2, 3, 4, 5)))


def test_cpu_training_runs_channels_last_and_a_loaded_model_predicts_the_same_bits(tmp_path):
    # oneDNN's fast layout on a CPU; the loaded copy must be in it too, or its float
    # rounding differs from the trained model's (the mutation: .to() without the layout).
    image = smooth_noisy((32, 32))
    fitted = train(image, "unet", steps=2, model_kwargs=TINY_UNET, **FAST)
    conv = next(m for m in fitted.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    loaded = Noise2SelfModel.load(fitted.save(tmp_path / "m.pt"), device="cpu")
    conv = next(m for m in loaded.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.array_equal(loaded.predict(image), fitted.predict(image))


@pytest.mark.skipif(not cpu_computes_bf16(),
                    reason="this CPU has no native bfloat16 (AMX or AVX-512 BF16)")
def test_bf16_training_on_a_cpu_that_computes_it():
    image = smooth_noisy((32, 32))
    options = dict(steps=3, model_kwargs=TINY_UNET, **FAST)
    fitted = train(image, "unet", amp="bf16", **options)
    plain = train(image, "unet", **options)
    # Same seeds, other arithmetic: close, not equal (bfloat16 keeps 8 bits of mantissa).
    a, b = fitted.predict(image), plain.predict(image)
    assert np.all(np.isfinite(a)) and not np.array_equal(a, b)
