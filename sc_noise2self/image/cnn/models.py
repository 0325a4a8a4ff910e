"""The networks by name: their options, stored with a trained model, and construction.

The networks themselves are in :mod:`.networks`.
"""

from __future__ import annotations

import inspect

import numpy as np

from ..._validation import check_choice
from .networks import DnCNN, UNet

MODEL_NAMES: tuple[str, ...] = ("unet", "dncnn")


def _model_class(name: str) -> type[UNet] | type[DnCNN]:
    check_choice(name, MODEL_NAMES, name="model")
    return UNet if name == "unet" else DnCNN


def architecture(name: str, options: dict | None = None) -> dict:
    """Every architecture option of a network: the given ones, the rest at their defaults.

    Stored with a trained model, so that a saved file rebuilds the same network whatever
    the defaults of a later release.

    Parameters
    ----------
    name
        ``"unet"`` or ``"dncnn"``.
    options
        Options given by the user, or None.

    Returns
    -------
    Option name to plain Python value (lists for sequences), without the channel counts and
    dimensions, which come from the data.
    """
    from_data = {"in_channels", "out_channels", "n_spatial"}
    defaults = {option: parameter.default
                for option, parameter in inspect.signature(_model_class(name)).parameters.items()
                if option not in from_data}  # fmt: skip
    given = dict(options or {})
    taken = sorted(set(given) & from_data)
    if taken:
        raise TypeError(f"model_kwargs {taken} are set from the images (their channels and "
                        "spatial axes); leave them out, or use channel_axis / n_spatial.")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(f"Unknown model_kwargs {unknown} for model={name!r}; "
                        f"its options are {sorted(defaults)}.")  # fmt: skip
    return {option: _plain(value) for option, value in {**defaults, **given}.items()}


def _plain(value):
    """Python values for numpy scalars, tuples, ranges and arrays (``weights_only`` loads)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list, range, np.ndarray)):
        return [_plain(item) for item in value]
    return value


def build_model(
    name: str, *, in_channels: int, out_channels: int, n_spatial: int, **kwargs
) -> UNet | DnCNN:
    """Construct a network by name.

    Parameters
    ----------
    name
        ``"unet"`` or ``"dncnn"``.
    in_channels, out_channels, n_spatial
        As in :class:`UNet` and :class:`DnCNN`.
    **kwargs
        Architecture options of the class (``channels`` for the UNet, ``depth`` and
        ``features`` for the DnCNN, ``residual`` for both).

    Returns
    -------
    The untrained network.
    """
    cls = _model_class(name)
    return cls(in_channels=in_channels, out_channels=out_channels, n_spatial=n_spatial, **kwargs)
