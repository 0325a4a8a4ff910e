"""Leaf: which torch device and mixed-precision dtype to use, for both domains.

torch is imported inside the functions, so importing this module costs nothing; the
single-cell autoencoders, the dask GPU path and the image CNNs all choose devices here.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
# What a user without torch is told: the single-cell core (PCA, kNN, diffusion, Leiden,
# markers, the CLI) runs without it; these need it.
TORCH_HINT = (
    "needs PyTorch, which the single-cell core does not install. Install the extra: "
    "pip install -e '.[torch]' from a checkout (or pip install torch; on a machine without "
    "a GPU, the CPU wheel: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu)."
)


def require_torch(what: str = "This step (a torch device: the autoencoder or scVI family, "
                                "the PCA's GPU path, the image CNNs)"):
    """torch, or an ImportError that says what needs it and how to install it."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ImportError(f"{what} {TORCH_HINT}")
    import torch

    return torch


def mps_available() -> bool:
    """True when Apple's Metal backend is built into torch and usable here."""
    torch = require_torch()

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: Any = "auto"):
    """The torch device to compute on.

    Parameters
    ----------
    device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``,
        ``"mps"`` or a :class:`torch.device`.

    Returns
    -------
    The ``torch.device``; raises ``RuntimeError`` when the requested accelerator is absent.
    """
    torch = require_torch()

    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        known = ", ".join(repr(d) for d in DEVICES)
        raise ValueError(f"Unknown device={device!r}. Choose one of: {known}.") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but CUDA is not available (torch "
            f"{torch.__version__}, built with CUDA {torch.version.cuda}). Pass device='cpu', "
            "or device='auto' to use the best device present."
        )
    if resolved.type == "mps" and not mps_available():
        raise RuntimeError(f"device={device!r} was requested but Apple MPS is not available.")
    return resolved


def resolve_amp(device, amp: bool | str | None = None):
    """The autocast dtype for mixed precision, or None for full float32.

    Parameters
    ----------
    device
        The ``torch.device`` that computes.
    amp
        None: on for CUDA, off elsewhere. True or ``"bf16"``: on; on a CPU, bfloat16 where
        the CPU computes it natively (AMX or AVX-512 BF16: about 2 times the float32 speed
        of a UNet's training step there), else ignored with a warning (emulated bfloat16
        is slower than float32). False: off. ``"fp16"``: float16 on CUDA (ignored on a
        CPU, with a warning).

    Returns
    -------
    ``torch.bfloat16`` when the device supports it, else ``torch.float16`` on CUDA; None
    when off.
    """
    import torch

    if amp not in (None, True, False, "bf16", "fp16"):
        raise ValueError(f"amp={amp!r} must be None, True, False, 'bf16' or 'fp16'.")
    if amp is False or (amp is None and device.type != "cuda"):
        return None
    if device.type == "cpu" and amp != "fp16" and cpu_computes_bf16():
        return torch.bfloat16
    if device.type != "cuda":
        warnings.warn(
            f"amp={amp!r} is ignored on device {device.type!r}: mixed precision runs on CUDA, "
            "and in bfloat16 on CPUs that compute it natively (AMX or AVX-512 BF16), which "
            "this one does not; the computation runs in float32.",
            stacklevel=3,
        )
        return None
    if amp == "fp16" or (amp != "bf16" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AMX tiles or AVX-512 BF16)."""
    import torch

    native = (getattr(torch.cpu, name, None) for name in
              ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return any(check is not None and bool(check()) for check in native)


def memory_format(device, n_spatial: int):
    """The tensor layout convolutions run fastest in on ``device``.

    On a CPU, oneDNN's convolutions take channels-last tensors without reordering them:
    a default 2D UNet's training step took 0.83 to 0.88 of its time in the default layout
    (2 cores, float32; 0.47 with bfloat16). Elsewhere the default layout.
    """
    import torch

    if device.type != "cpu":
        return torch.contiguous_format
    return {2: torch.channels_last, 3: torch.channels_last_3d}.get(n_spatial,
                                                                   torch.contiguous_format)


#: Environment variable: a cap, in GB, on the device memory the in-memory GPU paths fill
#: (for a shared GPU; larger inputs are streamed in row blocks).
DEVICE_GB_ENV = "SC_NOISE2SELF_DEVICE_GB"


def free_device_bytes(device) -> float:
    """Bytes the in-memory GPU paths may fill on ``device``.

    80% of CUDA's free memory; the CPU (and any other device) has no separate memory to
    fill (infinity). ``$SC_NOISE2SELF_DEVICE_GB``, when set, caps either.
    """
    import torch

    free = 0.8 * torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else float("inf")
    cap = os.environ.get(DEVICE_GB_ENV)
    if cap is None:
        return free
    try:
        return min(free, float(cap) * 1e9)
    except ValueError as error:
        raise ValueError(f"${DEVICE_GB_ENV}={cap!r} must be a number of GB, e.g. 8.") from error
