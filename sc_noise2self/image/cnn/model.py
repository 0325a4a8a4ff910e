"""The trained model a user holds: network, layout and normalisation, ready to denoise.

:func:`~sc_noise2self.image.cnn.training.train` returns it; :meth:`Noise2SelfModel.load`
reads it back from a file written by :meth:`Noise2SelfModel.save` (see :mod:`.io`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._device import resolve_amp, resolve_device
from ..checks import as_float
from .config import TrainConfig
from .data import ImageLike, Layout, Normalisation
from .io import read_model, save_model
from .masker import Masker
from .predict import Tiler, augmented, invariant_prediction


class Noise2SelfModel:
    """A trained Noise2Self network with its normalisation, ready to denoise.

    Parameters
    ----------
    net
        The network (:class:`~sc_noise2self.image.cnn.models.UNet` or
        :class:`~sc_noise2self.image.cnn.models.DnCNN`).
    layout
        How one image's axes map to ``(channels, *spatial)``.
    normalisation
        The percentile normalisation fitted on the training images; prediction uses the
        same one, so outputs are in the training images' units.
    config
        The training settings.
    history
        Per-epoch ``epoch``, ``step``, ``time``, ``lr``, ``train_loss`` and ``val_loss``
        lists, plus ``best_epoch`` and ``stopped`` (``"steps"``, ``"max_time"`` or
        ``"plateau"``).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        layout: Layout,
        normalisation: Normalisation,
        config: TrainConfig,
        history: dict | None = None,
    ) -> None:
        self.net, self.layout, self.normalisation, self.config = net, layout, normalisation, config
        self.history: dict[str, Any] = history if history is not None else {}

    @property
    def device(self) -> torch.device:
        """The device holding the weights."""
        return next(self.net.parameters()).device

    @property
    def n_channels(self) -> int:
        """Channels the network takes and returns."""
        return len(self.normalisation.low)

    def __repr__(self) -> str:
        return (
            f"Noise2SelfModel(model={self.config.model!r}, n_spatial={self.layout.n_spatial}, "
            f"channels={self.n_channels}, epochs={len(self.history.get('epoch', []))}, "
            f"device={self.device.type!r})"
        )

    def to(self, device: str | torch.device) -> Noise2SelfModel:
        """Move the weights to ``device`` (see :func:`~sc_noise2self._device.resolve_device`).

        Parameters
        ----------
        device
            Target device.

        Returns
        -------
        self.
        """
        self.net.to(resolve_device(device))
        return self

    def predict(
        self,
        image: ImageLike,
        *,
        invariant: bool = False,
        augment: bool = False,
        tile_size: int | Sequence[int] | None = None,
        tile_overlap: int = 32,
        batch_size: int = 4,
        amp: bool | str | None = False,
        random_state: int = 0,
    ) -> np.ndarray | list[np.ndarray]:
        """Denoise an image of any size with the trained network.

        Parameters
        ----------
        image
            One image laid out like a training image (same ``channel_axis``), a stack of
            them along axis 0, or a list; integer or float, never modified.
        invariant
            False: one direct pass, which the paper found about 0.5 dB better. True: the
            J-invariant prediction, one pass per grid phase (``mask_stride ** n_spatial``),
            each pixel predicted with itself hidden as in training.
        augment
            Average the predictions of the 8 flipped (2D: and transposed) copies of the
            image, each mapped back: 8 times the passes, a smoother estimate. With
            ``invariant=True`` every copy is itself J-invariant, and so is the average.
        tile_size
            Predict tiles of this size (one int or one per axis) and blend them where they
            overlap, to bound memory; None predicts the whole image at once.
        tile_overlap
            Pixels shared by neighbouring tiles (at most half a tile); blended with linear
            ramps.
        batch_size
            Tiles per forward pass.
        amp
            Mixed precision for the passes (see
            :func:`~sc_noise2self._device.resolve_amp`); off by default.
        random_state
            Seed of the stand-in values of ``invariant=True`` with random replacement.

        Returns
        -------
        Float array(s) of the input's shape, in the training images' units.
        """
        options = dict(invariant=invariant, augment=augment, tile_size=tile_size,
                       tile_overlap=tile_overlap, batch_size=batch_size, amp=amp,
                       random_state=random_state)  # fmt: skip
        if isinstance(image, list | tuple):
            return [self.predict(one, **options) for one in image]
        array = np.asarray(image)
        if array.ndim == self.layout.image_ndim + 1:
            return np.stack([self.predict(one, **options) for one in array])
        floats = self._check_image(array)
        x = torch.as_tensor(
            self.normalisation.forward(self.layout.to_internal(floats)), device=self.device
        )[None]
        tiler = Tiler(self.net, tile_size, tile_overlap, batch_size, resolve_amp(self.device, amp))
        self.net.eval()

        def one_pass(inputs: torch.Tensor) -> torch.Tensor:
            if invariant:
                return invariant_prediction(inputs, tiler, self._masker(), random_state)
            return tiler(inputs)

        with torch.no_grad():
            out = augmented(one_pass, x) if augment else one_pass(x)
        result = self.normalisation.inverse(out[0].float().cpu().numpy())
        return self.layout.to_user(result).astype(np.result_type(floats.dtype, np.float32))

    def _check_image(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != self.layout.image_ndim:
            raise ValueError(
                f"image has shape {array.shape}; this model takes images of "
                f"{self.layout.image_ndim} axes ({self.layout.n_spatial} spatial, channel_axis="
                f"{self.layout.channel_axis}), or a stack of them along axis 0."
            )
        floats = as_float(array, "image")
        channels = 1 if self.layout.channel_axis is None else array.shape[self.layout.channel_axis]
        if channels != self.n_channels:
            raise ValueError(f"image has {channels} channels; the model was trained on "
                             f"{self.n_channels}.")  # fmt: skip
        return floats

    def _masker(self) -> Masker:
        c = self.config
        return Masker(c.masking, c.replacement, c.mask_stride, self.layout.n_spatial)

    def save(self, path: str | Path) -> Path:
        """Write the weights, architecture, normalisation, settings and history.

        Parameters
        ----------
        path
            File to write (parent folders are created); ``.pt`` by convention.

        Returns
        -------
        The path written.
        """
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "auto") -> Noise2SelfModel:
        """Read a model written by :meth:`save` (file formats 1 and 2).

        Parameters
        ----------
        path
            The file.
        device
            Where to put the weights (see :func:`~sc_noise2self._device.resolve_device`).

        Returns
        -------
        The model, in evaluation mode.
        """
        return cls(*read_model(path)).to(device)
