"""Tools: calibrate a denoiser by the self-supervised loss, then denoise, writing into AnnData.

One private module per family (``sc_noise2self._tools``), one public namespace here.
"""

from ._tools.autoencoder import calibrate_autoencoder, denoise_autoencoder
from ._tools.common import denoised_values
from ._tools.generic import calibrate, compare
from ._tools.graph import calibrate_diffusion, calibrate_knn, denoise_diffusion, denoise_knn
from ._tools.pca import calibrate_pca, denoise_pca

__all__ = [
    "calibrate",
    "calibrate_autoencoder",
    "calibrate_diffusion",
    "calibrate_knn",
    "calibrate_pca",
    "compare",
    "denoise_autoencoder",
    "denoise_diffusion",
    "denoise_knn",
    "denoise_pca",
    "denoised_values",
]
