"""Sample data for the plugin's menu (File > Open Sample > Noise2Self).

Every sample is made offline from images that ship with scikit-image, with seeded Gaussian
noise, so that it is the same on every machine; Set12 is read from the shared data folder
(``$SC_NOISE2SELF_DATA``) and never downloaded.
"""

from __future__ import annotations

import numpy as np

from .. import datasets

SIGMA = 0.1  # on [0, 1]: the paper's camera experiment
SEED = 0


def noisy(clean: np.ndarray, sigma: float = SIGMA, seed: int = SEED) -> np.ndarray:
    """``clean`` plus seeded Gaussian noise of standard deviation ``sigma``, as float32.

    Parameters
    ----------
    clean
        Float image in [0, 1].
    sigma
        Noise standard deviation, in the image's units.
    seed
        Seed of the noise.

    Returns
    -------
    The noisy image (not clipped, so the noise stays Gaussian).
    """
    rng = np.random.default_rng(seed)
    return (clean + rng.normal(0.0, sigma, clean.shape)).astype(np.float32)


def noisy_camera() -> list[tuple]:
    """scikit-image's 512x512 ``camera`` with Gaussian noise of sigma 0.1.

    Returns
    -------
    napari layer data: ``[(image, {"name": ...}, "image")]``.
    """
    from skimage import data, util

    return [(noisy(util.img_as_float(data.camera())), {"name": "noisy camera"}, "image")]


def noisy_blobs_3d() -> list[tuple]:
    """A 32x96x96 z-stack of smooth 3D blobs with Gaussian noise of sigma 0.1.

    The z spacing is three times the xy pixel size (``scale=(3, 1, 1)``), as in a typical
    confocal stack, so the sample shows the result layer keeping the input's scale.

    Returns
    -------
    napari layer data: ``[(volume, {"name": ..., "scale": ...}, "image")]``.
    """
    from skimage import data, filters

    blobs = data.binary_blobs(96, blob_size_fraction=0.15, n_dim=3, volume_fraction=0.3,
                              rng=SEED)[::3]  # every third plane: z spacing 3x the xy one
    clean = filters.gaussian(blobs.astype(np.float32), sigma=1.0)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    return [(noisy(clean), {"name": "noisy blobs 3D", "scale": (3.0, 1.0, 1.0)}, "image")]


def noisy_set12() -> list[tuple]:
    """Set12 image 1 (``cameraman``, 256x256) with Gaussian noise of sigma 25/255.

    Returns
    -------
    napari layer data; raises ``FileNotFoundError`` (napari shows it) when Set12 is not in
    the shared data folder, as nothing is downloaded.
    """
    return [(noisy(datasets.set12(1), sigma=25 / 255), {"name": "noisy Set12 01"}, "image")]
