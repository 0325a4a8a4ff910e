"""bioimage.io model packages (issue 27): exported, tested by bioimageio.core, read back.

``bioimageio.core.test_model`` rebuilds the network from the shipped architecture source
and runs both weight formats on the test input, with the package's pre- and
post-processing, against the test output: it fails if the source, the weights, the
normalisation or the units are wrong.
"""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
core = pytest.importorskip("bioimageio.core")

from sc_noise2self import cli  # noqa: E402
from sc_noise2self import image as im  # noqa: E402

RNG = np.random.default_rng(0)
TINY = {"steps": 2, "progress": False, "device": "cpu", "patch_size": 16}
CASES = {
    "dncnn 2D uint8": ((RNG.random((40, 48)) * 255).astype(np.uint8),
                       dict(model="dncnn", model_kwargs={"depth": 3, "features": 4})),
    "unet 2D RGB float": (RNG.random((40, 48, 3)).astype(np.float32),
                          dict(model="unet", channel_axis=-1,
                               model_kwargs={"channels": [4, 8]})),
    "N2V2 unet 2D float": (RNG.random((40, 48)).astype(np.float32),
                           dict(model="unet", replacement="median",
                                model_kwargs={"channels": [4, 8], "blur_pool": True,
                                              "top_skip": False})),
    "dncnn 3D uint16": ((RNG.random((10, 24, 24)) * 4000).astype(np.uint16),
                        dict(model="dncnn", n_spatial=3, patch_size=8,
                             model_kwargs={"depth": 2, "features": 4})),
}


def trained(name: str):
    image, options = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two steps lose to the neighbour mean, as they should
        return image, im.train(image, **{**TINY, **options})


def rdf_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


@pytest.mark.parametrize("name", list(CASES))
def test_an_exported_package_passes_bioimageio_core_and_reads_back_the_same(tmp_path, name):
    image, model = trained(name)
    path = model.export_bioimageio(tmp_path / "model.zip", sample=image, authors=["A. Author"])
    summary = core.test_model(path)
    failed = [(d.name, [e.msg[:200] for e in d.errors]) for d in summary.details
              if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = {d.name for d in summary.details}
    assert any("torchscript" in n for n in tested) and any("state_dict" in n for n in tested)
    again = im.load_model(path, device="cpu")
    np.testing.assert_array_equal(again.predict(image), model.predict(image))
    rdf = rdf_of(path)
    assert rdf["inputs"][0]["data"]["type"] == (image.dtype.name if image.dtype.kind == "u"
                                                else "float32")
    assert [c["doi"] for c in rdf["cite"] if "doi" in c] == ["10.48550/arXiv.1901.11365"]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["callable"] == \
        type(model.net).__name__
    # The shipped weights are in the default layout whatever this CPU trained in.
    with zipfile.ZipFile(path) as archive:
        weights = torch.load(archive.open("weights.pt"), weights_only=True)
    assert all(w.is_contiguous() for w in weights.values())


def test_the_package_takes_the_image_in_its_own_units(tmp_path):
    # A uint8 file goes into Fiji as 0-255: the package's pre-processing must scale it as
    # predict() does, and its output comes back in 0-255 too.
    image, model = trained("dncnn 2D uint8")
    path = model.export_bioimageio(tmp_path / "m.zip", sample=image, authors=["A"])
    with zipfile.ZipFile(path) as archive:
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    assert test_input.dtype == np.uint8 and test_input.max() > 1
    np.testing.assert_allclose(test_output[0, 0], model.predict(image) * 255, rtol=1e-5,
                               atol=1e-3)


def test_pixel_sizes_and_channel_names_are_written(tmp_path):
    image, model = trained("unet 2D RGB float")
    sample = im.ImageData(image, "YXC", (0.2, 0.1, 1.0), {"Y": "micrometer", "X": "micrometer"})
    path = model.export_bioimageio(tmp_path / "m.zip", sample=sample, authors=["A"],
                                   channel_names=["dapi", "actin", "tubulin"])
    axes = {a.get("id", a["type"]): a for a in rdf_of(path)["inputs"][0]["axes"]}
    # Within 1e-15: the spec's float check of output sizes can need the next float.
    assert (axes["y"]["scale"], axes["x"]["scale"]) == pytest.approx((0.2, 0.1), rel=1e-15)
    assert axes["x"]["unit"] == "micrometer"
    assert axes["channel"]["channel_names"] == ["dapi", "actin", "tubulin"]


def test_the_command_line_exports_and_predicts_with_the_package(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image, model = trained("dncnn 2D uint8")
    tifffile.imwrite(tmp_path / "in.tif", image)
    model.save(tmp_path / "m.pt")
    assert cli.main(["image", "export", str(tmp_path / "m.pt"), "--sample",
                     str(tmp_path / "in.tif"), "--out", str(tmp_path / "m.zip"),
                     "--author", "A. Author"]) == 0
    assert core.test_model(tmp_path / "m.zip").status == "passed"
    for source in ("m.pt", "m.zip"):
        assert cli.main(["image", "predict", str(tmp_path / "in.tif"), "--model",
                         str(tmp_path / source), "--out", str(tmp_path / f"{source}.tif"),
                         "--no-fallback"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.pt.tif"),
                                  tifffile.imread(tmp_path / "m.zip.tif"))


def test_an_existing_package_is_kept_unless_overwrite(tmp_path):
    image, model = trained("dncnn 2D uint8")
    path = model.export_bioimageio(tmp_path / "m.zip", sample=image, authors=["A"])
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        model.export_bioimageio(path, sample=image, authors=["B"])
    assert path.read_bytes() == before
    model.export_bioimageio(path, sample=image, authors=["B"], overwrite=True)
    assert rdf_of(path)["authors"] == [{"name": "B"}]


def test_a_model_trained_on_a_file_takes_the_files_values(tmp_path):
    # A model trained by `image train` learned a uint8 file's 0-255 values, not [0, 1]: the
    # package must not scale its input, or it would denoise a 255 times darker image.
    tifffile = pytest.importorskip("tifffile")
    image = (np.clip(RNG.normal(120, 30, (2, 48, 48)), 0, 255)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["image", "train", str(tmp_path / "in.tif"), "--out",
                         str(tmp_path / "t.tif"), "--steps", "2", "--device", "cpu",
                         "--save-model", str(tmp_path / "m.pt")]) == 0
        assert cli.main(["image", "predict", str(tmp_path / "in.tif"), "--model",
                         str(tmp_path / "m.pt"), "--out", str(tmp_path / "p.tif"),
                         "--no-fallback", "--dtype", "float32"]) == 0
    assert cli.main(["image", "export", str(tmp_path / "m.pt"), "--sample",
                     str(tmp_path / "in.tif"), "--axes", "TYX", "--out",
                     str(tmp_path / "m.zip"), "--author", "A"]) == 0
    assert core.test_model(tmp_path / "m.zip").status == "passed"
    with zipfile.ZipFile(tmp_path / "m.zip") as archive:
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    np.testing.assert_array_equal(test_input[0, 0], image[1])  # the middle time point
    predicted = tifffile.imread(tmp_path / "p.tif")[1]  # the file workflow's own output
    np.testing.assert_allclose(test_output[0, 0], predicted, rtol=1e-4, atol=1e-2)
