"""Real datasets (local copy first, then download) and synthetic counts with known truth.

Real files are looked up in ``$SC_NOISE2SELF_DATA`` (the project's shared data folder); when
they are not there, scanpy's own loaders or the URLs in ``data/registry.json`` fetch them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._rng import RandomState, make_rng
from .io import atomic_folder

DATA_ENV = "SC_NOISE2SELF_DATA"


def data_dir() -> Path | None:
    """The folder named by ``$SC_NOISE2SELF_DATA``, or None when unset or missing.

    Returns
    -------
    The folder's path, or None.
    """
    path = os.environ.get(DATA_ENV)
    return Path(path) if path and Path(path).is_dir() else None


def local_file(name: str) -> Path | None:
    """Path of ``name`` inside :func:`data_dir`, or None when it is not there.

    Parameters
    ----------
    name
        File name relative to the data folder, e.g. ``"paul15.h5ad"``.

    Returns
    -------
    The file's path, or None.
    """
    folder = data_dir()
    if folder is None or not (folder / name).exists():
        return None
    return folder / name


def registry() -> dict:
    """Loader metadata (download URLs, hashes): ``data/registry.json`` of the project.

    A wheel carries it as ``sc_noise2self/_data/registry.json``; a source checkout reads it
    from the repository's ``data/`` folder.

    Returns
    -------
    The parsed registry, a dict keyed by dataset.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / "registry.json", here.parent / "data" / "registry.json"):
        if candidate.exists():
            return json.loads(candidate.read_text())
    raise FileNotFoundError("The loader registry (data/registry.json) is missing from the install.")


def _as_integer_counts(adata: ad.AnnData) -> ad.AnnData:
    """Store X as CSR int32 counts, checking that the values are integral."""
    X = sparse.csr_matrix(adata.X)
    rounded = np.rint(X.data)
    if not np.array_equal(rounded, X.data):
        raise ValueError("The loaded matrix does not hold raw integer counts.")
    X.data = rounded.astype(np.int32)
    adata.X = X
    return adata


def _read_local_or(name: str, download) -> ad.AnnData:
    path = local_file(name)
    adata = ad.read_h5ad(path) if path is not None else download()
    return _as_integer_counts(adata)


def paul15() -> ad.AnnData:
    """Paul et al. (2015) mouse myeloid progenitors, raw UMI counts: the paper's Figure 3 data.

    Returns
    -------
    AnnData, 2,730 cells x 3,451 genes, X as CSR int32 counts, ``obs['paul15_clusters']``.
    Read from ``$SC_NOISE2SELF_DATA/paul15.h5ad`` when present, otherwise downloaded by
    :func:`scanpy.datasets.paul15`.
    """

    def download() -> ad.AnnData:
        import scanpy as sc

        return sc.datasets.paul15()

    return _read_local_or("paul15.h5ad", download)


def pbmc3k() -> ad.AnnData:
    """10x Genomics PBMC 3k raw counts (the scanpy tutorial dataset).

    Returns
    -------
    AnnData, 2,700 cells x 32,738 genes, X as CSR int32 counts. Read from
    ``$SC_NOISE2SELF_DATA/pbmc3k_raw.h5ad`` when present, otherwise downloaded by
    :func:`scanpy.datasets.pbmc3k`.
    """

    def download() -> ad.AnnData:
        import scanpy as sc

        return sc.datasets.pbmc3k()

    return _read_local_or("pbmc3k_raw.h5ad", download)


def cellbench(protocol: str = "celseq2") -> ad.AnnData:
    """CellBench three-cell-line mixture (Tian et al. 2019), deeply sequenced raw counts.

    Deep enough to act as ground truth: downsample the counts and compare a denoiser's
    output with the deep profile.

    Parameters
    ----------
    protocol
        ``"celseq2"`` (274 cells) or ``"dropseq"`` (225 cells).

    Returns
    -------
    AnnData with X as CSR int32 counts and ``obs['cell_line']``. Read from
    ``$SC_NOISE2SELF_DATA/cellbench_<protocol>_3cl.h5ad`` when present, otherwise downloaded
    from the CellBench repository (``data/registry.json``).
    """
    entries = registry()["cellbench"]
    if protocol not in entries:
        raise ValueError(f"Unknown protocol={protocol!r}. Choose one of: {', '.join(entries)}.")
    entry = entries[protocol]
    return _read_local_or(entry["file"], lambda: _download_cellbench(entry))


def _download_cellbench(entry: dict) -> ad.AnnData:
    import pooch

    path = pooch.retrieve(entry["url"], known_hash=entry.get("sha256"), progressbar=False)
    counts = pd.read_csv(path, index_col=0)  # genes x cells
    counts = counts.loc[~counts.index.str.startswith("ERCC-")]
    adata = ad.AnnData(sparse.csr_matrix(counts.to_numpy().T))
    adata.obs_names, adata.var_names = counts.columns.astype(str), counts.index.astype(str)
    return adata


def synthetic_counts(
    n_obs: int = 1000,
    n_vars: int = 500,
    rank: int = 8,
    depth: float = 1500.0,
    random_state: RandomState = 0,
    *,
    store_truth: bool = True,
) -> ad.AnnData:
    """Poisson counts from a known low-rank positive expression matrix.

    Each cell mixes ``rank`` gene programs (Dirichlet weights); each program up- or
    down-regulates a third of the genes around a log-normal baseline. Library sizes are
    log-normal around ``depth``. Counts are ``Poisson(rate)``.

    Parameters
    ----------
    n_obs, n_vars
        Numbers of cells and genes.
    rank
        Number of gene programs; the rate matrix has exactly this rank.
    depth
        Median library size (UMIs per cell).
    random_state
        Seed; the same seed gives identical data.
    store_truth
        Keep the dense ``rate`` matrix in ``layers['rate']`` (cells x genes float32), so that
        tests can score any denoiser against the truth.

    Returns
    -------
    AnnData with CSR int32 counts in X, ``obs['library_size']`` (the true expected totals),
    ``uns['synthetic']`` (the settings) and, with ``store_truth``, ``layers['rate']``.
    """
    rng = make_rng(random_state)
    profile = _low_rank_profile(n_obs, n_vars, rank, rng)
    library = depth * np.exp(rng.normal(0.0, 0.4, n_obs))
    rate = (profile * library[:, None]).astype(np.float32)
    counts = sparse.csr_matrix(rng.poisson(rate).astype(np.int32))
    adata = ad.AnnData(counts)
    adata.obs_names = [f"cell{i}" for i in range(n_obs)]
    adata.var_names = [f"gene{j}" for j in range(n_vars)]
    adata.obs["library_size"] = library
    adata.uns["synthetic"] = dict(n_obs=n_obs, n_vars=n_vars, rank=rank, depth=float(depth))
    if store_truth:
        adata.layers["rate"] = rate
    return adata


def _low_rank_profile(n_obs: int, n_vars: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """Cells x genes expression shares (rows sum to 1) of exact rank ``rank``."""
    return _cell_profiles(_gene_programs(n_vars, rank, rng), n_obs, rng)


def _gene_programs(n_vars: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """``rank`` x genes programs: each up- or down-regulates a third of the genes."""
    baseline = rng.lognormal(0.0, 1.2, n_vars)
    regulated = rng.random((rank, n_vars)) < 1 / 3
    return baseline * np.exp(rng.normal(0.0, 1.2, (rank, n_vars)) * regulated)


def _cell_profiles(programs: np.ndarray, n_obs: int, rng: np.random.Generator) -> np.ndarray:
    """Expression shares of ``n_obs`` cells, each a Dirichlet mix of the programs."""
    weights = rng.dirichlet(np.full(programs.shape[0], 0.5), n_obs)
    profile = weights @ programs
    return profile / profile.sum(axis=1, keepdims=True)


def write_synthetic_counts(
    path: str | Path,
    n_obs: int = 200_000,
    n_vars: int = 500,
    *,
    rank: int = 8,
    depth: float = 1500.0,
    chunk_size: int = 10_000,
    random_state: RandomState = 0,
    overwrite: bool = False,
) -> Path:
    """Write synthetic counts to a zarr AnnData store, chunk by chunk (for the dask path).

    The model of :func:`synthetic_counts` (the same gene programs for every cell, Poisson
    counts), but only ``chunk_size`` cells are ever in memory, so the store may be far larger
    than memory. Open X lazily with ``anndata.experimental.read_elem_lazy``, or the whole
    store with ``anndata.read_zarr``.

    Parameters
    ----------
    path
        Where to write the store (a folder). It is built beside the target and renamed into
        place when complete.
    overwrite
        Replace an existing store at ``path``; without it an existing one is refused.
    n_obs, n_vars
        Numbers of cells and genes.
    rank
        Number of gene programs.
    depth
        Median library size (UMIs per cell).
    chunk_size
        Cells generated and appended at a time.
    random_state
        Seed; the same seed and ``chunk_size`` give an identical store. (The counts differ
        from ``synthetic_counts`` with the same seed: the random draws come in another order.)

    Returns
    -------
    The store's path. X holds CSR int32 counts, ``obs['library_size']`` the true expected
    totals. Needs anndata 0.12 or later.
    """
    if n_obs < 1 or n_vars < 1 or chunk_size < 1:
        raise ValueError(
            f"n_obs={n_obs}, n_vars={n_vars} and chunk_size={chunk_size} must all be positive."
        )
    rng = make_rng(random_state)
    programs = _gene_programs(n_vars, rank, rng)
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_vars)])
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_obs)])
    # Written beside the target and renamed into place when complete: an interrupted write
    # leaves any previous store as it was.
    with atomic_folder(path, overwrite=overwrite) as building:
        _write_store(building, n_obs, n_vars, chunk_size, depth, rng, programs, var, obs)
    return Path(path)


def _write_store(path: Path, n_obs, n_vars, chunk_size, depth, rng, programs, var, obs) -> None:
    import zarr

    root = zarr.open_group(str(path), mode="w")
    library = []
    # Plain zarr chunks (anndata >= 0.12 warns that it will shard zarr v3 arrays by default).
    with ad.settings.override(auto_shard_zarr_v3=False):
        ad.io.write_elem(root, "/", ad.AnnData(obs=obs, var=var))  # all but X
        for start in range(0, n_obs, chunk_size):
            rows = min(chunk_size, n_obs - start)
            profile = _cell_profiles(programs, rows, rng)
            library.append(depth * np.exp(rng.normal(0.0, 0.4, rows)))
            counts = sparse.csr_matrix(rng.poisson(profile * library[-1][:, None]).astype(np.int32))
            if start == 0:
                ad.io.write_elem(root, "X", counts, dataset_kwargs={"chunks": (1 << 20,)})
            else:
                ad.io.sparse_dataset(root["X"]).append(counts)
        obs["library_size"] = np.concatenate(library)
        ad.io.write_elem(root, "obs", obs)  # now that every cell's total is known


def _read_image(relative: str) -> np.ndarray:
    """Read a shared image as a float array in [0, 1]."""
    from skimage import io, util

    path = local_file(relative)
    if path is None:
        raise FileNotFoundError(
            f"{relative} is not under ${DATA_ENV}. Point ${DATA_ENV} at the folder holding the "
            f"project's shared data (see data/registry.json for where each set comes from)."
        )
    return util.img_as_float(io.imread(path))


def set12(index: int | None = None) -> np.ndarray | list[np.ndarray]:
    """The Set12 grey-scale denoising test images, clean, as floats in [0, 1].

    Parameters
    ----------
    index
        1..12 for one image; None for all twelve.

    Returns
    -------
    One 2-D array, or a list of them (256x256 and 512x512).
    """
    indices = range(1, 13) if index is None else [index]
    for i in indices:
        if not 1 <= i <= 12:
            raise ValueError(f"Set12 has images 1..12; got index={i}.")
    images = [_read_image(f"images/set12/{i:02d}.png") for i in indices]
    return images if index is None else images[0]


def fmd_confocal(channel: str = "B") -> tuple[np.ndarray, np.ndarray]:
    """One real noisy FMD confocal frame (BPAE cells) and its 50-frame average.

    Parameters
    ----------
    channel
        ``"B"``, ``"G"`` or ``"R"``.

    Returns
    -------
    ``(noisy, ground_truth)``, 512x512 float arrays in [0, 1].
    """
    if channel not in ("B", "G", "R"):
        raise ValueError(f"Unknown channel={channel!r}. Choose one of: 'B', 'G', 'R'.")
    noisy = _read_image(f"images/confocal/BPAE_{channel}_noisy.png")
    truth = _read_image(f"images/confocal/BPAE_{channel}_gt.png")
    return noisy, truth
