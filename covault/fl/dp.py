"""Distributed differential privacy for secure aggregation: each client adds its part of the
Gaussian noise, so that the sum the server unmasks is already noisy and no one knows the noise.

Steps: every client draws ``N(0, sigma^2 / m)`` per entry from its own CSPRNG stream
(:func:`covault.privacy.noise.gaussian`, rounded to the fixed-point grid ``2^-f``, so the
sum is an exact ring element: Mironov's floating-point attack does not apply) and adds it to
its clipped update before quantisation (:meth:`covault.fl.quantise.Quantiser.encode`). With
``m`` honest clients in the sum, their noise alone has variance ``sigma^2``: the survivors minus
the colluders (a colluding client knows its own noise and can subtract it). ``m`` is the
caller's assumption: fewer honest survivors than ``m`` leave less noise than stated.

Accounting (:func:`epsilon`): client-level DP, neighbours differing by one REPLACED client
(the server sees who takes part, so adding or removing a client is not hidden; replacing one
client's update moves the sum by up to ``2 clip`` in L2), every client in every round (sample
rate 1), one Gaussian mechanism per round with noise multiplier ``sigma / clip``, composed over
the rounds by the PLD accountant of :mod:`covault.privacy.accountant`. The noise is a sum of rounded
Gaussians, not one rounded Gaussian; its variance is what the accountant assumes (up to the
grid), its shape is stated, not accounted (Kairouz, Liu, Steinke, ICML 2021, for the
discrete analysis). Cost: one Box-Muller sample per entry per client; no extra messages.
"""

from __future__ import annotations

import math

import numpy as np

from covault.fl.errors import SecAggError
from covault.randomness.prg import PRG, new_seed


def client_sigma(sigma: float, honest: int) -> float:
    """The standard deviation each client adds so that ``honest`` of them make up ``sigma``."""
    if honest < 1 or not sigma >= 0:
        raise SecAggError(
            f"distributed noise: need sigma >= 0 and at least 1 honest client, got {sigma}, {honest}"
        )
    return sigma / math.sqrt(honest)


def client_noise(dim: int, sigma: float, honest: int, frac_bits: int) -> np.ndarray:
    """One client's part of the noise: ``dim`` samples of ``N(0, sigma^2 / honest)`` on the grid."""
    from covault.privacy.noise import gaussian

    return gaussian(PRG(new_seed()), (dim,), client_sigma(sigma, honest), grid_bits=frac_bits)


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Client-level epsilon at ``delta`` (one client replaced) after ``rounds`` rounds of
    ``sigma = noise_multiplier * clip``."""
    from covault.privacy.accountant import epsilon_for

    return epsilon_for(noise_multiplier, 1.0, rounds, delta)
