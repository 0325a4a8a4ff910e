"""Models the community can share: bioimage.io model packages (spec 0.5) out and back in.

:func:`export_bioimageio` writes a trained :class:`~.model.Noise2SelfModel` as a bioimage.io
model package, a zip that Fiji/deepImageJ, ilastik, BiaPy and ``bioimageio.core`` run:

- ``rdf.yaml``, the description: one input and one output tensor with their axes, channel
  names and pixel sizes, the normalisation as ``scale_linear`` pre- and post-processing,
  citations of Noise2Self and this package, and this package's own settings under
  ``config.sc_noise2self`` (layout, normalisation, training settings and history);
- the weights as a PyTorch state dict (with SHA-256), whose architecture's source is
  :mod:`.networks` as it is (it imports only torch), and as TorchScript for consumers
  without Python;
- a test input cut from the user's image and the model's output on it, a cover made from
  them, and a README.

The package's input is the image in its own units and dtype (a uint8 image as 0-255), its
output float32 in the same units. A model trained in memory on integer images learned them
scaled into [0, 1]; one trained on a file learned the file's own values
(:func:`training_unit` tells them apart); either way the scaling is part of the pre- and
post-processing.

:func:`load_bioimageio` reads back a package this module wrote. Writing needs
``bioimageio.spec`` (the ``[bioimageio]`` extra); reading needs only PyYAML.
"""

from __future__ import annotations

import inspect
import io as _bytes_io
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...io import atomic_path, check_output
from ..checks import as_array, check_flag
from ..files import ImageData
from . import networks
from .io import ModelParts, payload_of, rebuild_checked

#: Whom a package cites: the method, and the package that trained the model.
CITATIONS = (
    {"text": "Batson J. and Royer L. Noise2Self: Blind Denoising by Self-Supervision. "
             "ICML 2019.", "doi": "10.48550/arXiv.1901.11365"},
    {"text": "sc_noise2self: Noise2Self for single-cell counts and microscopy images.",
     "url": "https://github.com/sc-noise2self/sc_noise2self"},
)
#: Pixels per spatial axis of the test tensors at most (a centre crop of the sample).
TEST_SIZE = 256
_INPUT, _OUTPUT = "raw", "denoised"


def export_bioimageio(model: Any, path: str | Path, *, sample, authors: Sequence[str],
                      name: str | None = None, description: str | None = None,
                      license: str = "CC-BY-4.0", pixel_size: Sequence[float] | None = None,
                      unit: str = "micrometer", channel_names: Sequence[str] | None = None,
                      overwrite: bool = False) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``), spec 0.5.

    Parameters
    ----------
    model
        A trained :class:`~sc_noise2self.image.cnn.model.Noise2SelfModel`.
    path
        The ``.zip`` to write.
    sample
        One image laid out like the training images, in their dtype (a uint8 image for a
        model trained on uint8 files): the test input is a centre crop of it, and its dtype
        sets the package's input units. An :class:`~sc_noise2self.image.ImageData` also
        gives the pixel sizes and units.
    authors
        At least one name: bioimage.io asks who made the model.
    name, description
        Shown on the model zoo; default from the architecture.
    license
        SPDX identifier of the weights' license.
    pixel_size
        Physical size of a pixel per spatial axis (z, y, x order), default the sample's
        scale when it has one, else none.
    unit
        Unit of ``pixel_size``.
    channel_names
        One name per channel; default the sample's (an ImageData read from a file that
        names them), else ``channel0``, ... .
    overwrite
        Replace an existing file.

    Returns
    -------
    The path written.
    """
    if model.hides_structure:
        # A bioimage.io consumer runs one direct pass; this model predicts only through the
        # J-invariant passes (a direct pass gave 5.5 dB on camera against 25.9 invariant).
        hidden = (f"whole lines (line_axes={model.line_axes})" if model.line_axes
                  else f"blocks (reach {model.reach})")
        raise ValueError(
            f"This model hides {hidden} for correlated noise, so its predictions need one "
            "pass per phase with those hidden, which Fiji, ilastik and other bioimage.io "
            "consumers do not run: exported, it would pass the correlated noise through. "
            "Use it here (model.predict, 'image predict'), or train with mask='pixel' to "
            "export.")
    path = _check_target(path, overwrite)
    authors = _check_authors(authors)
    if channel_names is None and isinstance(sample, ImageData) and sample.channel_names:
        channel_names = sample.channel_names  # the file's stains
    pixels, pixel_size, unit = _sample_pixels(sample, pixel_size, unit)
    model._check_image(pixels)  # the model's own checks of its input
    spec = _require_spec()
    unit_value = training_unit(model, pixels.dtype)
    crop = _crop_slices(model, pixels)
    test_input = _batch_of_one(model, pixels[crop])  # the sample's own dtype and units
    in_training_units = (pixels[crop].astype(np.float64) * unit_value).astype(np.float32)
    prediction = model.predict(in_training_units, keep_constant=False)
    test_output = _batch_of_one(model, prediction / unit_value).astype(np.float32)
    names = _channel_names(channel_names, model.n_channels)
    with tempfile.TemporaryDirectory(prefix="n2s_bioimageio_") as folder:
        files = _write_files(Path(folder), model, test_input, test_output)
        descr = _description(spec, model, files, pixels.dtype, unit_value, names, pixel_size,
                             unit, authors, name, description, license)
        with atomic_path(path, overwrite=overwrite) as temporary:
            spec.save_bioimageio_package(descr, output_path=temporary)
    return path


def load_bioimageio(path: str | Path) -> ModelParts:
    """Read a package written by :func:`export_bioimageio`: the parts of the model.

    Parameters
    ----------
    path
        The ``.zip``.

    Returns
    -------
    The :class:`~sc_noise2self.image.cnn.io.ModelParts`, weights on the CPU. A package of
    another tool, of an unsupported spec version, or a damaged zip gives a ``ValueError``
    that names the file and says what to do.
    """
    import yaml

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            rdf = yaml.safe_load(archive.read("rdf.yaml"))
            ours = _our_config(rdf, path)
            source = rdf["weights"]["pytorch_state_dict"]["source"]
            state = torch.load(_bytes_io.BytesIO(archive.read(source)), map_location="cpu",
                               weights_only=True)
    except (zipfile.BadZipFile, KeyError, EOFError, RuntimeError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"{str(path)!r} is not a readable bioimage.io package "
                         f"({type(error).__name__}: {str(error)[:200]}); it may be truncated "
                         "or corrupted. Export the model again.") from error
    return rebuild_checked({**ours, "state_dict": state}, path)


def is_package(path: str | Path) -> bool:
    """Whether ``path`` is meant as a bioimage.io package: a ``.zip``, or a zip with an RDF.

    (``torch.save`` files are zips too, without ``rdf.yaml``.)
    """
    path = Path(path)
    if path.suffix == ".zip":
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "rdf.yaml" in archive.namelist()


def _our_config(rdf: Any, path: Path) -> dict:
    """Our settings in a package's ``rdf.yaml``, or why they cannot be used."""
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ValueError(f"{str(path)!r} does not describe a bioimage.io model.")
    version = str(rdf.get("format_version", ""))
    if not version.startswith("0.5."):
        raise ValueError(f"{str(path)!r} is a bioimage.io model of spec {version or '?'}; "
                         "sc_noise2self reads spec 0.5 packages that it exported.")
    ours = (rdf.get("config") or {}).get("sc_noise2self")
    if not isinstance(ours, dict):
        made_by = rdf.get("name", "an unnamed model")
        raise ValueError(
            f"{str(path)!r} ({made_by!r}) was not exported by sc_noise2self: it has no "
            "config.sc_noise2self settings to rebuild a Noise2SelfModel from. Run it with "
            "bioimageio.core (bioimageio.core.predict) or the tool that made it."
        )
    return ours


def _require_spec():
    try:
        import bioimageio.spec as spec
    except ImportError as error:
        raise ImportError("Exporting a bioimage.io package needs bioimageio.spec: "
                          "pip install 'sc_noise2self[bioimageio]'.") from error
    return spec


def _check_target(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.suffix != ".zip":
        raise ValueError(f"path={str(path)!r}: a bioimage.io package is a .zip file; pass a "
                         "path ending in .zip.")
    return check_output(path, overwrite=check_flag(overwrite, "overwrite"))


def _check_authors(authors: Sequence[str]) -> list[str]:
    names = [authors] if isinstance(authors, str) else list(authors or [])
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"authors={authors!r}: bioimage.io asks who made the model; pass at "
                         "least one name, e.g. authors=['Ada Lovelace'].")
    return [n.strip() for n in names]


def _sample_pixels(sample, pixel_size, unit) -> tuple[np.ndarray, list[float] | None, str]:
    """The sample's pixels, and the pixel size (given, or the ImageData's scale)."""
    if isinstance(sample, ImageData):
        if pixel_size is None and any(s != 1.0 for a, s in zip(sample.axes, sample.scale,
                                                                 strict=True) if a in "ZYX"):
            pixel_size = [s for a, s in zip(sample.axes, sample.scale, strict=True)
                          if a in "ZYX"]
            unit = next((sample.units[a] for a in "ZYX" if a in sample.units), unit)
        sample = np.asarray(sample.data)
    return as_array(sample), (None if pixel_size is None else list(map(float, pixel_size))), unit


def training_unit(model: Any, dtype: np.dtype) -> float:
    """What one step of the sample's dtype is in the units the model was trained in.

    Floats are taken as they are (1). Integers depend on how the model was trained: the
    in-memory API scales integer images into [0, 1] (:func:`~..checks.as_float`), while the
    file workflows train on the file's own values (a uint8 file as 0-255). The model's
    normalisation tells them apart: percentiles above 1 mean raw values.
    """
    if dtype.kind == "f" or max(model.normalisation.high) > 1.0:
        return 1.0
    from skimage.util import img_as_float

    return float(img_as_float(np.array([1], dtype=dtype))[0])


def _crop_slices(model: Any, image: np.ndarray) -> tuple[slice, ...]:
    """A centre crop of at most :data:`TEST_SIZE` per spatial axis, a multiple of the net's."""
    multiple = int(getattr(model.net, "size_multiple", 1))
    slices = []
    for axis, size in enumerate(image.shape):
        if axis == model.layout.channel_axis:
            slices.append(slice(None))
            continue
        keep = min(size, TEST_SIZE) // multiple * multiple
        if keep == 0:
            raise ValueError(f"sample has {size} pixels along axis {axis}; this network needs "
                             f"at least {multiple} (its size multiple). Pass a larger sample.")
        start = (size - keep) // 2
        slices.append(slice(start, start + keep))
    return tuple(slices)


def _batch_of_one(model: Any, image: np.ndarray) -> np.ndarray:
    """``(1, channels, *spatial)``, in the image's dtype."""
    axis = model.layout.channel_axis
    return (image[None] if axis is None else np.moveaxis(image, axis, 0))[None]


def readme(model: Any) -> str:
    """The package's documentation: what the model is, what it takes, how to run it."""
    config = model.config
    steps = model.history.get("step") or ["?"]
    return f"""# Noise2Self {config.model} denoiser

Trained with [sc_noise2self](https://github.com/sc-noise2self/sc_noise2self) by Noise2Self
(Batson & Royer, ICML 2019): a network trained to predict each pixel from its neighbours
with the pixel itself hidden ({config.masking} masking, stride {config.mask_stride}), on the
noisy images alone. No clean images were used.

- Input `{_INPUT}`: the image in its own units and dtype, {model.n_channels} channel(s),
  {model.layout.n_spatial} spatial axes; each spatial size a multiple of
  {int(getattr(model.net, "size_multiple", 1))}.
- Output `{_OUTPUT}`: float32, in the input's units.
- Pre-processing: the training images' per-channel percentile normalisation
  (`scale_linear`); post-processing maps the output back.
- Training: {config.model} with options {config.model_kwargs}, patch {list(config.patch_size)},
  {steps[-1]} steps.

The self-supervised loss graded this model against the J-invariant neighbour mean when it
was trained; `config.sc_noise2self.history` holds the losses. In Python,
`sc_noise2self.image.load_model("this.zip")` rebuilds it, and `bioimageio.core` runs it.
"""


def _channel_names(names: Sequence[str] | None, n_channels: int) -> list[str]:
    if names is None:
        return [f"channel{c}" for c in range(n_channels)]
    names = list(names)
    if len(names) != n_channels or len(set(names)) != len(names):
        raise ValueError(f"channel_names={names!r}: pass {n_channels} distinct names, one per "
                         "channel of the model.")
    return names


def _write_files(folder: Path, model: Any, test_input: np.ndarray,
                 test_output: np.ndarray) -> dict[str, Any]:
    """The package's files, written in ``folder``."""
    files = {"weights": folder / "weights.pt", "source": folder / "networks.py",
             "input": folder / "test_input.npy", "output": folder / "test_output.npy",
             "cover": folder / "cover.png", "readme": folder / "README.md",
             "torchscript": folder / "weights_torchscript.pt"}
    device = model.device
    net = model.net.cpu().eval()
    # Contiguous tensors: a consumer's network may keep the default layout.
    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
               files["weights"])
    files["source"].write_text(inspect.getsource(networks))
    files["input_shape"] = test_input.shape  # for the axes' scales (_description)
    np.save(files["input"], test_input)
    np.save(files["output"], test_output)
    _cover(files["cover"], test_input, test_output)
    files["readme"].write_text(readme(model))
    with warnings.catch_warnings():  # torch.jit warns of its deprecation; consumers need it
        warnings.simplefilter("ignore")
        example = torch.zeros(test_input.shape, dtype=torch.float32)  # any shape traces
        traced = torch.jit.trace(net, example)
        traced.save(str(files["torchscript"]))
    model.to(device)  # back where it was, in that device's layout (it was left on the CPU)
    return files


def _scale_the_spec_checks_exactly(scale: float, size: int) -> float:
    """``scale``, or the float a few ulps away for which ``size * s / s == size``.

    The spec checks an output's size as ``size * input scale / output scale`` in floats, so
    a size of 48 at 0.1 um gives 48.00000000000001 and the package is refused. A change in
    the 16th digit of the pixel size is no change at all to a microscopist.
    """
    candidate = float(scale)
    for _ in range(64):
        if size * candidate / candidate == size:
            return candidate
        candidate = float(np.nextafter(candidate, np.inf))
    return float(scale)


def _cover(path: Path, test_input: np.ndarray, test_output: np.ndarray) -> None:
    """Input beside output (first channel, middle plane), 2:1 as the model zoo shows covers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def plane(array: np.ndarray) -> np.ndarray:
        image = array[0, 0]
        return image[image.shape[0] // 2] if image.ndim == 3 else image

    fig, axes = plt.subplots(1, 2, figsize=(6, 3), dpi=100)
    low, high = np.percentile(plane(test_input), [1, 99])
    for ax, image, title in zip(axes, (plane(test_input), plane(test_output)),
                                ("noisy input", "Noise2Self output"), strict=True):
        ax.imshow(image, cmap="gray", vmin=low, vmax=high)
        ax.set_title(title, fontsize="small")
        ax.axis("off")
    fig.savefig(path)
    plt.close(fig)


def _description(spec, model, files, dtype, unit_value, names, pixel_size, unit, authors,
                 name, description, license):
    """The spec 0.5 model description."""
    from bioimageio.spec.model import v0_5 as m

    low = np.asarray(model.normalisation.low) / unit_value
    span = (np.asarray(model.normalisation.high) - np.asarray(model.normalisation.low))
    span = span / unit_value
    spatial = "zyx"[-model.layout.n_spatial:]
    multiple = int(getattr(model.net, "size_multiple", 1))
    scales = pixel_size or [1.0] * len(spatial)
    if len(scales) != len(spatial):
        raise ValueError(f"pixel_size={pixel_size!r}: pass one size per spatial axis "
                         f"({len(spatial)}, in {spatial} order).")
    input_axes = [m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier(n) for n in names])]
    output_axes = list(input_axes)
    test_sizes = files["input_shape"][2:]
    for axis, scale, size in zip(spatial, scales, test_sizes, strict=True):
        space = dict(id=m.AxisId(axis), scale=_scale_the_spec_checks_exactly(scale, size),
                     unit=unit if pixel_size else None)
        input_axes.append(m.SpaceInputAxis(size=m.ParameterizedSize(min=multiple, step=multiple),
                                           **space))
        output_axes.append(m.SpaceOutputAxis(
            size=m.SizeReference(tensor_id=m.TensorId(_INPUT), axis_id=m.AxisId(axis)), **space))
    channel = m.AxisId("channel")
    preprocessing = [
        m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="float32")),
        m.ScaleLinearDescr(kwargs=m.ScaleLinearAlongAxisKwargs(
            axis=channel, gain=list(map(float, 1.0 / span)),
            offset=list(map(float, -low / span)))),
        # Said again: without it the spec casts the result back to the input's dtype.
        m.EnsureDtypeDescr(kwargs=m.EnsureDtypeKwargs(dtype="float32")),
    ]
    postprocessing = [m.ScaleLinearDescr(kwargs=m.ScaleLinearAlongAxisKwargs(
        axis=channel, gain=list(map(float, span)), offset=list(map(float, low))))]
    torch_version = m.Version(torch.__version__.split("+")[0])
    kwargs = {"in_channels": model.n_channels, "out_channels": model.n_channels,
              "n_spatial": model.layout.n_spatial, **model.config.model_kwargs}
    architecture = m.ArchitectureFromFileDescr(
        source=files["source"], callable=type(model.net).__name__, kwargs=kwargs)
    state_dict = m.PytorchStateDictWeightsDescr(
        source=files["weights"], architecture=architecture, pytorch_version=torch_version)
    torchscript = m.TorchscriptWeightsDescr(
        source=files["torchscript"], pytorch_version=torch_version,
        parent="pytorch_state_dict")
    kind = model.config.model.upper() if model.config.model == "unet" else "DnCNN"
    return m.ModelDescr(
        name=name or f"Noise2Self {kind} denoiser {model.layout.n_spatial}D",
        description=description or (
            f"A {kind} trained by Noise2Self (self-supervised, on the noisy images alone) "
            "with sc_noise2self."),
        authors=[m.Author(name=n) for n in authors],
        cite=[m.CiteEntry(**entry) for entry in CITATIONS],
        license=license,
        documentation=m.FileDescr(source=files["readme"]),
        covers=[m.FileDescr(source=files["cover"])],
        tags=["denoising", "noise2self", "self-supervised", f"{model.layout.n_spatial}d",
              "pytorch", "fluorescence-light-microscopy"],
        inputs=[m.InputTensorDescr(
            id=m.TensorId(_INPUT), axes=input_axes, test_tensor=m.FileDescr(source=files["input"]),
            data=m.IntervalOrRatioDataDescr(type=dtype.name if dtype.kind in "ui" else "float32"),
            preprocessing=preprocessing)],
        outputs=[m.OutputTensorDescr(
            id=m.TensorId(_OUTPUT), axes=output_axes,
            test_tensor=m.FileDescr(source=files["output"]), postprocessing=postprocessing)],
        weights=m.WeightsDescr(pytorch_state_dict=state_dict, torchscript=torchscript),
        config={"sc_noise2self": payload_of(model, with_weights=False)},
    )
