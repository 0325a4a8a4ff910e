"""Step 4 for images, the last part: mix the J-invariant output with the noisy input.

A J-invariant output ``f(x)`` has an error independent of the noise, so the mix
``w * f(x) + (1 - w) * x`` has an expected error that the self-supervised loss and the noise
variance give in closed form, and a best weight (Batson & Royer 2019, section 4.2).
"""

from __future__ import annotations

from .._validation import check_real


def optimal_mix_weight(loss: float, noise_variance: float) -> float:
    """Weight of the J-invariant output in ``w * f(x) + (1 - w) * x`` (paper section 4.2).

    With ``e2 = loss - noise_variance`` (the estimated true error of ``f``), independent of
    the noise because ``f`` is J-invariant, the mix has expected error
    ``w**2 * e2 + (1 - w)**2 * noise_variance``, lowest at ``w = noise_variance / loss``.
    When the noise variance reaches the loss (``e2 <= 0``), mixing cannot help and 1 is
    returned (no mixing).

    Parameters
    ----------
    loss
        Self-supervised loss of the J-invariant output.
    noise_variance
        Mean noise variance.

    Returns
    -------
    The weight, in [0, 1]; 1 means the J-invariant output alone. Raises for a negative,
    NaN or infinite ``loss`` or ``noise_variance``.
    """
    loss, noise_variance = _checked(loss, noise_variance)
    if loss <= 0 or noise_variance >= loss:
        return 1.0
    weight = noise_variance / loss
    if mixed_error(weight, loss, noise_variance) > loss - noise_variance:
        return 1.0
    return float(weight)


def mixed_error(weight: float, loss: float, noise_variance: float) -> float:
    """Expected true MSE of ``weight * f(x) + (1 - weight) * x``, from self-supervised terms.

    Parameters
    ----------
    weight
        Weight of the J-invariant output ``f(x)``.
    loss
        Self-supervised loss of ``f(x)``.
    noise_variance
        Mean noise variance.

    Returns
    -------
    ``weight**2 * max(loss - noise_variance, 0) + (1 - weight)**2 * noise_variance``.
    """
    loss, noise_variance = _checked(loss, noise_variance)
    weight = check_real(weight, name="weight", hint="the share of the J-invariant output")
    true_error = max(loss - noise_variance, 0.0)
    return weight**2 * true_error + (1.0 - weight) ** 2 * noise_variance


def _checked(loss: float, noise_variance: float) -> tuple[float, float]:
    """Both terms as floats, refused when negative, NaN or infinite.

    A negative variance would give a weight outside [0, 1], and an output worse than the input.
    """
    return (check_real(loss, name="loss", minimum=0.0,
                       hint="a mean squared error, such as ImageCalibration.best_loss"),
            check_real(noise_variance, name="noise_variance", minimum=0.0,
                       hint="the mean noise variance in the image's units squared"))
