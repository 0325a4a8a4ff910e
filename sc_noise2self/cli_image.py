"""``sc-noise2self image ...``: calibrate, train and predict on microscopy files; export models.

TIFF and OME-Zarr in, the same out (axes, scale and shape kept), at any size: inputs are
read lazily and outputs written block by block (:mod:`sc_noise2self.image.workflows`). Every
output is checked before any work and written atomically; an existing one (or the input) is
replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ._progress import shows_progress_on_a_terminal
from .image import workflows
from .image.files import kind_of
from .image.structure import MASKS, mask_name
from .io import atomic_path, check_output, write_figure

_FORMATS = "TIFF (.tif, .tiff, .ome.tif) or OME-Zarr (.zarr, .ome.zarr)"


def add_image_commands(commands, formatter) -> None:
    """Register ``image calibrate``, ``train``, ``predict`` and ``export``."""
    image = commands.add_parser(
        "image", help="denoise microscopy files (TIFF, OME-Zarr), of any size",
        description=f"Noise2Self for microscopy files: {_FORMATS}.")
    verbs = image.add_subparsers(dest="verb", required=True)

    calibrate = verbs.add_parser(
        "calibrate", formatter_class=formatter,
        help="choose a classical denoiser and its parameters by the self-supervised loss",
        description="Calibrate a classical denoiser (or choose among them with 'auto') on a "
        "central sample of IN by the J-invariant loss, then denoise all of IN block by block.")
    _common(calibrate)
    calibrate.add_argument("--method", default="auto",
                           help="'auto' or one method (median, gaussian, nl_means, ...)")
    calibrate.add_argument("--per-channel", action="store_true",
                           help="calibrate each channel on its own (default: one shared)")
    calibrate.add_argument("--sample", type=int, default=256,
                           help="pixels of the calibrated sample along each spatial axis")
    calibrate.add_argument("--no-mix", action="store_true",
                           help="do not mix in the optimal share of the noisy input")
    calibrate.add_argument("--report", default=None,
                           help="write the calibration record (loss curve, best, mix) as JSON")
    calibrate.add_argument("--plot", default=None, help="write the loss curve to an image")
    calibrate.add_argument("--max-time", type=float, default=None,
                           help="with --method auto: seconds for choosing between the "
                                "classical methods and a UNet trained on the sample; "
                                "denoising the file follows")
    _mask_option(calibrate)
    calibrate.set_defaults(run=run_calibrate)

    train = verbs.add_parser(
        "train", formatter_class=formatter,
        help="train a masked CNN on IN itself, then denoise IN with it",
        description="Train a Noise2Self UNet or DnCNN on the noisy IN alone (every time point "
        "and channel), then predict all of IN block by block.")
    _common(train)
    train.add_argument("--model", default="unet", choices=("unet", "dncnn"),
                       help="the masked network trained on IN")
    train.add_argument("--max-time", type=float, default=120.0,
                       help="seconds for the whole command: training gets what is left after "
                            "the start and reading, less 5%% for predicting and writing")
    train.add_argument("--steps", type=int, default=None, help="training steps (instead)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    train.add_argument("--crop", type=int, default=None,
                       help="train on the central CROP pixels of each spatial axis")
    train.add_argument("--frames", type=int, default=None,
                       help="train on at most FRAMES images of a stack, evenly spaced")
    train.add_argument("--per-channel", action="store_true",
                       help="train one network per channel (saved as NAME.c0.pt, ...)")
    train.add_argument("--save-model", default=None, help="write the trained model (.pt)")
    train.add_argument("--random-state", type=int, default=0,
                       help="seed of the network's weights, patches and masks")
    _mask_option(train)
    train.set_defaults(run=run_train)

    predict = verbs.add_parser(
        "predict", formatter_class=formatter, help="denoise IN with a saved model",
        description="Denoise IN block by block with a model saved by 'image train'.")
    _common(predict)
    predict.add_argument("--model", required=True, action="append",
                         help="a model file from --save-model; repeat it, one per channel "
                         "in order, for models trained with --per-channel")
    predict.add_argument("--augment", action="store_true", help="test-time augmentation")
    predict.add_argument("--no-fallback", action="store_true",
                         help="write the network's output even when it lost to the "
                         "neighbour mean")
    predict.set_defaults(run=run_predict)

    export = verbs.add_parser(
        "export", formatter_class=formatter,
        help="write a saved model as a bioimage.io package (Fiji, ilastik, BiaPy, the zoo)",
        description="Write a model saved by 'image train --save-model' as a bioimage.io model "
        "package (spec 0.5, a .zip), with a test input cut from SAMPLE.")
    export.add_argument("model", help="a model file from 'image train --save-model' (.pt)")
    export.add_argument("--sample", required=True,
                        help=f"an image like the training images: {_FORMATS}")
    export.add_argument("--out", required=True, help="the package to write (.zip)")
    export.add_argument("--author", required=True, action="append",
                        help="who made the model; repeat for several authors")
    export.add_argument("--name", default=None, help="the model's name on the zoo")
    export.add_argument("--description", default=None, help="one sentence on the model")
    export.add_argument("--license", default="CC-BY-4.0", help="SPDX license of the weights")
    export.add_argument("--channel-names", default=None,
                        help="comma-separated channel names, one per channel")
    export.add_argument("--axes", default=None,
                        help="axis letters of SAMPLE from TCZYX, overriding the file's")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export.set_defaults(run=run_export)


def _mask_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mask", default="auto", choices=MASKS,
                        help="what is hidden: pixels, or whole rows or columns for noise "
                             "correlated along them (line-scanning, sCMOS read-out), or a "
                             "block around each pixel for noise correlated along every "
                             "axis; auto (default) tests the noise and chooses")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help=f"the noisy image: {_FORMATS}")
    parser.add_argument("--out", required=True, help=f"the denoised image: {_FORMATS}")
    parser.add_argument("--axes", default=None,
                        help="axis letters from TCZYX, overriding the file's (e.g. ZYX)")
    parser.add_argument("--spatial", default=None, choices=("YX", "ZYX"),
                        help="axes denoised together (default ZYX when Z is present)")
    parser.add_argument("--block", type=int, default=256,
                        help="block size along each spatial axis (memory per block)")
    parser.add_argument("--dtype", default="input", choices=("input", "float32"),
                        help="the output's dtype: an integer input's own (values rounded, "
                        "clipped to its range with a warning), or float32")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs if they exist, even the input")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (shown when stderr is a terminal)")


def _progress(args) -> bool:
    """Bars on a terminal, as command-line tools show them, unless ``--no-progress``."""
    return not args.no_progress and shows_progress_on_a_terminal()


def _checked_outputs(args, **extra) -> list[Path | None]:
    """Every output checked before any work: a bad path fails at once, not after training.

    ``extra`` names the command's other outputs (``report=...``); two outputs that resolve
    to one path are refused, since the second would replace the first.
    """
    kind_of(args.input)
    kind_of(args.out)
    _refuse_shared_outputs({"out": args.out, **extra})
    outputs = []
    for path in extra.values():
        outputs.append(None if path is None else check_output(
            Path(path).resolve(), overwrite=args.overwrite, inputs=(args.input,)))
    return outputs


def _refuse_shared_outputs(outputs: dict) -> None:
    """Refuse two options that name the same output file."""
    seen: dict[Path, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ValueError(
                f"--{name} and --{seen[resolved]} are both {str(path)!r}: one would replace "
                f"the other. Give --{name} a path of its own."
            )
        seen[resolved] = name


def run_calibrate(args) -> int:
    """``image calibrate``."""
    report, plot = _checked_outputs(args, report=args.report, plot=args.plot)
    start = time.perf_counter()
    result = workflows.calibrate_file(
        args.input, args.out, method=args.method, axes=args.axes, spatial=args.spatial,
        per_channel=args.per_channel, sample=args.sample, block=args.block,
        mix=not args.no_mix, dtype=args.dtype, overwrite=args.overwrite,
        progress=_progress(args), mask=args.mask,
        **({} if args.max_time is None else {"max_time": args.max_time}))
    calibrations = result if isinstance(result, list) else [result]
    for index, calibration in enumerate(calibrations):
        where = f"channel {index}: " if len(calibrations) > 1 else ""
        if hasattr(calibration, "table"):  # auto within a budget
            for row in calibration.table:
                loss, error = ("-" if row[key] is None else f"{row[key]:.5g}"
                               for key in ("loss", "expected_error"))
                print(f"{where}{row['method']}: {row['seconds']:.1f} s, held-out loss {loss}, "
                      f"expected error {error}", flush=True)
            weight = (f", mixed at weight {calibration.cnn_mix_weight:.3f}"
                      if calibration.method == "unet" and calibration.cnn_mix_weight < 1 else "")
            print(f"{where}chose {calibration.method}{weight}", flush=True)
            calibration = calibration.calibration
            where += "best classical: "
        print(f"{where}method {calibration.method}, parameters {calibration.best_params}, "
              f"mix weight {calibration.mix_weight:.3f}, noise variance "
              f"{calibration.noise_variance:.4g}, mask {calibration.settings['mask']}; loss "
              f"{calibration.best_loss:.5g} against {calibration.baseline_loss:.5g} of the "
              "neighbour mean", flush=True)
        for name, end in calibration.edge_parameters.items():
            print(f"{where}note: the best {name} is the {end} value of the grid; the loss "
                  "may fall further beyond it", flush=True)
    print(f"wrote {args.out}")
    if report is not None:
        with atomic_path(report, overwrite=args.overwrite) as temporary:
            temporary.write_text(json.dumps([json.loads(c.to_json()) for c in calibrations]
                                            if len(calibrations) > 1 else
                                            json.loads(calibrations[0].to_json()), indent=1))
        print(f"wrote {args.report}")
    if plot is not None:
        classical = [getattr(c, "calibration", c) for c in calibrations]
        write_figure(_curves_figure(classical), plot, overwrite=args.overwrite)
        print(f"wrote {args.plot}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


def run_train(args) -> int:
    """``image train``: train on the input, then predict it."""
    _checked_outputs(args)
    _refuse_shared_outputs({"out": args.out, "save-model": args.save_model})
    workflows.check_target(args.out, args.input, args.overwrite)
    start = time.perf_counter()
    budget = ({"steps": args.steps} if args.steps is not None
              else {"deadline": _training_deadline(args)})
    model = workflows.train_file(args.input, model=args.model, axes=args.axes,
                                 spatial=args.spatial, crop=args.crop, frames=args.frames,
                                 per_channel=args.per_channel, save_model=args.save_model,
                                 overwrite=args.overwrite, device=args.device,
                                 random_state=args.random_state, progress=_progress(args),
                                 mask=args.mask, **budget)
    models = model if isinstance(model, list) else [model]
    for index, one in enumerate(models):
        where = f"channel {index}: " if len(models) > 1 else ""
        history = one.history
        spent = (f" in {history['time'][-1]:.1f} s ({history['step'][-1]} steps)"
                 if history.get("time") else "")
        print(f"{where}trained {args.model} on {one.device}{spent} (mask "
              f"{mask_name(one.line_axes, one.layout.n_spatial, one.reach)}): held-out loss "
              f"{one.val_loss:.5g} against {one.baseline_loss:.5g} of the neighbour mean",
              flush=True)
    if args.save_model is not None:
        saved = (workflows.channel_model_paths(args.save_model, len(models)) if len(models) > 1
                 else [args.save_model])
        print("wrote " + ", ".join(map(str, saved)))
    return _predict(args, model, start)


#: Share of ``image train --max-time`` kept for predicting and writing the output.
PREDICTION_SHARE = 0.05


def _training_deadline(args) -> float:
    """When training must end for ``--max-time`` to cover the command, start to finish.

    The clock starts with the process (when run from the shell); the last 5% is kept for
    predicting and writing. Reading and loading torch come out of what is left
    (:func:`~sc_noise2self.image.workflows.train_file`).
    """
    if not args.max_time > 0:
        raise ValueError(f"--max-time {args.max_time:g} must be positive: seconds for the "
                         "whole command.")
    started = getattr(args, "started", time.perf_counter())
    return started + args.max_time * (1.0 - PREDICTION_SHARE)


def seconds_since_process_start() -> float:
    """How long this process has run (Linux's /proc), so that a budget counts the imports.

    Returns
    -------
    Seconds; 0 where /proc is not available.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0
    return max(uptime - started, 0.0)


def run_predict(args) -> int:
    """``image predict``."""
    _checked_outputs(args)
    start = time.perf_counter()
    models = args.model if len(args.model) > 1 else args.model[0]
    return _predict(args, models, start, augment=args.augment, fallback=not args.no_fallback)


def _predict(args, models, start: float, **options) -> int:
    """Predict IN into OUT with the model(s), then say what was written and how long it took."""
    workflows.predict_file(args.input, models, args.out, axes=args.axes, block=args.block,
                           dtype=args.dtype, overwrite=args.overwrite,
                           progress=_progress(args), **options)
    print(f"wrote {args.out}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


def run_export(args) -> int:
    """``image export``."""
    names = None if args.channel_names is None else args.channel_names.split(",")
    workflows.export_model(args.model, args.sample, args.out, authors=args.author,
                           axes=args.axes, overwrite=args.overwrite, name=args.name,
                           description=args.description, license=args.license,
                           channel_names=names)
    print(f"wrote {args.out}")
    return 0


def _curves_figure(calibrations: list):
    """Every channel's loss curve, side by side (one panel for a shared calibration)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(calibrations), figsize=(5 * len(calibrations), 3.5),
                             squeeze=False, layout="constrained")
    for index, (ax, calibration) in enumerate(zip(axes[0], calibrations, strict=True)):
        calibration.plot(ax=ax)
        if len(calibrations) > 1:
            ax.set_title(f"channel {index}: {calibration.method}")
    return fig
