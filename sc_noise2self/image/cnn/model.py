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

from ..._device import memory_format, resolve_amp, resolve_device
from ..._validation import check_whole
from ..checks import as_array, as_float, check_flag
from ..masking_torch import neighbour_mean_torch
from .config import TrainConfig
from .data import ImageLike, Layout, Normalisation
from .io import read_model, save_model
from .masker import Masker
from .predict import DEFAULT_HALO, Tiler, augmented, invariant_prediction, unwrap


class Noise2SelfModel:
    """A trained Noise2Self network with its normalisation, ready to denoise.

    Parameters
    ----------
    net
        The network (:class:`~sc_noise2self.image.cnn.networks.UNet` or
        :class:`~sc_noise2self.image.cnn.networks.DnCNN`).
    layout
        How one image's axes map to ``(channels, *spatial)``.
    normalisation
        The percentile normalisation fitted on the training images; prediction uses the
        same one, so outputs are in the training images' units.
    config
        The training settings.
    history
        Per-epoch ``epoch``, ``step``, ``time``, ``lr``, ``train_loss`` and ``val_loss``
        lists, plus ``best_epoch``, ``stopped`` (``"steps"``, ``"max_time"``, ``"plateau"``
        or ``"callback"``), ``baseline_loss`` (the held-out loss of the J-invariant
        neighbour mean) and ``beats_baseline``.
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
        device = resolve_device(device)
        # Training moves its net here too: a loaded model gets its layout and predicts its bits.
        self.net.to(device, memory_format=memory_format(device, self.layout.n_spatial))
        return self

    @property
    def line_axes(self) -> tuple[int, ...]:
        """Spatial axes along which whole lines were hidden (empty: pixel masks)."""
        return tuple(self.config.line_axes)

    @property
    def reach(self) -> int:
        """Half-width of the blocks hidden around scored pixels in training (0: none)."""
        return int(self.config.reach)

    @property
    def hides_structure(self) -> bool:
        """Whether training hid lines or blocks, for correlated noise.

        Its direct pass would pass that noise through, so it predicts J-invariantly by default.
        """
        return bool(self.line_axes) or self.reach > 0

    @property
    def val_loss(self) -> float | None:
        """The lowest held-out self-supervised loss (normalised units); None without a band."""
        losses = np.asarray(self.history.get("val_loss", []), dtype=float)
        return float(np.nanmin(losses)) if np.isfinite(losses).any() else None

    @property
    def baseline_loss(self) -> float | None:
        """The held-out loss of the J-invariant neighbour mean on the same pixels, or None."""
        value = self.history.get("baseline_loss")
        return None if value is None or not np.isfinite(value) else float(value)

    @property
    def beats_baseline(self) -> bool | None:
        """Whether the network beats the neighbour mean on the held-out band (None: unknown).

        A network that does not has learned nothing above noise yet (too short a training,
        or too high a learning rate); :func:`~sc_noise2self.image.denoise` then returns the
        neighbour mean instead.
        """
        if self.val_loss is None or self.baseline_loss is None:
            return None
        return self.val_loss < self.baseline_loss

    def predict(
        self,
        image: ImageLike,
        *,
        invariant: bool | None = None,
        augment: bool = False,
        tile_size: int | Sequence[int] | None = None,
        tile_overlap: int | None = None,
        batch_size: int = 4,
        amp: bool | str | None = False,
        random_state: int = 0,
        keep_constant: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Denoise an image of any size with the trained network.

        Parameters
        ----------
        image
            One image laid out like a training image (same ``channel_axis``), a stack of
            them along axis 0, or a list; integer or float, never modified.
        invariant
            False: one direct pass, which the paper found about 0.5 dB better. True: the
            J-invariant prediction, one pass per grid phase (``mask_stride ** n_spatial``,
            or over the axes not hidden whole), each pixel predicted with itself hidden as in
            training. None (default): True for a model that hides whole lines or blocks
            (:attr:`hides_structure`), whose direct pass would pass the correlated noise
            through (camera, rows correlated over 5 pixels: 5.5 dB direct, 25.9 invariant),
            False otherwise.
        augment
            Average the predictions of the 8 flipped (2D: and transposed) copies of the
            image, each mapped back: 8 times the passes, a smoother estimate. A model that
            hides whole lines skips the transposes (4 copies in 2D). With
            ``invariant=True`` every copy is itself J-invariant, and so is the average.
        tile_size
            Predict windows of this size (one int or one per axis) to bound memory; None
            predicts the whole image at once. Each window keeps its interior, ``tile_size``
            less twice the overlap, so windows well above twice the overlap waste least (the
            default UNet's overlap is 56 pixels, the default DnCNN's 17). See
            :class:`~sc_noise2self.image.cnn.predict.Tiler`.
        tile_overlap
            Pixels discarded on each inner side of a window. None (default): the network's
            receptive field (``net.reach``, rounded up to its down-sampling factor), which
            makes the tiled prediction equal to the whole-image one up to float rounding; a
            window too small for it is enlarged, with a warning. A value below the reach
            is refused: its windows would show seams (up to 0.15 on a [0, 1] image).
        batch_size
            Windows per forward pass.
        amp
            Mixed precision for the passes (see
            :func:`~sc_noise2self._device.resolve_amp`); off by default.
        random_state
            Seed of the stand-in values of ``invariant=True`` with random replacement.
        keep_constant
            Return a channel that holds one value as it is. That value is its own
            J-invariant prediction (the neighbour mean's) with zero self-supervised loss,
            which no network beats; the network's padding and biases would spread it (0.21
            to 0.40 for a constant 0.3). :func:`~sc_noise2self.image.blocks.predict_blocks`
            turns it off for blocks, having judged the whole image.

        Returns
        -------
        Float array(s) of the input's shape, in the training images' units.
        """
        check_flag(invariant, "invariant", allow_none=True)
        if invariant is None:
            invariant = self.hides_structure
        check_flag(augment, "augment")
        check_flag(keep_constant, "keep_constant")
        check_whole(random_state, name="random_state", minimum=0)
        self._check_tile_overlap(tile_size, tile_overlap)
        options = dict(invariant=invariant, augment=augment, tile_size=tile_size,
                       tile_overlap=tile_overlap, batch_size=batch_size, amp=amp,
                       random_state=random_state, keep_constant=keep_constant)  # fmt: skip
        if isinstance(image, list | tuple):
            return [self.predict(one, **options) for one in image]
        array = as_array(image)
        if array.ndim == self.layout.image_ndim + 1:
            self._refuse_channels_as_a_stack(array)
            return np.stack([self.predict(one, **options) for one in array])
        floats = self._check_image(array)
        dtype = np.result_type(floats.dtype, np.float32)
        constant = _constant_channels(self._channels_of(floats)) if keep_constant else {}
        if len(constant) == self.n_channels:  # nothing for the network to do
            return floats.astype(dtype, copy=True)
        internal = self.layout.to_internal(floats)
        tiler = Tiler(self.net, tile_size, tile_overlap, batch_size, resolve_amp(self.device, amp))
        self.net.eval()

        def one_pass(inputs: torch.Tensor) -> torch.Tensor:
            if invariant:
                return invariant_prediction(inputs, tiler, self._masker(), random_state)
            return tiler(inputs)

        x = torch.as_tensor(self.normalisation.forward(internal), device=self.device)[None]
        with torch.no_grad():
            out = augmented(one_pass, x, not self.line_axes) if augment else one_pass(x)
        result = self.normalisation.inverse(out[0].float().cpu().numpy())
        result = self.layout.to_user(result).astype(dtype)
        for channel, value in constant.items():
            self._channels_of(result)[channel] = value
        return result

    def _channels_of(self, image: np.ndarray) -> np.ndarray:
        """A channel-first view of one image in the user's layout."""
        axis = self.layout.channel_axis
        return image[np.newaxis] if axis is None else np.moveaxis(image, axis, 0)

    def _check_tile_overlap(self, tile_size, tile_overlap) -> None:
        """Refuse an overlap that has no effect, or one that would leave seams."""
        if tile_overlap is None:
            return
        if tile_size is None:
            raise ValueError(f"tile_overlap={tile_overlap!r} has no effect without tile_size "
                             "(the whole image is predicted at once); pass tile_size too, "
                             "or leave tile_overlap out.")
        check_whole(tile_overlap, name="tile_overlap", minimum=0,
                    hint="pixels discarded on each inner side of a tile; None: the reach")
        reach = int(getattr(unwrap(self.net), "reach", DEFAULT_HALO))
        if tile_overlap < reach:
            raise ValueError(
                f"tile_overlap={tile_overlap} is below this network's reach ({reach} pixels): "
                "each tile's edge would be computed from missing neighbours and show as a "
                f"seam. Leave tile_overlap out (None: {reach}), or pass at least {reach}; to "
                "use less memory, make tile_size smaller instead.")

    def _refuse_channels_as_a_stack(self, array: np.ndarray) -> None:
        """A one-channel model given (..., 3): colour channels, not a stack of thin images.

        Read as a stack along axis 0, a 48 x 48 RGB image became 48 images of 48 x 3.
        """
        if self.layout.channel_axis is None and array.shape[-1] <= 4 < array.shape[-2]:
            raise ValueError(
                f"This model was trained on one-channel images, and an array of shape "
                f"{array.shape} would be read as {array.shape[0]} images of "
                f"{array.shape[1:]}. If its last axis holds colour channels, train a model "
                "with channel_axis=-1 (or predict each channel with its own model); to "
                "predict a stack of images, pass them as a list."
            )

    def score(self, image: np.ndarray) -> dict[str, float]:
        """Self-supervised loss of the J-invariant prediction of one image, and the baseline's.

        Each pixel is predicted with itself hidden (``predict(invariant=True)``) and compared
        with its value; the baseline predicts it by the mean of its neighbours. On an image
        the network was trained on, the loss is optimistic (it has seen those pixels as
        targets); the held-out :attr:`val_loss` is not.

        Parameters
        ----------
        image
            One image laid out like a training image.

        Returns
        -------
        ``{"loss": ..., "baseline_loss": ...}``, in the normalised units of
        :attr:`val_loss`.
        """
        x = self._internal(self._check_image(as_array(image)))
        self.net.eval()
        with torch.no_grad():
            output = invariant_prediction(x, Tiler(self.net, None), self._masker(), 0)
            baseline = neighbour_mean_torch(x, "mean", self.line_axes, self.reach)
        return {"loss": float(torch.mean((output - x) ** 2)),
                "baseline_loss": float(torch.mean((baseline - x) ** 2))}

    def _internal(self, floats: np.ndarray) -> torch.Tensor:
        """One checked image as a normalised ``(1, channels, *spatial)`` tensor."""
        return torch.as_tensor(
            self.normalisation.forward(self.layout.to_internal(floats)), device=self.device
        )[None]

    def _check_image(self, array: np.ndarray) -> np.ndarray:
        if array.ndim != self.layout.image_ndim or array.size == 0:
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
        return Masker(c.masking, c.replacement, c.mask_stride, self.layout.n_spatial,
                      tuple(c.line_axes), int(c.reach))

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the weights, architecture, normalisation, settings and history.

        The file carries a SHA-256 checksum of its weights and settings, which :meth:`load`
        verifies. It is written to a temporary file beside ``path`` and renamed into place
        only when complete, so an interrupted save never leaves half a file.

        Parameters
        ----------
        path
            File to write (parent folders are created); ``.pt`` by convention.
        overwrite
            Replace an existing file; without it an existing file is refused.

        Returns
        -------
        The path written.
        """
        return save_model(self, path, overwrite=check_flag(overwrite, "overwrite"))

    def export_bioimageio(self, path: str | Path, *, sample, authors: Sequence[str],
                          **options) -> Path:
        """Write this model as a bioimage.io model package (spec 0.5), for Fiji, ilastik, ...

        See :func:`~sc_noise2self.image.cnn.bioimageio.export_bioimageio` for the options
        (``name``, ``description``, ``license``, ``pixel_size``, ``unit``,
        ``channel_names``, ``overwrite``); :meth:`load` reads the package back.

        Parameters
        ----------
        path
            The ``.zip`` to write.
        sample
            One image like the training images, in their dtype: the package's test input.
        authors
            At least one name.
        **options
            Passed on.

        Returns
        -------
        The path written.
        """
        from .bioimageio import export_bioimageio

        return export_bioimageio(self, path, sample=sample, authors=authors, **options)

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "auto") -> Noise2SelfModel:
        """Read a model written by :meth:`save` or by :meth:`export_bioimageio`.

        A file of :meth:`save` (formats 1 and 2) has its checksum verified; a ``.zip`` is
        read as a bioimage.io package that this package exported. A file that is truncated,
        corrupted (weights that no longer match their checksum), empty or not a model file,
        or a package of another tool, gives a ``ValueError`` naming it.

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
        from .bioimageio import is_package, load_bioimageio

        parts = load_bioimageio(path) if is_package(path) else read_model(path)
        return cls(*parts).to(device)


def load_model(path: str | Path, *, device: str | torch.device = "auto") -> Noise2SelfModel:
    """Read a trained model: a ``.pt`` file of ``save``, or an exported bioimage.io ``.zip``.

    Parameters
    ----------
    path
        The file.
    device
        Where to put the weights.

    Returns
    -------
    The :class:`Noise2SelfModel` (see :meth:`Noise2SelfModel.load`).
    """
    return Noise2SelfModel.load(path, device=device)


def _constant_channels(channels: np.ndarray) -> dict[int, float]:
    """The channels of a channel-first image that hold one value, with that value."""
    return {c: channel.flat[0] for c, channel in enumerate(channels)
            if np.all(channel == channel.flat[0])}
