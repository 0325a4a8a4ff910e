"""CAREamics 0.3.5 N2V and structN2V against our package on noise correlated along rows.

Run (one side per invocation: ``ours`` prints its two rows, ``careamics`` one; each starts
with a comment line of date, load, torch threads; the rows fit the markdown header below):
  export SC_NOISE2SELF_DATA=/work/shared/data
  PY=/tmp/care-venv/bin/python
  $PY benchmarks/bench_careamics_structn2v.py --side ours --max-time 180 [--image camera|fmd]
  $PY benchmarks/bench_careamics_structn2v.py --side careamics --algorithm n2v --max-time 180
  $PY benchmarks/bench_careamics_structn2v.py --side careamics --algorithm structn2v \
      --max-time 180
Options: --image camera|fmd (default camera), --length L (default 5), --n2v2 (CAREamics
N2V2 variant), --patch 64, --batch 16, --smoke (a 128 x 128 crop, the image's top left,
and a 5 s budget; CAREamics then holds out 1 validation patch of the crop's 4, not 8).

| image | L | run | PSNR (dB) | seconds | notes |
|---|---|---|---|---|---|

Environment: /tmp/care-venv (``--system-site-packages``: the system's torch 2.13.0 CPU,
lightning 2.6.6, scikit-image, our package editable) with careamics 0.3.5 installed
``--no-deps``, torchmetrics 1.8.2, microssim 0.0.5 and torchvision 0.28.0. CAREamics
declares ``torchvision<=0.26.0``, which would pin torch 2.11; 0.28.0 is the release built
for torch 2.13.0, newer than that cap. The only 0.28.0 wheel to hand is the CUDA build, whose
C++ ops cannot load against a CPU torch and whose import then fails registering a fake
kernel for ``torchvision::nms``; :func:`import_careamics` imports torchvision with those
registrations skipped (N2V uses no torchvision op; only CAREamics' LVAE code and
torchmetrics import its pure-Python transforms). Both sides run in the venv's python.

Images: the clean images and noise of ``bench_image_structured.py`` (its ``clean_images`` and
``line_noise``): scikit-image ``camera`` (512 x 512, [0, 1]) with sd 0.1, or the FMD confocal
BPAE green 50-frame average with the real noise's sd; white Gaussian noise (seed 0)
convolved along x (within each row) with a box of L pixels, scaled to keep the sd, so each
pixel's noise is correlated with the L - 1 pixels on either side of it in its row. The noisy
image is float32; every method gets that same array.

Rows:
- ours: ``image.denoise(x, "auto", max_time=T)`` (classical methods and a masked UNet within
  the budget; the detector finds the row structure and picks the mask) and
  ``image.denoise(x, "unet", max_time=T)`` (our masked UNet; default ``mask="auto"``), both
  with their defaults otherwise (percentile normalisation; flip/transpose averaging at
  prediction; fallback to the neighbour mean when the output loses to it, flagged in notes).
  Seconds: the whole ``denoise`` call.
- CAREamics: N2V (no struct mask) and structN2V (horizontal struct mask of span 2L - 1, see
  :func:`careamics_config`), configured as ``create_n2v_config`` / ``create_structn2v_config``
  do (rotations and flips for N2V, no augmentation for structN2V; UNet depth 2, 32 initial
  channels; 20 % masked pixels in an 11-pixel ROI, uniform replacement; mean/std
  normalisation fitted on the training image and undone at prediction; Adam with
  ReduceLROnPlateau; 8 validation patches held out of the training grid), patch 64 x 64 and
  batch 16 (the factories have no default; these are the values of the CAREamics guides),
  no dataloader workers (see :func:`careamics_config`). Trained on the noisy image itself,
  stopped by wall clock T seconds after ``train`` was called (:func:`stop_after`; the
  stopping batch still finishes, then one validation and the last checkpoint), then predicted
  on the whole image untiled (CAREamics' default, from its last checkpoint, no test-time
  augmentation). Seconds: ``train`` plus ``predict``.
PSNR against the clean image, ``data_range = np.ptp(clean)``, the same for every row.
Threads: torch.get_num_threads() (printed in the header line) on both sides, all 2 cores;
the classical methods of ``auto`` on every core too. Precision: float32 on both sides.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_image_structured import clean_images, line_noise

IMAGE_KEYS = {"camera": "camera", "fmd": "fmd G average"}


def test_image(name: str, length: int, smoke: bool) -> tuple[np.ndarray, np.ndarray]:
    """The clean image (float64) and its line-noise copy (float32), cropped for a smoke run."""
    clean, sd = clean_images()[IMAGE_KEYS[name]]
    clean = np.asarray(clean, dtype=np.float64)
    noisy = clean + line_noise(clean.shape, length, sd, 0)
    if smoke:  # crop after adding the noise: the same noise the full run sees there
        clean, noisy = clean[:128, :128], noisy[:128, :128]
    return clean, noisy.astype(np.float32)


def psnr(clean: np.ndarray, out: np.ndarray) -> float:
    """PSNR of ``out`` against ``clean`` over the clean image's range, identical for all rows."""
    return float(peak_signal_noise_ratio(clean, np.asarray(out, dtype=np.float64).squeeze(),
                                         data_range=float(np.ptp(clean))))


def run_ours(noisy: np.ndarray, max_time: float) -> list[tuple[str, np.ndarray, float, str]]:
    """The two rows of our package: budgeted ``auto`` and the masked UNet, each timed whole."""
    from sc_noise2self import image as im
    from sc_noise2self.image.referee import BaselineWarning

    rows = []
    for method in ("auto", "unet"):
        began = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, chosen = im.denoise(noisy, method, max_time=max_time, progress=False,
                                     return_calibration=True)
        seconds = time.perf_counter() - began
        if method == "auto":
            notes = f"winner {chosen.method}, mask {chosen.calibration.settings.get('mask')}"
            if chosen.model is not None:
                notes += f", UNet line_axes {chosen.model.line_axes}"
        else:
            history = chosen.history
            notes = (f"line_axes {chosen.line_axes}, {len(history.get('epoch', []))} epochs, "
                     f"stopped {history.get('stopped')}")
        if any(issubclass(w.category, BaselineWarning) for w in caught):
            notes += ", BaselineWarning (lost to the neighbour mean)"
        rows.append((f"ours {method}, max_time={max_time:g}", out, seconds, notes))
    return rows


def import_careamics() -> Any:
    """Import careamics, letting the CUDA torchvision wheel import on the CPU torch.

    torchvision 0.28.0's CUDA build cannot load its C++ ops here, and its import then fails
    in ``torch.library.register_fake("torchvision::nms")``. While importing torchvision,
    a registration whose operator does not exist is skipped; nothing else changes.
    """
    import torch.library

    original = torch.library.register_fake

    def tolerant(op: Any, func: Any = None, /, **kwargs: Any) -> Any:
        def register(fn: Any) -> Any:
            try:
                return original(op, **kwargs)(fn)
            except RuntimeError:  # the op was never defined: torchvision has no C++ ops
                return fn
        return register if func is None else register(func)

    torch.library.register_fake = tolerant
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original
    import careamics

    return careamics


def careamics_config(algorithm: str, length: int, patch: int, batch: int, n2v2: bool,
                     n_val_patches: int) -> Any:
    """The CAREamics configuration: the convenience factories' settings, plus workers and seed."""
    from careamics.config import create_advanced_n2v_config

    struct: dict[str, Any] = {}
    if algorithm == "structn2v":
        # The noise at (y, x) is correlated with (y, x +- k) for k = 1 .. L - 1 (a box of L
        # along x). CAREamics' "horizontal" struct mask replaces the masked pixel's
        # neighbours in its row, span // 2 on each side (span = the mask's full width, odd,
        # 3 to 15), so span 2 (L - 1) + 1 = 2L - 1 hides exactly every correlated neighbour
        # and no more. A wider span would only hide more signal.
        span = 2 * length - 1
        if not 3 <= span <= 15:
            raise SystemExit(f"structN2V needs 2 <= L <= 8 (span 2L - 1 in 3..15), got L={length}")
        struct = {"struct_n2v_axes": "horizontal", "struct_n2v_span": span}
    return create_advanced_n2v_config(
        experiment_name=f"bench_{algorithm}",
        data_type="array",
        axes="YX",
        patch_size=[patch, patch],
        batch_size=batch,
        num_epochs=1_000_000,  # the wall clock stops training, never the epoch count
        # as create_structn2v_config: no augmentation (a 90-degree rotation would turn the
        # rows into columns under a horizontal mask); as create_n2v_config: flips and rotations
        augmentations=[] if struct else None,
        n_val_patches=n_val_patches,
        use_n2v2=n2v2,
        # CAREamics' Linux default is min(cores - 1, 4) = 1 worker: a third busy process on
        # 2 cores next to torch's 2 threads. Patches of an in-memory array are cheap to cut
        # (the N2V masking runs in the training step), so the main process does it.
        num_workers=0,
        seed=1,
        logger="none",
        trainer_params={"enable_model_summary": False},  # output only
        **struct,
    )


def stop_after() -> Any:
    """A Lightning callback that stops training after the first batch to end past its deadline.

    Set ``callback.deadline`` (``time.perf_counter()`` seconds) immediately before
    ``CAREamist.train``; the trainer then finishes that batch, validates once and saves its
    last checkpoint.
    """
    from lightning.pytorch import Callback

    class StopAfter(Callback):
        deadline = float("inf")

        def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
            if time.perf_counter() >= self.deadline:
                trainer.should_stop = True

    return StopAfter()


def run_careamics(noisy: np.ndarray, args: argparse.Namespace) -> tuple[str, np.ndarray, float,
                                                                         str]:
    """Train CAREamics on the noisy image for ``args.max_time`` seconds, then predict it."""
    careamics = import_careamics()
    for name in ("lightning", "lightning.pytorch", "careamics"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    config = careamics_config(args.algorithm, args.length, args.patch, args.batch, args.n2v2,
                              n_val_patches=1 if args.smoke else 8)
    with tempfile.TemporaryDirectory(prefix="care-bench-", dir="/tmp") as work_dir:
        callback = stop_after()
        careamist = careamics.CAREamist(config, work_dir=work_dir, callbacks=[callback],
                                        enable_progress_bar=False)
        began = time.perf_counter()  # the budget runs from the call to train()
        callback.deadline = began + args.max_time
        careamist.train(train_data=noisy)
        trained = time.perf_counter()
        predictions, _ = careamist.predict(noisy, axes="YX", data_type="array")
        seconds = time.perf_counter() - began
        trainer = careamist.trainer
        steps, epochs = trainer.global_step, trainer.current_epoch
    out = np.asarray(predictions[0]).squeeze()
    label = {"n2v": "N2V", "structn2v": "structN2V"}[args.algorithm] + ("2" if args.n2v2 else "")
    transform = config.algorithm_config.n2v_config
    mask = (f"{transform.struct_mask.axes} span {transform.struct_mask.span}"
            if transform.struct_mask else "none")
    notes = (f"struct mask {mask}; train {trained - began:.1f} s, {steps} steps, "
             f"{epochs} epochs; patch {args.patch}, batch {args.batch}")
    return (f"CAREamics {careamics.__version__} {label}, max_time={args.max_time:g}", out,
            seconds, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("ours", "careamics"), required=True)
    parser.add_argument("--algorithm", choices=("n2v", "structn2v"), default="n2v",
                        help="CAREamics side only")
    parser.add_argument("--n2v2", action="store_true", help="CAREamics N2V2 variant")
    parser.add_argument("--max-time", type=float, default=None,
                        help="seconds of training (default 180, 5 with --smoke)")
    parser.add_argument("--image", choices=tuple(IMAGE_KEYS), default="camera")
    parser.add_argument("--length", type=int, default=5, help="noise correlation length L")
    parser.add_argument("--patch", type=int, default=64, help="CAREamics patch size")
    parser.add_argument("--batch", type=int, default=16, help="CAREamics batch size")
    parser.add_argument("--smoke", action="store_true", help="128 x 128 crop, 5 s budget")
    args = parser.parse_args()
    if args.max_time is None:
        args.max_time = 5.0 if args.smoke else 180.0

    clean, noisy = test_image(args.image, args.length, args.smoke)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f}, "
          f"torch threads {torch.get_num_threads()}, float32, side {args.side}, "
          f"image {args.image} {noisy.shape}, L {args.length}, max_time {args.max_time:g}"
          + (", SMOKE" if args.smoke else ""), flush=True)
    rows = run_ours(noisy, args.max_time) if args.side == "ours" else [run_careamics(noisy, args)]
    for label, out, seconds, notes in rows:
        print(f"| {args.image} | {args.length} | {label} | {psnr(clean, out):.2f} | "
              f"{seconds:.1f} | {notes} |", flush=True)


if __name__ == "__main__":
    main()
