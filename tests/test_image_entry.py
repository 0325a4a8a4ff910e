"""The single image entry point reaches the masked CNNs as well as the classical methods."""

import numpy as np
import pytest

from sc_noise2self import image


def test_denoise_trains_a_cnn_through_the_common_entry_point():
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0, 1, 40), (40, 1))
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    before = noisy.copy()
    out, model = image.denoise(noisy, method="dncnn", steps=8, batch_size=4, patch_size=16,
                               model_kwargs={"depth": 3, "features": 8}, device="cpu",
                               progress=False, return_calibration=True)
    assert out.shape == noisy.shape and np.all(np.isfinite(out))
    assert isinstance(model, image.Noise2SelfModel)
    np.testing.assert_array_equal(noisy, before)


def test_training_options_are_refused_for_classical_methods():
    with pytest.raises(TypeError, match="'unet' or 'dncnn'"):
        image.denoise(np.zeros((16, 16)), method="gaussian", steps=3)
