"""Noise2Self for images: J-invariant calibration of classical denoisers and masked CNNs."""
