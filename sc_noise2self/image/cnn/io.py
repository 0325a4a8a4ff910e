"""Saved model files: what a ``.pt`` file of a :class:`Noise2SelfModel` holds, and reading it.

A file is a ``torch.save`` of plain Python values and tensors, readable with
``weights_only=True``. Format 2 stores every architecture option; format 1 stored only the
options given and relied on the defaults of its time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from .config import TrainConfig
from .data import Layout, Normalisation
from .models import architecture, build_model

#: The format :func:`save_model` writes.
FORMAT_VERSION = 2
#: The UNet's widths when format 1 was written (the paper's), for files that left them out.
FORMAT_1_UNET_CHANNELS = (32, 64, 128, 256)


class ModelParts(NamedTuple):
    """What a model file rebuilds: the arguments of ``Noise2SelfModel(...)``."""

    net: torch.nn.Module
    layout: Layout
    normalisation: Normalisation
    config: TrainConfig
    history: dict


def save_model(model: Any, path: str | Path) -> Path:
    """Write a model's weights, architecture, normalisation, settings and history.

    Parameters
    ----------
    model
        A :class:`~sc_noise2self.image.cnn.model.Noise2SelfModel` (anything with its
        ``net``, ``layout``, ``normalisation``, ``config`` and ``history``).
    path
        File to write (parent folders are created); ``.pt`` by convention.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**vars(model.config), "patch_size": list(model.config.patch_size)}
    payload = {
        "format_version": FORMAT_VERSION,
        "layout": vars(model.layout),
        "normalisation": {"low": list(model.normalisation.low),
                          "high": list(model.normalisation.high)},
        "config": config,
        "history": model.history,
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
    }  # fmt: skip
    torch.save(payload, path)
    return path


def read_model(path: str | Path) -> ModelParts:
    """Read a file written by :func:`save_model` (format 1 or 2), weights on the CPU.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    The :class:`ModelParts`, network in evaluation mode. Raises ``ValueError`` for a file
    of another format.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    version = payload.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise ValueError(f"{path} is not a Noise2SelfModel file (formats 1 to "
                         f"{FORMAT_VERSION}).")  # fmt: skip
    config = TrainConfig(**{**payload["config"],
                            "patch_size": tuple(payload["config"]["patch_size"])})  # fmt: skip
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
