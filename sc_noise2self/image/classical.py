"""Registry of classical denoisers, each with a default grid to calibrate over.

Every denoiser takes ``(image, *, channel_axis=None, **params)`` and returns a float array of
the image's shape. Grids and defaults that depend on the noise are given relative to the
noise standard deviation ``sd`` (the square root of
:func:`~sc_noise2self.image.noise.estimate_noise_variance`), so that one grid serves images of
any brightness.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .._validation import check_choice

Grid = dict[str, list]


@dataclass(frozen=True)
class Method:
    """One classical denoiser and how to calibrate it.

    Attributes
    ----------
    name
        Registry key.
    function
        ``function(image, *, channel_axis=None, **params)``.
    grid
        ``grid(sd)``: the default parameter grid, a dict of lists.
    defaults
        ``defaults(sd)``: the parameters a user would pick without calibration.
    invariant
        True when the output at a pixel never depends on that pixel's value (the donut
        median): calibration then needs no masking.
    spatial_dims
        Numbers of spatial axes the function supports.
    requires
        Optional package it needs, or None.
    intensity
        Parameters in the image's units (thresholds, noise levels): they are divided by
        the working scale when the method runs on the rescaled image (:mod:`.units`).
    whole
        Parameters that must be whole numbers of at least 1 (sizes in pixels).
    options
        Every parameter the method takes when its function passes keywords on to
        scikit-image; None reads them from the function's signature.
    seconds
        Seconds to calibrate its default grid on a 512 x 512 image on 2 cores (camera,
        benchmarks/RESULTS.md): how ``auto`` within a budget foresees what fits.
    """

    name: str
    function: Callable[..., np.ndarray]
    grid: Callable[[float], Grid]
    defaults: Callable[[float], dict]
    invariant: bool = False
    spatial_dims: tuple[int, ...] = (2, 3)
    requires: str | None = None
    intensity: tuple[str, ...] = ()
    whole: tuple[str, ...] = ()
    options: tuple[str, ...] | None = None
    seconds: float = 60.0

    @property
    def parameters(self) -> tuple[str, ...]:
        """Names of the parameters a grid may set."""
        if self.options is not None:
            return self.options
        return tuple(name for name, p in inspect.signature(self.function).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "channel_axis")

    def check_grid(self, grid: list[dict]) -> None:
        """Refuse parameter sets this method cannot take, naming the parameter and the fix.

        Parameters
        ----------
        grid
            Parameter sets, one dict each.
        """
        known = self.parameters
        numeric = self.numeric_parameters()
        for params in grid:
            for name, value in params.items():
                if name not in known:
                    raise TypeError(f"param_grid has {name!r}, which method {self.name!r} does "
                                    f"not take; its parameters are {list(known)}.")
                if name in self.whole:
                    _check_size(value, name)
                elif name in self.intensity:
                    _check_level(value, name)
                elif name in numeric and (isinstance(value, bool)
                                          or not isinstance(value, numbers.Real)):
                    raise TypeError(f"param_grid[{name!r}] holds {value!r}; {name} of method "
                                    f"{self.name!r} is a number (its default grid: "
                                    f"{numeric[name]}).")

    def numeric_parameters(self) -> dict[str, list]:
        """The parameters whose default values are all numbers, with those values."""
        defaults = self.grid(1.0)
        return {name: list(values) for name, values in defaults.items()
                if values and all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                  for v in values)}

    def working_params(self, params: dict, scale: float) -> dict:
        """``params`` for the image divided by ``scale``: intensity parameters divided too.

        Parameters
        ----------
        params
            One parameter set, in the image's units.
        scale
            The working scale (a power of two, so the division is exact).

        Returns
        -------
        A new dict.
        """
        return {name: value / scale if name in self.intensity and value is not None else value
                for name, value in params.items()}


def _check_size(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"param_grid[{name!r}] holds {value!r}; {name} is a size in pixels, a "
                         "whole number of at least 1.")


def _check_level(value, name: str) -> None:
    if value is None:  # scikit-image estimates it
        return
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not np.isfinite(value) or value < 0):
        raise ValueError(f"param_grid[{name!r}] holds {value!r}; {name} is in the image's "
                         "units and must be a finite number of at least 0.")


def require(package: str, method: str) -> None:
    """Raise an ImportError that says how to install ``package`` when it is missing."""
    try:
        importlib.import_module(package)
    except ImportError as error:
        pip_name = {"pywt": "PyWavelets"}.get(package, package)
        raise ImportError(
            f"The {method!r} method needs the {pip_name!r} package, which is not installed. "
            f"Install it with `pip install {pip_name}`"
            + (" (or `pip install sc-noise2self[bm3d]`)." if package == "bm3d" else ".")
        ) from error


def donut_footprint(radius: int, ndim: int, channel_axis: int | None = None) -> np.ndarray:
    """A disk (ball) of ``radius`` over the spatial axes, without its centre."""
    n_spatial = ndim - (channel_axis is not None)
    offsets = np.indices((2 * radius + 1,) * n_spatial) - radius
    footprint = (offsets**2).sum(axis=0) <= radius**2
    footprint[(radius,) * n_spatial] = False
    if channel_axis is not None:
        footprint = np.expand_dims(footprint, channel_axis)
    return footprint


def median_donut(
    image: np.ndarray, *, radius: int = 1, channel_axis: int | None = None
) -> np.ndarray:
    """Median over a disk around each pixel that leaves the pixel itself out.

    J-invariant by construction for single pixels, and for grid phases whenever
    ``radius < stride``. Near the border only the neighbours inside the image count (a
    reflected border would bring the pixel's own value back in). With an even number of
    neighbours the upper of the two middle values is taken, everywhere.
    """
    footprint = donut_footprint(int(radius), image.ndim, channel_axis)
    output = ndi.median_filter(image, footprint=footprint, mode="reflect")
    band = _border_band(image.shape, footprint.shape)
    output[band] = _median_inside(image, footprint, band)
    return output


def _border_band(shape: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """Pixels whose window reaches outside the image."""
    band = np.zeros(shape, dtype=bool)
    for axis, (size, width) in enumerate(zip(shape, window, strict=True)):
        reach = width // 2
        index = [slice(None)] * len(shape)
        index[axis] = np.r_[0 : min(reach, size), max(size - reach, 0) : size]
        band[tuple(index)] = True
    return band


def _median_inside(image: np.ndarray, footprint: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Upper median of the in-image footprint neighbours of the pixels in ``band``."""
    reach = [(w // 2, w // 2) for w in footprint.shape]
    padded = np.pad(image.astype(np.float64), reach, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, footprint.shape)
    values = np.sort(windows[band][:, footprint], axis=1)  # NaN (outside) sorts last
    inside = np.count_nonzero(~np.isnan(values), axis=1)
    return values[np.arange(len(values)), inside // 2].astype(image.dtype)


def gaussian(
    image: np.ndarray, *, sigma: float = 1.0, channel_axis: int | None = None
) -> np.ndarray:
    """Gaussian smoothing of the spatial axes."""
    from skimage.filters import gaussian as skimage_gaussian

    return skimage_gaussian(image, sigma=sigma, channel_axis=channel_axis, preserve_range=True)


def wavelet(image: np.ndarray, *, channel_axis: int | None = None, **params) -> np.ndarray:
    """Wavelet shrinkage (:func:`skimage.restoration.denoise_wavelet`)."""
    require("pywt", "wavelet")
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(image, rescale_sigma=True, channel_axis=channel_axis, **params)


def nl_means(
    image: np.ndarray,
    *,
    h: float,
    patch_size: int = 5,
    patch_distance: int = 6,
    channel_axis: int | None = None,
    **params,
) -> np.ndarray:
    """Non-local means, fast mode, with the paper's patch size 5 and distance 6."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        image,
        h=h,
        patch_size=patch_size,
        patch_distance=patch_distance,
        fast_mode=True,
        preserve_range=True,
        channel_axis=channel_axis,
        **params,
    )


def tv(image: np.ndarray, *, weight: float = 0.1, channel_axis: int | None = None) -> np.ndarray:
    """Total-variation denoising (Chambolle)."""
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(image, weight=weight, channel_axis=channel_axis)


def bilateral(image: np.ndarray, *, channel_axis: int | None = None, **params) -> np.ndarray:
    """Bilateral filter (2D); negative values are handled by a shift and back."""
    from skimage.restoration import denoise_bilateral

    # skimage refuses negative images; the filter only uses differences, so shift.
    low = min(float(image.min()), 0.0)
    out = denoise_bilateral(image - low, channel_axis=channel_axis, **params)
    return out + low


def bm3d(image: np.ndarray, *, sigma_psd: float, channel_axis: int | None = None) -> np.ndarray:
    """BM3D (optional ``bm3d`` package), channel by channel."""
    require("bm3d", "bm3d")
    import bm3d as bm3d_package

    if channel_axis is None:
        return np.asarray(bm3d_package.bm3d(image, sigma_psd=sigma_psd), dtype=image.dtype)
    channels = [
        bm3d_package.bm3d(np.take(image, c, axis=channel_axis), sigma_psd=sigma_psd)
        for c in range(image.shape[channel_axis])
    ]
    return np.stack(channels, axis=channel_axis).astype(image.dtype)


def _scaled(sd: float, factors) -> list[float]:
    return [float(sd * factor) for factor in factors]


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "median",
            median_donut,
            grid=lambda sd: {"radius": [1, 2, 3]},
            defaults=lambda sd: {"radius": 1},
            invariant=True,
            whole=("radius",),
            seconds=0.1,
        ),
        Method(
            "gaussian",
            gaussian,
            grid=lambda sd: {"sigma": [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]},
            defaults=lambda sd: {"sigma": 1.0},
            seconds=0.2,
        ),
        Method(
            "wavelet",
            wavelet,
            grid=lambda sd: {"sigma": _scaled(sd, [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0])},
            defaults=lambda sd: {},
            requires="pywt",
            intensity=("sigma",),
            options=("sigma", "wavelet", "mode", "wavelet_levels", "convert2ycbcr", "method"),
            seconds=0.3,
        ),
        Method(
            "nl_means",
            nl_means,
            grid=lambda sd: {"h": _scaled(sd, [0.4, 0.5, 0.6, 0.7, 0.8, 1.0])},
            defaults=lambda sd: {"h": 0.6 * sd},
            intensity=("h", "sigma"),
            whole=("patch_size", "patch_distance"),
            options=("h", "patch_size", "patch_distance", "sigma"),
            seconds=2.8,
        ),
        Method(
            "tv",
            tv,
            grid=lambda sd: {"weight": _scaled(sd, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])},
            defaults=lambda sd: {"weight": 0.1},
            intensity=("weight",),
            seconds=2.7,
        ),
        Method(
            "bilateral",
            bilateral,
            grid=lambda sd: {"sigma_color": _scaled(sd, [1, 2, 4]), "sigma_spatial": [1, 2, 3]},
            defaults=lambda sd: {"sigma_spatial": 1},
            spatial_dims=(2,),
            intensity=("sigma_color",),
            options=("sigma_color", "sigma_spatial", "win_size", "bins", "mode", "cval"),
            seconds=12.4,
        ),
        Method(
            "bm3d",
            bm3d,
            grid=lambda sd: {"sigma_psd": _scaled(sd, [0.5, 0.75, 1.0, 1.25, 1.5])},
            defaults=lambda sd: {"sigma_psd": sd},
            spatial_dims=(2,),
            requires="bm3d",
            intensity=("sigma_psd",),
        ),
    )
}


def available_methods(n_spatial: int | None = None) -> list[str]:
    """Names of the built-in methods whose packages are installed.

    Parameters
    ----------
    n_spatial
        Keep only methods that support this many spatial axes; None keeps all.

    Returns
    -------
    Method names, in registry order.
    """
    names = []
    for method in METHODS.values():
        if method.requires is not None and importlib.util.find_spec(method.requires) is None:
            continue
        if n_spatial is None or n_spatial in method.spatial_dims:
            names.append(method.name)
    return names


def get_method(name: str, n_spatial: int | None = None) -> Method:
    """The registered :class:`Method` called ``name``, checked against the image's dims.

    Parameters
    ----------
    name
        A key of :data:`METHODS`.
    n_spatial
        Number of spatial axes of the image, or None to skip the check.

    Returns
    -------
    The :class:`Method`; raises ``ValueError`` for an unknown name or unsupported dims, and
    ``ImportError`` with install instructions when its package is missing.
    """
    check_choice(name, tuple(METHODS), name="method")
    method = METHODS[name]
    if n_spatial is not None and n_spatial not in method.spatial_dims:
        raise ValueError(
            f"Method {name!r} supports images with {method.spatial_dims} spatial axes; this "
            f"image has {n_spatial}. Choose one of {available_methods(n_spatial)}."
        )
    if method.requires is not None:
        require(method.requires, name)
    return method
