"""Reading counts from the formats single-cell data come in, and writing files atomically.

Every file the package writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target's own folder and renamed over the target only once it is
complete, so an interrupted write (Ctrl-C, a full disk, a crash) leaves the previous file as
it was. An existing file is replaced only when the caller asks (``overwrite=True``).

A writer first claims its target (:func:`claimed`): a second writer of the same output is
refused, naming the first, instead of one result silently replacing the other. The claim
is a lock file beside the target holding the writer's process id; a claim whose process is
gone (a killed run) is taken over, and the killed run's temporaries are swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import anndata as ad

#: What :func:`read_counts` accepts, by how the path ends (or a 10x folder).
FORMATS = {
    ".h5ad": "AnnData",
    ".h5": "10x Genomics HDF5 (filtered_feature_bc_matrix.h5)",
    ".loom": "loom",
    ".csv": "CSV, cells as rows and genes as columns (first column: cell names)",
    ".tsv": "TSV, like CSV",
    ".txt": "tab-separated text, like TSV",
    "folder": "10x Genomics folder with matrix.mtx(.gz), barcodes and features/genes",
}


def formats_text() -> str:
    """The accepted formats, one per line, for error messages and ``--help``."""
    return "\n".join(f"  {ending}: {what}" for ending, what in FORMATS.items())


def read_counts(path: str | os.PathLike) -> ad.AnnData:
    """Read raw counts from any format in :data:`FORMATS` into an AnnData.

    Parameters
    ----------
    path
        A file (``.h5ad``, 10x ``.h5``, ``.loom``, ``.csv``/``.tsv``/``.txt``, optionally
        ``.gz``) or a 10x matrix folder.

    Returns
    -------
    The AnnData, with counts in ``X``; raises ``FileNotFoundError`` or ``ValueError``
    naming the path and the formats accepted.
    """
    import scanpy as sc  # slow to import; only reading needs it

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input {str(path)!r} does not exist.")
    if path.is_dir():
        if not any(path.glob("matrix.mtx*")):
            raise ValueError(
                f"Input {str(path)!r} is a folder without matrix.mtx(.gz); a folder must be a "
                f"10x matrix folder. Formats accepted:\n{formats_text()}"
            )
        return sc.read_10x_mtx(path)
    name = path.name.lower().removesuffix(".gz")
    ending = Path(name).suffix
    if ending == ".h5ad":
        return ad.read_h5ad(path)
    if ending == ".h5":
        return sc.read_10x_h5(path)
    if ending == ".loom":
        return ad.io.read_loom(path)
    if ending == ".csv":
        return ad.io.read_csv(path)
    if ending in (".tsv", ".txt"):
        return ad.io.read_text(path, delimiter="\t")
    raise ValueError(
        f"Cannot read {str(path)!r}: unknown format {path.suffix or '(no ending)'!r}. Formats "
        f"accepted:\n{formats_text()}"
    )


def check_output(path: str | os.PathLike, *, overwrite: bool = False, inputs: tuple = (),
                 kind: str = "file") -> Path:
    """Check, before any work, that ``path`` can be written; return it as a Path.

    Parameters
    ----------
    path
        Where the output goes.
    overwrite
        Replace an existing file; without it an existing file is refused.
    inputs
        Paths being read: writing over one of them is refused unless ``overwrite``.
    kind
        ``"file"``, or ``"store"`` for a folder such as a zarr store.

    Returns
    -------
    The path; raises ``FileExistsError``, ``FileNotFoundError`` or ``PermissionError``.
    """
    path = Path(path)
    folder = path.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The output folder {str(folder)!r} does not exist; create it first "
            f"(mkdir -p {folder})."
        )
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"The output folder {str(folder)!r} is not writable.")
    if path.is_dir() and kind == "file":
        raise IsADirectoryError(f"The output {str(path)!r} is a folder; name a file.")
    if not overwrite:
        if any(Path(i).resolve() == path.resolve() for i in inputs if i is not None):
            raise FileExistsError(
                f"The output {str(path)!r} is the input: writing it would replace your data. "
                "Choose another output, or pass overwrite (--overwrite) to replace it."
            )
        if path.exists():
            raise FileExistsError(
                f"The output {str(path)!r} exists; choose another name, or pass overwrite "
                "(--overwrite) to replace it."
            )
    return path


# Targets this process holds a claim on (a writer may call another on the same target).
_HELD: set[Path] = set()


@contextlib.contextmanager
def claimed(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive claim on the output ``path`` while the block runs.

    The claim is the file ``.<name>.lock`` beside ``path``, created exclusively, holding
    this process's id and host. Another live process's claim is refused with an error that
    names it. A claim left by a process that is gone (killed) is taken over; the dead run's
    temporaries (``.<name>.*.partial``, ``.<name>.*.blocks``) are then removed, and a
    previous folder output left aside (``.<name>.old``) is put back if the output is
    missing, else removed. Re-entrant within one process.

    Yields
    ------
    ``path`` resolved.
    """
    path = Path(path).resolve()
    if path in _HELD:
        yield path
        return
    lock = path.with_name(f".{path.name}.lock")
    with HeldInterrupt() as held:  # the claim exists only with the finally that drops it
        _take(lock, path)
        _HELD.add(path)
    try:
        held.release()
        _sweep(path)
        yield path
    finally:
        _HELD.discard(path)
        lock.unlink(missing_ok=True)


class HeldInterrupt:
    """Ctrl-C held while something is created, and passed on once its cleanup is in place.

    A ``KeyboardInterrupt`` between creating a file and entering the ``try`` whose
    ``finally`` removes it would leave the file behind. From ``with HeldInterrupt() as
    held`` until ``held.release()`` (the first line of that ``try``) a SIGINT is only
    recorded; ``release`` puts the previous handler back and, if one came, raises SIGINT
    again for it (Python's default handler raises ``KeyboardInterrupt``; ``SIG_DFL``
    ends the process, as it would have). An exception inside the ``with`` puts the handler
    back at once and passes a held SIGINT on. Outside the main thread, where Python
    delivers no signals, and under a handler installed from C (which cannot be put back),
    nothing is held.
    """

    def __init__(self) -> None:
        self._previous = None
        self._installed = False
        self._received = False

    def __enter__(self) -> HeldInterrupt:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not None:
                self._previous = previous
                signal.signal(signal.SIGINT, self._hold)
                self._installed = True
        return self

    def _hold(self, signum, frame) -> None:
        self._received = True

    def __exit__(self, kind, error, trace) -> None:
        if kind is not None:  # the cleanup's try is never reached: pass the signal on now
            self.release()

    def release(self) -> None:
        """Put the previous handler back and raise a held SIGINT for it."""
        if not self._installed:
            return
        signal.signal(signal.SIGINT, self._previous)
        self._installed = False
        if self._received:
            self._received = False
            signal.raise_signal(signal.SIGINT)


def _take(lock: Path, path: Path) -> None:
    """Create ``lock`` exclusively, taking over a claim whose process is gone."""
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and _alive(owner):
                raise FileExistsError(
                    f"{str(path)!r} is being written by another run (process {owner[0]} on "
                    f"{owner[1]}); wait for it to finish, or write to another path. If that "
                    f"run is gone, delete {str(lock)!r}."
                ) from None
            lock.unlink(missing_ok=True)  # its writer is gone: a killed run's claim
            continue
        with os.fdopen(handle, "w") as written:
            written.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise FileExistsError(f"Could not claim {str(path)!r}: {str(lock)!r} keeps reappearing.")


def _owner(lock: Path) -> tuple[int, str] | None:
    """The process id and host written in ``lock``, or None when it cannot be read."""
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _alive(owner: tuple[int, str]) -> bool:
    """Whether the claim's process still runs (one on another host is assumed to)."""
    pid, host = owner
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(path: Path) -> None:
    """Remove what killed writers of ``path`` left; put back an output left aside."""
    folder = path.parent
    for pattern in (f".{path.name}.*.partial", f".{path.name}.*.blocks"):
        for debris in folder.glob(pattern):
            if debris.is_dir():
                shutil.rmtree(debris, ignore_errors=True)
            else:
                debris.unlink(missing_ok=True)
    aside = folder / f".{path.name}.old"
    if aside.exists():
        if path.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:  # killed between replace_folder's two renames: the old output comes back
            os.replace(aside, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed to ``path`` when the block completes.

    Parameters
    ----------
    path
        The final file.
    overwrite
        Replace an existing ``path``; otherwise an existing file is refused first.

    Yields
    ------
    The temporary path to write to (in the same folder, so the rename is atomic).
    """
    path = check_output(path, overwrite=overwrite)
    with claimed(path):
        check_output(path, overwrite=overwrite)  # again: a swept claim may restore it
        with HeldInterrupt() as held:  # the file exists only with the finally that drops it
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial",
                                                 dir=path.resolve().parent)
            os.close(handle)
            temporary = Path(temporary)
        try:
            held.release()
            yield temporary
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())  # on disk before the rename makes it the file
            os.chmod(temporary, _mode_for(path))  # mkstemp makes 0600; keep the usual mode
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path``, moved to ``path`` when the block completes.

    For outputs that are folders (zarr stores): an interrupted write leaves no half store,
    and the previous one (replaced only with ``overwrite``) stays until the new one is whole.

    Parameters
    ----------
    path
        The final folder.
    overwrite
        Replace an existing ``path``; otherwise an existing one is refused first.

    Yields
    ------
    The temporary folder to write into.
    """
    path = check_output(path, overwrite=overwrite, kind="store")
    with claimed(path):
        check_output(path, overwrite=overwrite, kind="store")
        with HeldInterrupt() as held:
            temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial",
                                              dir=path.resolve().parent))
        try:
            held.release()
            yield temporary
            replace_folder(temporary, path)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)


def write_figure(figure, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a matplotlib figure atomically, in the format its name ends with (PNG by default).

    Parameters
    ----------
    figure
        A matplotlib Figure.
    path
        The image file.
    overwrite
        Replace an existing file.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    return path


def axes_or_new(ax=None, figsize: tuple[float, float] = (5, 3.5)):
    """``ax``, or the Axes of a new figure of ``figsize`` when it is None."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def _mode_for(path: Path) -> int:
    """The mode of the file being replaced, or what a plain ``open`` would give (umask)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``adata`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    adata
        What to write.
    path
        The ``.h5ad`` file.
    overwrite
        Replace an existing file.

    Returns
    -------
    The path written.
    """
    with atomic_path(path, overwrite=overwrite) as temporary:
        adata.write_h5ad(temporary)
    return Path(path)


def replace_folder(built: Path, target: Path) -> None:
    """Move the complete folder ``built`` to ``target``, replacing what is there last.

    The old folder is renamed aside first and removed only once the new one is in place, so
    at every moment one complete version exists.
    """
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
    os.replace(built, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
