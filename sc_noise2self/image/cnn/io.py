"""Saved model files: what a ``.pt`` file of a :class:`Noise2SelfModel` holds, and reading it.

A file is a ``torch.save`` of plain Python values and tensors, readable with
``weights_only=True``. Format 2 stores every architecture option; format 1 stored only the
options given and relied on the defaults of its time. Files written since issue 15 also
carry ``checksum``: a SHA-256 of the weights (every tensor's name, dtype, shape and bytes),
which loading verifies; older files, without it, load as before. The key is optional, so
such files are still format 2 and older releases read them.

Files are written atomically (:func:`sc_noise2self.io.atomic_path`): to a temporary file
beside the target, renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...io import atomic_path
from ...results import json_ready
from .config import TrainConfig
from .data import Layout, Normalisation
from .models import architecture, build_model

#: The format :func:`save_model` writes.
FORMAT_VERSION = 2
#: The UNet's widths when format 1 was written (the paper's), for files that left them out.
FORMAT_1_UNET_CHANNELS = (32, 64, 128, 256)
#: What every file of formats 1 and 2 holds.
_KEYS = ("format_version", "layout", "normalisation", "config", "history", "state_dict")


class ModelParts(NamedTuple):
    """What a model file rebuilds: the arguments of ``Noise2SelfModel(...)``."""

    net: torch.nn.Module
    layout: Layout
    normalisation: Normalisation
    config: TrainConfig
    history: dict


def checksum(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a network's weights: every tensor's name, dtype, shape and bytes.

    Parameters
    ----------
    state_dict
        The network's ``state_dict()``.

    Returns
    -------
    The hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(model: Any, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a model's weights, architecture, normalisation, settings, history and checksum.

    Parameters
    ----------
    model
        A :class:`~sc_noise2self.image.cnn.model.Noise2SelfModel` (anything with its
        ``net``, ``layout``, ``normalisation``, ``config`` and ``history``).
    path
        File to write (parent folders are created); ``.pt`` by convention.
    overwrite
        Replace an existing file; without it, ``FileExistsError``.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = payload_of(model)
    with atomic_path(path, overwrite=overwrite) as temporary:
        torch.save(payload, temporary)
    return path


def payload_of(model: Any, *, with_weights: bool = True) -> dict:
    """What a model file holds: settings, history, and (``with_weights``) weights and checksum.

    Without the weights, the settings are plain Python values (as a bioimage.io package's
    ``config`` stores them, :mod:`.bioimageio`).
    """
    config = {**vars(model.config), "patch_size": list(model.config.patch_size),
              "line_axes": list(model.config.line_axes)}
    payload: dict = {
        "format_version": FORMAT_VERSION,
        "layout": vars(model.layout),
        "normalisation": {"low": list(model.normalisation.low),
                          "high": list(model.normalisation.high)},
        "config": config,
        "history": model.history,
    }  # fmt: skip
    if not with_weights:
        return json_ready(payload)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    payload["checksum"] = checksum(payload["state_dict"])
    return payload


def read_model(path: str | Path) -> ModelParts:
    """Read a file written by :func:`save_model` (format 1 or 2), weights on the CPU.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The :class:`ModelParts`, network in evaluation mode. Raises ``FileNotFoundError`` for a
    missing file and ``ValueError``, naming the file, for one that is empty, truncated,
    corrupted (weights that do not match their checksum), of another format, or not a model.
    """
    return rebuild_checked(_load_payload(Path(path)), path)


def rebuild_checked(payload: dict, path: str | Path) -> ModelParts:
    """The model of a file's (or a package's) payload; ``ValueError`` naming ``path`` if bad."""
    try:
        return _rebuild(payload)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{str(path)!r} does not hold a valid Noise2SelfModel "
                         f"({type(error).__name__}: {error}); it may be corrupted, or come "
                         "from another program.") from error


def _load_payload(path: Path) -> dict:
    """The file's dict, checked for the keys, the format and the checksum."""
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {str(path)!r}" + (
            " (it is a folder)." if path.is_dir() else "."))
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is empty (0 bytes): not a Noise2SelfModel file; it "
                         "may be what an interrupted copy left.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch, zipfile and pickle raise many kinds for a bad file
        raise ValueError(
            f"{str(path)!r} cannot be read as a Noise2SelfModel file ({type(error).__name__}: "
            f"{str(error)[:200]}); it is truncated, corrupted, or not a model saved by "
            "Noise2SelfModel.save."
        ) from error
    if (not isinstance(payload, dict) or any(key not in payload for key in _KEYS)
            or not isinstance(payload["state_dict"], dict)
            or not all(isinstance(t, torch.Tensor) for t in payload["state_dict"].values())):
        raise ValueError(f"{str(path)!r} is not a Noise2SelfModel file: it holds a "
                         f"{type(payload).__name__} without the model's keys and weights.")
    if payload["format_version"] not in (1, FORMAT_VERSION):
        raise ValueError(f"{str(path)!r} is not a Noise2SelfModel file of formats 1 to "
                         f"{FORMAT_VERSION} (it says {payload['format_version']!r}); a newer "
                         "release of sc_noise2self may read it.")
    if "checksum" in payload and checksum(payload["state_dict"]) != payload["checksum"]:
        raise ValueError(f"{str(path)!r} is corrupted: its weights no longer match the "
                         "checksum saved with them. Use another copy of the file.")
    return payload


def _rebuild(payload: dict) -> ModelParts:
    """The network and records of a checked payload."""
    version = payload["format_version"]
    config = TrainConfig(**{**payload["config"],
                            "patch_size": tuple(payload["config"]["patch_size"]),
                            "line_axes": tuple(payload["config"].get("line_axes", ()))})
    if version == 1 and config.model == "unet":
        # Only the widths changed since format 1 was last written (the second session's
        # files); earlier format-1 files with instance norm or a residual DnCNN have the
        # same weight names and are not told apart.
        config.model_kwargs = {"channels": FORMAT_1_UNET_CHANNELS, **config.model_kwargs}
    # Complete, so that saving this model again writes every option (format 2).
    config.model_kwargs = architecture(config.model, config.model_kwargs)
    layout = Layout(**payload["layout"])
    normalisation = Normalisation(
        tuple(payload["normalisation"]["low"]), tuple(payload["normalisation"]["high"])
    )
    net = build_model(config.model, in_channels=len(normalisation.low),
                      out_channels=len(normalisation.low), n_spatial=layout.n_spatial,
                      **config.model_kwargs)  # fmt: skip
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return ModelParts(net, layout, normalisation, config, payload["history"])
