"""The ``sc-noise2self`` command: calibrate and denoise counts from the shell.

Outputs are checked before any work and written atomically (:mod:`sc_noise2self.io`): an
existing file, or the input itself, is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import datasets, pl, tl
from ._version import __version__
from .calibration import DEFAULT_P, SplitSettings
from .cli_image import add_image_commands, seconds_since_process_start
from .io import check_output, formats_text, read_counts, write_figure, write_h5ad
from .results import finite_argmin

DEFAULT_DATASETS = ("auto", "paul15", "synthetic")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sc-noise2self``."""
    parser = argparse.ArgumentParser(
        prog="sc-noise2self",
        description="Noise2Self: molecular cross-validation for single-cell counts "
        "('denoise'), and J-invariant denoising of microscopy files ('image').",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    denoise = commands.add_parser(
        "denoise",
        help="choose the PCA rank by the self-supervised loss, then denoise",
        description="Choose the PCA rank by molecular cross-validation and denoise. With no "
        "INPUT, runs on paul15 when $SC_NOISE2SELF_DATA holds it, else on synthetic counts. "
        f"Input formats:\n{formats_text()}",
        formatter_class=HelpFormatter,
    )
    denoise.add_argument("input", nargs="?", help="raw counts: a file or a 10x folder "
                         "(formats above); none runs the embedded default dataset")
    denoise.add_argument("--out", default="noise2self.h5ad", help="output h5ad path")
    denoise.add_argument("--overwrite", action="store_true",
                         help="replace --out (and --plot) if they exist, even the input")
    denoise.add_argument("--layer", default=None, help="layer with raw counts (default: X)")
    denoise.add_argument("--max-comps", type=int, default=100, help="largest rank scored")
    denoise.add_argument("--p", type=float, default=DEFAULT_P,
                         help="share of molecules in half A")
    denoise.add_argument("--transform", default="sqrt", choices=("sqrt", "log1p", "none"),
                         help="variance-stabilising transform of the normalised counts "
                         "before the PCA")
    # The package's defaults, not the command's own: one default across every front.
    defaults = SplitSettings()
    denoise.add_argument("--loss", default=defaults.loss, choices=("mse", "poisson"),
                         help="self-supervised loss: poisson scores counts at each cell's "
                         "depth, mse the transformed values")
    denoise.add_argument("--split", default=defaults.split,
                         choices=("negative_binomial", "binomial"),
                         help="molecule split; negative_binomial estimates per-gene NB sizes "
                         "(default: %(default)s; binomial for Poisson counts)")
    denoise.add_argument("--n-splits", type=int, default=1, help="independent splits to average")
    denoise.add_argument("--random-state", type=int, default=0, help="seed of the splits")
    denoise.add_argument("--max-layer-gb", type=float, default=1.0,
                         help="write the dense denoised layer only when it takes at most this "
                         "many GB (float32); scores and loadings are always written")
    denoise.add_argument("--no-layer", action="store_true",
                         help="never write the dense denoised layer (same as --max-layer-gb 0)")
    denoise.add_argument("--plot", default=None, help="write the loss curve to this image file")
    denoise.add_argument(
        "--dataset", default="auto", choices=DEFAULT_DATASETS,
        help="embedded default data when no INPUT is given",
    )
    denoise.set_defaults(run=run_denoise)
    add_image_commands(commands, HelpFormatter)
    return parser


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default shown once after its help, and the description's line breaks kept.

    Unlike ``ArgumentDefaultsHelpFormatter``, a default that says nothing (None, an off
    flag) is not printed, nor one the help already states ("(default: X) (default: None)").
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        says_nothing = any(action.default is v for v in (None, False, argparse.SUPPRESS))
        silent = says_nothing or "(default" in text
        if silent or (action.option_strings == [] and action.nargs in ("?", "*")):
            return text
        return f"{text} (default: %(default)s)"


def load_input(path: str | None, dataset: str):
    """Read ``path``, or the embedded default dataset; return ``(adata, description)``."""
    if path is not None:
        return read_counts(path), path
    if dataset in ("auto", "paul15") and datasets.local_file("paul15.h5ad") is not None:
        return datasets.paul15(), "paul15 (from $SC_NOISE2SELF_DATA)"
    if dataset == "paul15":
        return datasets.paul15(), "paul15 (downloaded)"
    adata = datasets.synthetic_counts(2000, 1000, rank=10, depth=1500, store_truth=False)
    return adata, "synthetic counts with a true rank of 10"


def describe_curve(grid: np.ndarray, loss: np.ndarray) -> str:
    """One line on the curve's shape: its ends, its minimum, and whether that is interior."""
    best = finite_argmin(loss)  # as the calibration chose: a failed rank never wins
    where = "interior minimum" if 0 < best < len(grid) - 1 else "minimum at the edge of the grid"
    return (
        f"loss {loss[0]:.5g} at rank {grid[0]}, {loss[best]:.5g} at rank {grid[best]} "
        f"({where}), {loss[-1]:.5g} at rank {grid[-1]}"
    )


def run_denoise(args: argparse.Namespace) -> int:
    """Run the ``denoise`` command."""
    import scanpy as sc  # slow to import; only a run needs it, not --help

    # Every output is checked before the work starts: a bad path fails in a second, not
    # after the calibration.
    out = check_output(args.out, overwrite=args.overwrite, inputs=(args.input,))
    plot = None
    if args.plot:
        # A path with a directory is written exactly there (a bare name would be a suffix).
        plot = check_output(Path(args.plot).resolve(), overwrite=args.overwrite,
                            inputs=(args.input,))
    sc.settings.verbosity = "info"
    start = time.perf_counter()
    adata, description = load_input(args.input, args.dataset)
    print(f"data: {description}, {adata.n_obs} cells x {adata.n_vars} genes", flush=True)
    tl.denoise_pca(
        adata, layer=args.layer, max_comps=args.max_comps, transform=args.transform,
        loss=args.loss, split=args.split, n_splits=args.n_splits,
        random_state=args.random_state, p=args.p,
        max_layer_gb=0.0 if args.no_layer else args.max_layer_gb,
    )
    record = adata.uns["noise2self"]
    print(f"chosen rank: {record['n_comps']}")
    print(f"curve: {describe_curve(np.asarray(record['grid']), np.asarray(record['loss']))}")
    write_h5ad(adata, out, overwrite=args.overwrite)
    print(f"wrote {out}")
    if plot is not None:
        write_figure(pl.calibration_curve(adata, show=False).figure, plot,
                     overwrite=args.overwrite)
        print(f"wrote {args.plot}")
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sc-noise2self``."""
    # Run from the shell (argv None), a command's time budget counts the process's start.
    started = time.perf_counter() - (seconds_since_process_start() if argv is None else 0.0)
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        return args.run(args)
    except (ValueError, KeyError, TypeError, OSError, ImportError) as error:
        print(f"sc-noise2self: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
