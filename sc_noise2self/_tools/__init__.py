"""Implementations behind ``sc_noise2self.tl``, one module per denoiser family."""
