"""Single-cell denoiser families; each scores its whole grid from one fit."""
