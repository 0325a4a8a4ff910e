"""The command line and the file layer: formats, atomic writes, and nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from sc_noise2self import cli
from sc_noise2self.io import atomic_path, check_output, read_counts, write_h5ad


@pytest.fixture(autouse=True)
def python_ctrl_c():
    """Python's own Ctrl-C handler during each test, as in a terminal.

    A process started in the background by a non-interactive shell (``nohup ... &``, some
    CI runners) inherits SIGINT ignored, and Python then keeps it ignored: the tests of what
    a Ctrl-C does would see none arrive.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is not None:  # None: a handler installed from C, which cannot be put back
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    X = rng.poisson(rng.gamma(2.0, 1.0, size=(60, 1)) * rng.gamma(1.0, 1.0, size=(1, 30)))
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    adata.obs_names = [f"cell{i}" for i in range(60)]
    adata.var_names = [f"gene{j}" for j in range(30)]
    return adata


def test_every_format_reads_back_the_same_counts(counts, tmp_path):
    dense = counts.X.toarray()
    counts.write_h5ad(tmp_path / "c.h5ad")
    counts.to_df().to_csv(tmp_path / "c.csv")
    counts.to_df().to_csv(tmp_path / "c.tsv", sep="\t")
    for name in ("c.h5ad", "c.csv", "c.tsv"):
        read = read_counts(tmp_path / name)
        X = read.X.toarray() if sparse.issparse(read.X) else np.asarray(read.X)
        np.testing.assert_array_equal(X, dense, err_msg=name)
        assert list(read.var_names) == list(counts.var_names), name


def test_loom_reads_back_the_same_counts(counts, tmp_path):
    pytest.importorskip("loompy")
    counts.write_loom(tmp_path / "c.loom")
    read = read_counts(tmp_path / "c.loom")
    X = read.X.toarray() if sparse.issparse(read.X) else np.asarray(read.X)
    np.testing.assert_array_equal(X, counts.X.toarray())


def test_a_10x_folder_reads_back_the_same_counts(counts, tmp_path):
    import gzip

    from scipy.io import mmwrite

    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    mmwrite(folder / "matrix.mtx", sparse.csr_matrix(counts.X.T.astype(np.int64)))
    for name, lines in (("barcodes.tsv", counts.obs_names),
                        ("features.tsv", [f"ID{j}\t{g}\tGene Expression"
                                          for j, g in enumerate(counts.var_names)])):
        (folder / name).write_text("\n".join(lines) + "\n")
    for name in ("matrix.mtx", "barcodes.tsv", "features.tsv"):
        with open(folder / name, "rb") as raw, gzip.open(folder / f"{name}.gz", "wb") as gz:
            gz.write(raw.read())
        (folder / name).unlink()
    read = read_counts(folder)
    np.testing.assert_array_equal(read.X.toarray(), counts.X.toarray())


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing.h5ad", "does not exist"),
    (lambda d: (d / "x.png").write_bytes(b"png") and d / "x.png", "unknown format '.png'"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "without matrix.mtx"),
])
def test_unreadable_inputs_name_the_formats_accepted(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_counts(path)


def test_outputs_are_checked_before_any_work(tmp_path):
    existing = tmp_path / "a.h5ad"
    existing.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="exists; choose another name"):
        check_output(existing)
    with pytest.raises(FileExistsError, match="is the input"):
        check_output(existing, inputs=(str(existing),))
    with pytest.raises(FileNotFoundError, match="does not exist; create it"):
        check_output(tmp_path / "no" / "folder" / "a.h5ad")
    with pytest.raises(IsADirectoryError):
        check_output(tmp_path, overwrite=True)
    assert check_output(existing, overwrite=True) == existing


def test_an_interrupted_atomic_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target, overwrite=True) as temporary:
        temporary.write_text("half-writ")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]  # no partial file left behind


@pytest.mark.parametrize("created_by", ["mkstemp", "lock"])
def test_ctrl_c_just_after_a_temporary_is_created_leaves_nothing(tmp_path, monkeypatch,
                                                                 created_by):
    # A SIGINT delivered right after the temporary file (or the claim) exists, before the
    # try whose finally removes it: the interrupt still stops the write, and nothing stays
    # beside the old file. Fails without HeldInterrupt (the .partial or .lock file stays).
    import tempfile

    from sc_noise2self import io

    target = tmp_path / "t.txt"
    target.write_text("old")
    if created_by == "mkstemp":
        original = tempfile.mkstemp

        def interrupted(*args, **kwargs):
            made = original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
            return made

        monkeypatch.setattr(tempfile, "mkstemp", interrupted)
    else:
        take = io._take

        def interrupted(*args):
            take(*args)
            os.kill(os.getpid(), signal.SIGINT)

        monkeypatch.setattr(io, "_take", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_path(target, overwrite=True) as temporary:
        temporary.write_text("new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_HELD_DEFAULT = """
import os, signal
from sc_noise2self.io import HeldInterrupt

signal.signal(signal.SIGINT, signal.SIG_DFL)  # a CLI that lets Ctrl-C end it
with HeldInterrupt() as held:
    os.kill(os.getpid(), signal.SIGINT)
print("held", flush=True)
held.release()
print("not reached", flush=True)
"""


def test_a_held_ctrl_c_reaches_the_handler_that_was_there_before():
    # Under SIG_DFL the held SIGINT ends the process at release, as it would have without
    # the hold; it is neither lost nor delivered early. Fails when release only calls a
    # callable handler (SIG_DFL is not one, and the Ctrl-C was dropped).
    done = subprocess.run([sys.executable, "-c", _HELD_DEFAULT], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["held"]
    assert done.returncode == -signal.SIGINT


def test_a_held_ctrl_c_is_passed_on_when_the_block_fails():
    # An error inside the hold: the handler is put back and the Ctrl-C still arrives.
    from sc_noise2self.io import HeldInterrupt

    with pytest.raises(KeyboardInterrupt), HeldInterrupt():
        os.kill(os.getpid(), signal.SIGINT)
        raise OSError("the disk is full")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_WRITER = """
import signal, sys, time
import numpy as np, anndata as ad
from sc_noise2self.io import write_h5ad

write = ad.AnnData.write_h5ad


def slow_disk(self, path, **options):  # the file is written, then the disk lags
    write(self, path, **options)
    time.sleep(1.0)


ad.AnnData.write_h5ad = slow_disk
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
block = np.full((1000, 1000), 7.0, dtype=np.float32)
adata = ad.AnnData(block, layers={name: block for name in "abc"})
print("writing", flush=True)
write_h5ad(adata, sys.argv[1], overwrite=True)
print("done", flush=True)
"""


def test_sigint_during_a_write_never_destroys_the_previous_file(tmp_path):
    target = tmp_path / "out.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(target)
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "writing"
        time.sleep(rng.uniform(0.0, 0.8))  # inside the write or the lagging disk
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
        read = ad.read_h5ad(target)  # readable whatever happened
        assert read.shape in ((3, 2), (1000, 1000))
        assert float(np.asarray(read.X).max()) in (1.0, 7.0)
        outcomes.append(read.shape)
        leftovers = [p for p in os.listdir(tmp_path) if p != "out.h5ad"]
        assert not leftovers, leftovers
        if read.shape != (3, 2):  # a completed write: restore the old file for the next try
            ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(target)
    assert outcomes.count((3, 2)) >= 3  # the interrupts did land inside writes


def test_sigkill_keeps_the_old_file_and_the_rerun_sweeps_the_debris(tmp_path):
    # Issue 25: a SIGKILL (no cleanup runs) left .out.h5ad.*.partial beside the output on
    # every kill, and reruns never removed it. Now the killed run's claim is taken over and
    # its temporaries swept. Fails without the sweep (the partial files stay).
    target = tmp_path / "out.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(target)
    rng = np.random.default_rng(1)
    for _ in range(5):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "writing"
        time.sleep(rng.uniform(0.1, 0.6))
        child.kill()
        child.wait(timeout=60)
        assert ad.read_h5ad(target).shape in ((3, 2), (1000, 1000))  # old or new, whole
    write_h5ad(ad.AnnData(np.zeros((2, 2), dtype=np.float32)), target, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out.h5ad"]  # no lock, no partial file
    assert ad.read_h5ad(target).shape == (2, 2)


_HOLDER = """
import sys, time
from sc_noise2self.io import atomic_path

with atomic_path(sys.argv[1], overwrite=True) as temporary:
    temporary.write_text("first")
    print("holding", flush=True)
    time.sleep(30)
"""


def test_a_second_writer_of_one_output_is_refused_naming_the_first(tmp_path):
    # Issue 25: two writers of one output both succeeded and one result was lost.
    target = tmp_path / "out.txt"
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(target)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "holding"
        with pytest.raises(FileExistsError, match=f"another run \\(process {child.pid}"):
            with atomic_path(target, overwrite=True) as temporary:
                temporary.write_text("second")
    finally:
        child.kill()
        child.wait(timeout=60)
    with atomic_path(target, overwrite=True) as temporary:  # the dead claim is taken over
        temporary.write_text("third")
    assert target.read_text() == "third" and sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_an_output_folder_left_aside_by_a_kill_is_put_back(tmp_path):
    # A kill between replace_folder's two renames left no output and the old one hidden in
    # .<name>.old; the next claim puts it back before deciding whether to replace it.
    from sc_noise2self.io import atomic_folder

    aside = tmp_path / ".store.zarr.old"
    aside.mkdir()
    (aside / "data").write_text("old")
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_folder(tmp_path / "store.zarr") as folder:
            (folder / "data").write_text("new")
    assert (tmp_path / "store.zarr" / "data").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["store.zarr"]


def test_write_h5ad_refuses_to_replace_without_overwrite(counts, tmp_path):
    path = write_h5ad(counts, tmp_path / "a.h5ad")
    with pytest.raises(FileExistsError):
        write_h5ad(counts, path)
    write_h5ad(counts[:10].copy(), path, overwrite=True)
    assert ad.read_h5ad(path).n_obs == 10


def test_cli_refuses_to_write_over_its_input(counts, tmp_path, capsys):
    path = tmp_path / "in.h5ad"
    counts.write_h5ad(path)
    before = path.read_bytes()
    assert cli.main(["denoise", str(path), "--out", str(path)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_cli_checks_the_output_folder_first(tmp_path, capsys):
    start = time.perf_counter()
    code = cli.main(["denoise", "--dataset", "synthetic", "--out",
                     str(tmp_path / "missing" / "o.h5ad")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    assert time.perf_counter() - start < 5  # refused before calibrating anything


def test_cli_reads_csv_and_skips_the_dense_layer_when_asked(counts, tmp_path, capsys):
    counts.to_df().to_csv(tmp_path / "c.csv")
    out = tmp_path / "o.h5ad"
    code = cli.main(["denoise", str(tmp_path / "c.csv"), "--out", str(out), "--max-comps", "5",
                     "--no-layer"])
    assert code == 0, capsys.readouterr().err
    written = ad.read_h5ad(out)
    assert "noise2self" not in written.layers and "X_noise2self" in written.obsm


def test_cli_version_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert "sc-noise2self" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["denoise", "--help"])
    text = capsys.readouterr().out
    assert "(default: 100)" in text and "--max-layer-gb" in text and ".loom" in text


def test_atomic_writes_keep_the_usual_file_mode(counts, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_h5ad(counts, tmp_path / "m.h5ad")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    write_h5ad(counts, path, overwrite=True)
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


@pytest.mark.parametrize("command", [["denoise"], ["image", "calibrate"], ["image", "train"],
                                     ["image", "predict"]])
def test_cli_help_gives_every_option_help_and_each_default_once(command, capsys):
    # Issue 26: "--layer" read "(default: X) (default: None)", and --transform had no help.
    import re

    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    options = text[text.index("options:"):]
    entries = re.split(r"\n  (?=-)", options)[1:]
    for entry in entries:
        assert entry.count("(default") <= 1, entry
        name, _, rest = entry.partition("  ")
        assert rest.strip() or "\n" in entry, f"{name} has no help"
