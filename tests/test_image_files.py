"""Microscopy files and images larger than memory (issue 18): round trips, blocks, workflows."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from skimage import data

from sc_noise2self import image
from sc_noise2self.image import blocks, files, workflows

pytest.importorskip("tifffile")
pytest.importorskip("ome_zarr")

RNG = np.random.default_rng(0)
CLEAN = data.camera()[:160, :176] / 255.0
NOISY = (CLEAN + 0.1 * RNG.standard_normal(CLEAN.shape)).astype(np.float32)


def _scale(axes: str) -> tuple[float, ...]:
    return tuple(1.0 if a == "C" else 0.25 * (i + 1) for i, a in enumerate(axes))


@pytest.mark.parametrize("ending", [".ome.tif", ".tiff", ".zarr", ".ome.zarr"])
@pytest.mark.parametrize(("axes", "shape"), [("YX", (30, 40)), ("ZYX", (4, 30, 40)),
                                             ("CYX", (2, 30, 40)), ("TCZYX", (2, 3, 4, 16, 20))])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_keeps_shape_dtype_axes_scale(tmp_path, ending, axes, shape, dtype):
    values = (RNG.random(shape) * 200).astype(dtype)
    path = tmp_path / f"image{ending}"
    files.write(path, values, axes=axes, scale=_scale(axes))
    for lazy in (False, True):
        back = files.read(path, lazy=lazy)
        assert back.axes == axes and back.shape == shape and back.dtype == dtype
        np.testing.assert_allclose(back.scale, _scale(axes))
        assert np.array_equal(np.asarray(back.data), values)
    assert hasattr(files.read(path, lazy=True).data, "dask")  # lazy really is lazy


def test_imagej_tiff_scale_and_sequence_axes(tmp_path):
    import tifffile

    path = tmp_path / "imagej.tif"
    stack = (RNG.random((5, 20, 24)) * 100).astype(np.uint16)
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    back = files.read(path)
    assert back.axes == "ZYX"
    np.testing.assert_allclose(back.scale, (1.5, 0.2, 0.2), rtol=1e-6)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, stack)  # no metadata: a sequence of images, taken as time
    assert files.read(plain).axes == "TYX"
    assert files.read(plain, axes="ZYX").axes == "ZYX"


def test_a_lazy_image_is_written_plane_by_plane(tmp_path):
    import dask.array as da

    values = da.from_array(RNG.random((6, 32, 32)).astype(np.float32), chunks=(1, 32, 32))
    files.write(tmp_path / "lazy.tif", values, axes="ZYX")
    files.write(tmp_path / "lazy.zarr", values, axes="ZYX")
    for name in ("lazy.tif", "lazy.zarr"):
        assert np.array_equal(files.read(tmp_path / name).data, values.compute())


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(("axes", "shape"), [("XY", (30, 40)), ("YXC", (30, 40, 3)),
                                             ("ZYXC", (2, 30, 40, 4)), ("YXZ", (30, 40, 2))])
def test_a_tiff_keeps_any_axis_order_and_zarr_stores_omes(tmp_path, axes, shape, lazy):
    # Issue 25: an "XY" TIFF came back transposed and RGB pixels came back as CYX.
    import dask.array as da

    values = (RNG.random(shape) * 200).astype(np.uint8)
    given = da.from_array(values, chunks=-1) if lazy else values
    files.write(tmp_path / "a.tif", given, axes=axes, scale=_scale(axes))
    back = files.read(tmp_path / "a.tif")
    assert back.axes == axes and back.shape == shape
    np.testing.assert_allclose(back.scale, _scale(axes))
    assert np.array_equal(back.data, values)
    files.write(tmp_path / "a.zarr", given, axes=axes, scale=_scale(axes))
    stored = files.read(tmp_path / "a.zarr")  # OME-Zarr holds OME's order only
    assert stored.axes == files.ImageData(values, axes).canonical().axes
    assert np.array_equal(stored.in_order(axes).data, values)


def test_file_workflows_write_a_tiff_in_the_inputs_layout(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "xy.tif", NOISY[:64, :80])
    workflows.calibrate_file(tmp_path / "xy.tif", tmp_path / "xy_out.tif", axes="XY",
                             method="gaussian", param_grid={"sigma": [1.0]}, mix=False)
    files.write(tmp_path / "yx.tif", NOISY[:64, :80].T, axes="YX")
    workflows.calibrate_file(tmp_path / "yx.tif", tmp_path / "yx_out.tif",
                             method="gaussian", param_grid={"sigma": [1.0]}, mix=False)
    as_xy = files.read(tmp_path / "xy_out.tif")
    assert as_xy.axes == "XY" and as_xy.shape == (64, 80)
    np.testing.assert_allclose(as_xy.data, files.read(tmp_path / "yx_out.tif").data.T,
                               atol=1e-6)
    rgb = (np.stack([CLEAN[:64, :64]] * 3, axis=-1) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    workflows.calibrate_file(tmp_path / "rgb.tif", tmp_path / "rgb_out.tif", method="gaussian")
    with tifffile.TiffFile(tmp_path / "rgb_out.tif") as tif:
        assert tif.series[0].shape == rgb.shape and tif.pages[0].photometric == 2  # RGB


def test_writes_refuse_existing_outputs_and_leave_no_partial_files(tmp_path):
    files.write(tmp_path / "a.tif", NOISY, axes="YX")
    files.write(tmp_path / "a.zarr", NOISY, axes="YX")
    for name in ("a.tif", "a.zarr"):
        with pytest.raises(FileExistsError, match="exists"):
            files.write(tmp_path / name, NOISY, axes="YX")
        files.write(tmp_path / name, NOISY[::2], axes="YX", overwrite=True)
        assert files.read(tmp_path / name).shape == NOISY[::2].shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "a.zarr"]


@pytest.mark.parametrize("method", ["gaussian", "median", "nl_means"])
def test_blocks_equal_the_whole_image_for_a_calibrated_method(method):
    whole, calibration = image.denoise(NOISY, method, return_calibration=True)
    out = blocks.denoise_blocks(files.ImageData(NOISY, "YX"), calibration, block=48)
    np.testing.assert_allclose(out, whole, atol=1e-6)


@pytest.mark.parametrize("mask", ["blocks", "rows"])
def test_blocks_equal_the_whole_image_with_structured_masks(mask):
    """With blocks, a kept pixel reads stand-ins up to 2 reach + 1 past the method's reach;
    the halo covers it. Mutation: the halo of pixel masks (method reach + 1): the median's
    tiles then differ by up to 0.1 (found by review)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole, calibration = image.denoise(NOISY, "median", return_calibration=True,
                                           mask=mask, fallback=False)
    assert calibration.settings["mask"] == mask
    out = blocks.denoise_blocks(files.ImageData(NOISY, "YX"), calibration, block=32,
                                fallback=False)
    np.testing.assert_allclose(out, whole, atol=1e-6)


def test_blocks_equal_the_whole_volume_and_loop_over_time():
    volume = (RNG.random((12, 40, 44)) + np.linspace(0, 1, 44)).astype(np.float32)
    whole, calibration = image.denoise(volume, "median", return_calibration=True)
    out = blocks.denoise_blocks(files.ImageData(volume, "ZYX"), calibration, spatial="ZYX",
                                block=16)
    np.testing.assert_allclose(out, whole, atol=1e-6)
    frames = np.stack([NOISY[:64, :64], NOISY[64:128, :64]])
    _, plane = image.denoise(frames[0], "gaussian", return_calibration=True)
    out = blocks.denoise_blocks(files.ImageData(frames, "TYX"), plane, block=32)
    np.testing.assert_allclose(out[1], plane.denoise(frames[1]), atol=1e-6)


def test_cnn_blocks_equal_one_whole_prediction():
    model = image.train(NOISY, "unet", steps=2, patch_size=32, batch_size=2, device="cpu",
                        progress=False, val_fraction=0.0)
    out = blocks.predict_blocks(files.ImageData(NOISY, "YX"), model, block=48)
    np.testing.assert_allclose(out, model.predict(NOISY), atol=1e-5)
    volume = RNG.random((16, 32, 36)).astype(np.float32)
    model3 = image.train(volume, "unet", steps=2, patch_size=16, batch_size=2, device="cpu",
                         progress=False, n_spatial=3, val_fraction=0.0)
    out3 = blocks.predict_blocks(files.ImageData(volume, "ZYX"), model3, block=16)
    np.testing.assert_allclose(out3, model3.predict(volume), atol=1e-5)


def test_cnn_blocks_equal_one_whole_prediction_for_a_block_model():
    """A block model predicts J-invariantly, so its tiles need the stand-ins' reach too.

    Mutation: the halo of the direct pass (the network's reach alone).
    """
    model = image.train(NOISY, "dncnn", steps=2, patch_size=32, batch_size=2, device="cpu",
                        progress=False, val_fraction=0.0, mask="blocks",
                        model_kwargs={"depth": 3, "features": 8})  # reaches 3 pixels
    assert model.reach >= 1
    out = blocks.predict_blocks(files.ImageData(NOISY, "YX"), model, block=48, fallback=False)
    np.testing.assert_allclose(out, model.predict(NOISY), atol=1e-5)


def test_a_volume_four_times_the_memory_cap_is_denoised_block_by_block(tmp_path):
    """A zarr volume of 16.8 MB denoised into a zarr store with a traced peak under 4.2 MB."""
    import dask.array as da
    import zarr

    volume = zarr.open_array(tmp_path / "big.zarr", mode="w", shape=(64, 256, 256),
                             chunks=(1, 256, 256), dtype=np.float32)
    for z in range(64):  # written plane by plane: the test never holds the volume either
        volume[z] = (np.roll(CLEAN[:128, :128], z, axis=0).repeat(2, 0).repeat(2, 1)
                     + 0.1 * RNG.standard_normal((256, 256))).astype(np.float32)
    cap = volume.nbytes / 4
    lazy = files.ImageData(da.from_zarr(volume), "ZYX")
    # Outside the trace: the in-memory sample's calibration, and a small warm-up run, so
    # that first-time imports (scikit-image, ome-zarr, numcodecs) are not counted as blocks.
    calibration = blocks.calibrate_sample(lazy, spatial="YX", size=96, method="gaussian")
    with files.atomic_folder(tmp_path / "warm.zarr") as folder:
        blocks.denoise_blocks(files.ImageData(lazy.data[:1, :64, :64], "ZYX"), calibration,
                              block=32, out=files.create_zarr(folder, files.ImageData(
                                  lazy.data[:1, :64, :64], "ZYX")))
    tracemalloc.start()
    try:
        with files.atomic_folder(tmp_path / "out.zarr") as folder:
            out = files.create_zarr(folder, lazy)
            blocks.denoise_blocks(lazy, calibration, block=128, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < cap, f"peak {peak / 1e6:.1f} MB against a cap of {cap / 1e6:.1f} MB"
    result = files.read(tmp_path / "out.zarr", lazy=True)
    plane = np.asarray(volume[33])
    np.testing.assert_allclose(np.asarray(result.data[33]), calibration.denoise(plane),
                               atol=1e-6)


def test_workflows_keep_axes_scale_and_refuse_existing_outputs(tmp_path):
    stack = np.stack([NOISY[:96, :96], NOISY[32:128, 40:136]])
    source = tmp_path / "in.ome.tif"
    files.write(source, stack, axes="TYX", scale=(2.0, 0.3, 0.3))
    calibration = workflows.calibrate_file(source, tmp_path / "out.zarr", method="gaussian",
                                           sample=64, block=48)
    out = files.read(tmp_path / "out.zarr")
    assert out.axes == "TYX" and out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.scale, (2.0, 0.3, 0.3))
    np.testing.assert_allclose(out.data[1], calibration.denoise(stack[1]), atol=1e-6)
    with pytest.raises(FileExistsError, match="exists"):
        workflows.calibrate_file(source, tmp_path / "out.zarr", method="gaussian")
    with pytest.raises(FileExistsError, match="is the input"):
        workflows.calibrate_file(source, source, method="gaussian")
    with pytest.warns(image.BaselineWarning):  # two steps do not beat the neighbour mean
        model = workflows.train_file(source, steps=2, patch_size=32, batch_size=2,
                                     device="cpu", progress=False, save_model=tmp_path / "m.pt")
    assert model.beats_baseline is False
    with pytest.warns(image.BaselineWarning, match="neighbour mean is written instead"):
        workflows.predict_file(source, tmp_path / "m.pt", tmp_path / "pred.tif", block=48)
    predicted = files.read(tmp_path / "pred.tif")
    assert predicted.axes == "TYX" and predicted.shape == stack.shape
    from sc_noise2self.image.referee import neighbour_mean  # the fallback

    np.testing.assert_allclose(predicted.data[0], neighbour_mean(stack[0]), atol=1e-5)
    with pytest.warns(image.BaselineWarning, match="written anyway"):
        workflows.predict_file(source, model, tmp_path / "raw.zarr", block=48, fallback=False)
    np.testing.assert_allclose(files.read(tmp_path / "raw.zarr").data[0],
                               model.predict(stack[0]), atol=1e-5)


def test_per_channel_calibration_is_its_own(tmp_path):
    two = np.stack([NOISY[:80, :80], 10.0 * NOISY[80:160, :80]])  # different units per channel
    source = tmp_path / "channels.zarr"
    files.write(source, two, axes="CYX")
    shared = workflows.calibrate_file(source, tmp_path / "shared.zarr", method="gaussian",
                                      sample=64, block=48)
    each = workflows.calibrate_file(source, tmp_path / "each.zarr", method="gaussian",
                                    per_channel=True, sample=64, block=48)
    assert not isinstance(shared, list) and len(each) == 2
    out = files.read(tmp_path / "each.zarr")
    np.testing.assert_allclose(out.data[1], each[1].denoise(two[1]), atol=1e-5)


def test_train_file_takes_evenly_spaced_frames_of_a_crop(tmp_path, monkeypatch):
    seen = {}
    from sc_noise2self.image.cnn import training

    def fake_train(images, model, **options):
        seen["images"], seen["options"] = images, options
        raise RuntimeError("stop here")

    monkeypatch.setattr(training, "train", fake_train)
    volume = np.arange(10 * 40 * 50, dtype=np.float32).reshape(10, 40, 50)
    with pytest.raises(RuntimeError, match="stop here"):
        workflows.train_file(files.ImageData(volume, "ZYX"), spatial="YX", crop=16, frames=3)
    images = seen["images"]
    assert len(images) == 3 and images[0].shape == (16, 16)
    np.testing.assert_array_equal(images[1], volume[4, 12:28, 17:33])  # planes 0, 4 (4.5), 9
    np.testing.assert_array_equal(images[2], volume[9, 12:28, 17:33])
    assert seen["options"]["n_spatial"] == 2


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_an_integer_file_is_written_back_in_its_dtype_unless_asked(tmp_path, suffix):
    # Issue 27: outputs were always float32, so a uint8 file grew 4x.
    rng = np.random.default_rng(0)
    u16 = (rng.random((48, 40)) * 3000 + 500).astype(np.uint16)
    source = files.write(tmp_path / "in.tif", u16, axes="YX")
    workflows.calibrate_file(source, tmp_path / f"kept{suffix}", method="gaussian",
                             sample=32, progress=False)
    kept = files.read(tmp_path / f"kept{suffix}").data
    assert kept.dtype == np.uint16
    workflows.calibrate_file(source, tmp_path / f"float{suffix}", method="gaussian",
                             sample=32, dtype="float32", progress=False)
    as_float = np.asarray(files.read(tmp_path / f"float{suffix}").data)
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(kept), np.rint(as_float).astype(np.uint16))


def test_values_outside_an_integer_range_are_clipped_and_counted():
    out = np.zeros(4, dtype=np.uint8)
    rounded = workflows.RoundedInto(out)
    rounded[:] = np.array([-3.0, 10.4, 10.6, 300.0], dtype=np.float32)
    assert out.tolist() == [0, 10, 11, 255]
    with pytest.warns(UserWarning, match=r"2 of 4 denoised values \(50%\) fell outside "
                                         r"uint8's range \[0, 255\]"):
        rounded.warn_if_clipped()


def test_a_coupled_method_warns_of_blocks_only_when_the_image_is_cut_into_blocks():
    # Issue 27: the "blocks approximate" warning appeared for images within one block,
    # which are denoised whole.
    import warnings

    noisy = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    calibration = image.calibrate(noisy, "tv", {"weight": [0.05, 0.1, 0.5]}, progress=False)
    whole = files.ImageData(noisy, "YX")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*couples every pixel.*")
        one_block = blocks.denoise_blocks(whole, calibration, block=128)
    np.testing.assert_allclose(one_block, calibration.denoise(noisy), atol=1e-6)
    with pytest.warns(UserWarning, match="couples every pixel"):
        blocks.denoise_blocks(whole, calibration, block=32)


@pytest.mark.parametrize(("name", "axes"), [("a.ome.tif", "CYX"), ("a.tif", "YXC"),
                                           ("a.zarr", "CYX")])
def test_channel_names_and_units_make_the_round_trip(tmp_path, name, axes):
    # Issue 27: channel names and units were dropped.
    pixels = (np.random.default_rng(0).random((3, 40, 48)) * 200).astype(np.uint8)
    original = files.ImageData(pixels, "CYX", (1.0, 0.2, 0.1),
                               {"Y": "micrometer", "X": "micrometer"}, ("dapi", "actin", "mito"))
    back = files.read(files.write(tmp_path / name, original.in_order(axes)))
    assert back.axes == axes and back.channel_names == ("dapi", "actin", "mito")
    assert back.units == {"Y": "micrometer", "X": "micrometer"}
    assert dict(zip(back.axes, back.scale, strict=True)) == {"C": 1.0, "Y": 0.2, "X": 0.1}


@pytest.mark.parametrize("suffix", [".ome.tif", ".zarr"])
def test_a_denoised_file_keeps_the_channel_names_and_units(tmp_path, suffix):
    pixels = (np.random.default_rng(1).random((2, 48, 40)) * 3000).astype(np.uint16)
    source = files.write(tmp_path / "in.ome.tif", files.ImageData(
        pixels, "CYX", (1.0, 0.3, 0.3), {"Y": "micrometer", "X": "micrometer"}, ("a", "b")))
    workflows.calibrate_file(source, tmp_path / f"out{suffix}", method="gaussian", sample=32,
                             progress=False)
    out = files.read(tmp_path / f"out{suffix}")
    assert out.channel_names == ("a", "b") and out.units["X"] == "micrometer"
    assert out.dtype == np.uint16


def test_channel_names_must_name_every_channel():
    with pytest.raises(ValueError, match="must name each of the 3 channels"):
        files.ImageData(np.zeros((3, 4, 4)), "CYX", channel_names=("a", "b"))


def test_large_ome_zarr_outputs_carry_a_multiscale_pyramid(tmp_path):
    # Issue 27: OME-Zarr outputs had one level, so viewers loaded the full resolution.
    import json

    import zarr

    pixels = (np.random.default_rng(0).random((1100, 1030)) * 200).astype(np.uint8)
    files.write(tmp_path / "big.zarr", pixels, axes="YX", scale=(0.1, 0.1))
    datasets = json.loads((tmp_path / "big.zarr" / "zarr.json").read_text())[
        "attributes"]["ome"]["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in datasets]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    assert scales == [[0.1, 0.1], [0.2, 0.2], [0.4, 0.4]]
    group = zarr.open_group(str(tmp_path / "big.zarr"), mode="r")
    halved = np.rint(pixels.reshape(550, 2, 515, 2).mean(axis=(1, 3))).astype(np.uint8)
    np.testing.assert_array_equal(group["1"][:], halved)
    assert [level.shape for level in files.pyramid(tmp_path / "big.zarr")] == [
        (1100, 1030), (550, 515), (275, 257)]
    np.testing.assert_array_equal(files.read(tmp_path / "big.zarr").data, pixels)  # level 0
    # The block-by-block outputs get one too, in their stored dtype.
    files.write(tmp_path / "big.tif", pixels, axes="YX", scale=(0.1, 0.1))
    workflows.calibrate_file(tmp_path / "big.tif", tmp_path / "out.zarr", method="gaussian",
                             sample=64, progress=False)
    assert [level.dtype for level in files.pyramid(tmp_path / "out.zarr")] == [np.uint8] * 3
    small = files.write(tmp_path / "small.zarr", pixels[:300, :300], axes="YX")
    assert len(files.pyramid(small)) == 1
