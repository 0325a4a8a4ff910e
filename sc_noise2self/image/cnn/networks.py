"""The two networks of the paper's section 5, in 2D and 3D: a UNet and a DnCNN.

Both map ``(batch, in_channels, *spatial)`` to ``(batch, out_channels, *spatial)``. The UNet
needs every spatial size to be a multiple of :attr:`UNet.size_multiple`; the trainer and
:class:`~sc_noise2self.image.cnn.model.Noise2SelfModel` pad to it, so callers never have to.

By default both use batch norm, which is a fixed per-channel affine map in evaluation mode:
a tile then gives the same output as the same region of the whole image (up to the
receptive field). The paper's instance norm is available for the UNet (``norm="instance"``).

This module imports only torch and the standard library: a bioimage.io package ships it
as it is, as its architecture's source (:mod:`.bioimageio`), so that Fiji, ilastik or
BiaPy rebuild the network without this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _layers(n_spatial: int) -> tuple[type, type, type, type]:
    """Convolution, transposed convolution, instance norm and batch norm classes for the dims."""
    if n_spatial == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.InstanceNorm2d, nn.BatchNorm2d
    if n_spatial == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.InstanceNorm3d, nn.BatchNorm3d
    raise ValueError(f"n_spatial={n_spatial!r}: the networks support 2D images and 3D volumes.")


NORMS: tuple[str, ...] = ("instance", "batch", "none")


def _norm_layer(kind: str, features: int, n_spatial: int) -> nn.Module:
    """A normalisation layer: per-image statistics, batch statistics, or none."""
    if kind not in NORMS:  # no import of the package here: this file is shipped alone
        raise ValueError(f"Unknown norm={kind!r}. Choose one of: {', '.join(map(repr, NORMS))}.")
    _, _, instance_norm, batch_norm = _layers(n_spatial)
    if kind == "instance":
        return instance_norm(features, affine=True)
    if kind == "batch":
        return batch_norm(features)
    return nn.Identity()


class ConvBlock(nn.Module):
    """Two 3x3 (or 3x3x3) convolutions, each followed by a normalisation and a leaky ReLU.

    Parameters
    ----------
    in_channels, out_channels
        Feature counts before and after the block.
    n_spatial, norm
        As in :class:`UNet`: 2 or 3 spatial axes; ``"instance"`` (the paper's),
        ``"batch"`` or ``"none"``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, n_spatial: int, norm: str = "instance"
    ) -> None:
        super().__init__()
        conv, _, _, _ = _layers(n_spatial)
        layers: list[nn.Module] = []
        for n_in in (in_channels, out_channels):
            layers += [
                conv(n_in, out_channels, 3, padding=1),
                _norm_layer(norm, out_channels, n_spatial),
                nn.LeakyReLU(0.1, inplace=True),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Parameters
        ----------
        x
            ``(batch, in_channels, *spatial)``.

        Returns
        -------
        ``(batch, out_channels, *spatial)``.
        """
        return self.body(x)


class UNet(nn.Module):
    """The paper's UNet: conv blocks, strided convolutions down, transposed ones up, skips.

    Each block is two 3x3 convolutions with a normalisation and a leaky ReLU each.

    Parameters
    ----------
    in_channels, out_channels
        Channels of the image in and out.
    channels
        Features per level, finest first. There are ``len(channels) - 1`` halvings, so
        spatial sizes must be multiples of ``2 ** (len(channels) - 1)`` (see
        :attr:`size_multiple`). The default has the paper's four levels at half its widths
        (the paper: ``(32, 64, 128, 256)``): a training step costs a third as much, and on a
        256 x 256 camera crop with 240 s of training on 2 CPU cores it reached 28.37 dB
        with test-time augmentation, against 28.03 dB for the paper's widths
        (benchmarks/RESULTS.md).
    n_spatial
        2 for images, 3 for volumes.
    residual
        Add the input to the output (needs ``in_channels == out_channels``).
    norm
        ``"batch"`` (default): batch norm, a fixed per-channel affine map at prediction, so
        tiles agree with the whole image and any image size works. ``"instance"``: the
        paper's instance norm, whose statistics come from each patch in training but from
        the whole image (or tile) at prediction; it predicted 2.7 dB worse than batch norm
        on the camera crop after 100 s of training (benchmarks/RESULTS.md), and tiles then
        disagree with the whole image. ``"none"``.
    blur_pool
        Blur with a binomial [1, 2, 1] / 4 filter before each down-sampling, against the
        aliasing that shows as checkerboard artefacts (N2V2, Hoeck et al. 2022).
    top_skip
        Keep the finest skip connection; N2V2 drops it (``False``), so that the output is not
        built from the full-resolution input features alone.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        n_spatial: int = 2,
        residual: bool = False,
        norm: str = "batch",
        blur_pool: bool = False,
        top_skip: bool = True,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"channels={channels!r} must be a non-empty list of positive ints.")
        _check_residual(residual, in_channels, out_channels)
        conv, up_conv, _, _ = _layers(n_spatial)
        self.residual = residual
        self.size_multiple = 2 ** (len(channels) - 1)
        #: Pixels on each side that one output pixel depends on (see :func:`unet_reach`).
        self.reach = unet_reach(len(channels), blur_pool=blur_pool, top_skip=top_skip)
        self.top_skip = bool(top_skip)
        #: Instance norm takes its statistics from the whole input, so tiles differ from it.
        self.tile_exact = norm != "instance"
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(channels):
            self.encoders.append(ConvBlock(previous, width, n_spatial, norm))
            if level < len(channels) - 1:
                down = conv(width, width, 2, stride=2)
                self.downs.append(nn.Sequential(Blur(width, n_spatial), down) if blur_pool
                                  else down)
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for coarse, fine in zip(channels[:0:-1], channels[-2::-1], strict=True):
            self.ups.append(up_conv(coarse, fine, 2, stride=2))
            finest = len(self.decoders) == len(channels) - 2
            joined = fine if finest and not top_skip else 2 * fine
            self.decoders.append(ConvBlock(joined, fine, n_spatial, norm))
        self.head = conv(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a batch.

        Parameters
        ----------
        x
            ``(batch, in_channels, *spatial)``, spatial sizes multiples of
            :attr:`size_multiple`.

        Returns
        -------
        ``(batch, out_channels, *spatial)``.
        """
        skips = []
        features = x
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < len(self.downs):
                skips.append(features)
                features = self.downs[level](features)
        finest = len(self.decoders) - 1
        for index, (up, decoder, skip) in enumerate(zip(self.ups, self.decoders,
                                                        reversed(skips), strict=True)):
            joined = [up(features)] if index == finest and not self.top_skip else [up(features),
                                                                                   skip]
            features = decoder(torch.cat(joined, dim=1))
        out = self.head(features)
        return out + x if self.residual else out


class Blur(nn.Module):
    """A fixed binomial [1, 2, 1] / 4 blur of every channel along each spatial axis.

    Parameters
    ----------
    channels
        Feature maps blurred, each on its own.
    n_spatial
        2 or 3.
    """

    def __init__(self, channels: int, n_spatial: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0]) / 4.0
        kernel = taps
        for _ in range(n_spatial - 1):
            kernel = kernel[..., None] * taps
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).clone())
        self.channels, self.n_spatial = channels, n_spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur a batch (replicated borders; the same shape out)."""
        conv = nn.functional.conv2d if self.n_spatial == 2 else nn.functional.conv3d
        padded = nn.functional.pad(x, [1, 1] * self.n_spatial, mode="replicate")
        return conv(padded, self.kernel.to(x.dtype), groups=self.channels)


def unet_reach(levels: int, *, blur_pool: bool = False, top_skip: bool = True) -> int:
    """How far, in pixels along one axis, a UNet's output pixel reaches into its input.

    The dependency interval of one output pixel is followed back through the layers: each
    3x3 convolution widens it by one pixel at its level, a 2x2 stride-2 convolution maps
    level ``l + 1`` position ``i`` to ``2i, 2i + 1`` at level ``l``, and a transposed one
    maps position ``j`` to ``j // 2``. The widest reach over the positions of one
    down-sampling period is returned. A tile whose start is a multiple of
    :attr:`UNet.size_multiple` then gives exactly the whole image's output on every pixel at
    least this far from its edges (batch norm is a per-pixel map in evaluation mode).

    Parameters
    ----------
    levels
        Number of resolution levels, ``len(channels)``.
    blur_pool, top_skip
        As in :class:`UNet`: a blur before each down-sampling widens its input by one pixel;
        without the finest skip, the finest level is reached through the coarser ones only.

    Returns
    -------
    The reach: 9 for 2 levels, 51 for 4 (the default UNet).
    """
    blur = 1 if blur_pool else 0

    def encoded(level: int, lo: int, hi: int) -> tuple[int, int]:
        lo, hi = lo - 2, hi + 2  # the block's two 3x3 convolutions
        if level == 0:
            return lo, hi
        # The 2x2 stride-2 down-convolution, after the blur's 3 taps when there is one.
        return encoded(level - 1, 2 * lo - blur, 2 * hi + 1 + blur)

    def decoded(level: int, lo: int, hi: int) -> tuple[int, int]:
        if level == levels - 1:
            return encoded(level, lo, hi)
        lo, hi = lo - 2, hi + 2
        up = decoded(level + 1, lo // 2, hi // 2)  # the 2x2 stride-2 transposed convolution
        if level == 0 and not top_skip:
            return up
        skip = encoded(level, lo, hi)
        return min(skip[0], up[0]), max(skip[1], up[1])

    period = 2 ** (levels - 1)
    return max(max(x - lo, hi - x) for x in range(period) for lo, hi in [decoded(0, x, x)])


class DnCNN(nn.Module):
    """DnCNN (Zhang et al. 2017): conv + ReLU, then conv + batch norm + ReLU, then conv.

    Parameters
    ----------
    in_channels, out_channels
        Channels of the image in and out.
    depth
        Number of convolution layers (17 in the DnCNN paper, 8 in the noise2self notebook).
    features
        Feature maps of the hidden layers.
    n_spatial
        2 for images, 3 for volumes.
    residual
        Predict the noise and subtract it from the input, as the original DnCNN does (needs
        ``in_channels == out_channels``). Off by default: under Noise2Self masking the
        input at a hidden pixel is a random stand-in that the residual would have to cancel,
        and a residual 8-layer DnCNN predicted 0.5 dB worse on the camera crop after 120 s
        (benchmarks/RESULTS.md).
    """

    size_multiple = 1

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 17,
        features: int = 64,
        n_spatial: int = 2,
        residual: bool = False,
    ) -> None:
        super().__init__()
        if int(depth) < 2 or int(features) < 1:
            raise ValueError(f"DnCNN needs depth >= 2 and features >= 1; got {depth}, {features}.")
        _check_residual(residual, in_channels, out_channels)
        conv, _, _, batch_norm = _layers(n_spatial)
        self.residual = residual
        #: Pixels on each side that one output pixel depends on: one per 3x3 convolution.
        self.reach = int(depth)
        self.tile_exact = True
        layers: list[nn.Module] = [
            conv(in_channels, features, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(int(depth) - 2):
            layers += [
                conv(features, features, 3, padding=1, bias=False),
                batch_norm(features),
                nn.ReLU(inplace=True),
            ]
        layers.append(conv(features, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a batch.

        Parameters
        ----------
        x
            ``(batch, in_channels, *spatial)``, any spatial size.

        Returns
        -------
        ``(batch, out_channels, *spatial)``.
        """
        out = self.body(x)
        return x - out if self.residual else out


def _check_residual(residual: bool, in_channels: int, out_channels: int) -> None:
    if residual and in_channels != out_channels:
        raise ValueError(
            f"residual=True adds the input to the output, so in_channels ({in_channels}) must "
            f"equal out_channels ({out_channels}); pass residual=False."
        )
