"""Cases for the element-wise activation layers (ReLU's own cases live in core.py)."""

import numpy as np

from . import Case


def normal(*shape, scale=1.0):
    return lambda rng: [scale * rng.normal(size=shape)]


def uniform(lo, hi, *shape):
    return lambda rng: [rng.uniform(lo, hi, size=shape)]


def away_from(points, *shape, gap=0.05):
    """Normal values (scaled by 1.5) pushed at least ``gap`` from each kink in ``points``."""
    def make(rng):
        x = 1.5 * rng.normal(size=shape)
        for p in points:
            near = np.abs(x - p) < gap
            x[near] = p + np.where(x[near] >= p, gap, -gap) * 2
        return [x]
    return make


def with_extremes(*shape):
    """Normal values with a few large magnitudes, past BNLL's threshold of 50."""
    def make(rng):
        x = 3.0 * rng.normal(size=shape)
        x.reshape(-1)[:4] = [60.0, -60.0, 49.5, -30.0]
        return [x]
    return make


CASES = [
    Case({"type": "Sigmoid"}, normal(2, 3, 4, 3, scale=2.0), inplace=True),
    Case({"type": "TanH"}, normal(2, 3, 5), inplace=True),
    Case({"type": "PReLU"}, normal(2, 3, 4, 4), kink=0.0, kink_range=1e-2, inplace=True),
    Case({"type": "PReLU", "channel_shared": True}, normal(3, 4, 5), kink=0.0, kink_range=1e-2, inplace=True,
         id="shared"),
    Case({"type": "PReLU"}, normal(4, 6), kink=0.0, kink_range=1e-2, random_params=False, id="2d-default-filler"),
    Case({"type": "ELU"}, normal(2, 3, 4, 4), kink=0.0, kink_range=1e-2, inplace=True),
    Case({"type": "ELU", "alpha": 0.3}, normal(3, 5, 2), kink=0.0, kink_range=1e-2, inplace=True, id="alpha"),
    Case({"type": "Swish"}, normal(2, 3, 4, 3, scale=2.0), inplace=True),
    Case({"type": "Swish", "beta": 2.5}, normal(3, 7), inplace=True, id="beta"),
    Case({"type": "AbsVal"}, normal(2, 3, 4, 4), kink=0.0, kink_range=1e-2),
    Case({"type": "BNLL"}, with_extremes(2, 3, 4, 3), inplace=True),
    Case({"type": "Power"}, normal(2, 3, 4), inplace=True, id="identity"),
    Case({"type": "Power", "power": 2.0, "scale": 0.5, "shift": 1.0}, normal(2, 3, 4), inplace=True, id="square"),
    Case({"type": "Power", "power": 3.0, "scale": -1.5, "shift": 0.5}, normal(3, 5), inplace=True, id="cube"),
    Case({"type": "Power", "power": 0.5, "scale": 2.0, "shift": 0.1}, uniform(0.2, 2.0, 2, 3, 4),
         inplace=True, id="sqrt"),
    Case({"type": "Power", "power": -0.75, "scale": 1.0, "shift": 0.0}, uniform(0.5, 2.0, 3, 4),
         inplace=True, id="negative-power"),
    Case({"type": "Power", "power": 0.0, "scale": 3.0, "shift": 2.0}, normal(2, 5), id="constant"),
    Case({"type": "Exp"}, normal(2, 3, 4), inplace=True),
    Case({"type": "Exp", "base": 2.0, "scale": 0.7, "shift": -0.5}, normal(3, 5), inplace=True, id="base2"),
    Case({"type": "Log"}, uniform(0.3, 3.0, 2, 3, 4), inplace=True),
    Case({"type": "Log", "base": 10.0, "scale": 0.5, "shift": 2.0}, normal(3, 5), inplace=True, id="base10"),
    Case({"type": "Threshold", "threshold": 0.25}, normal(2, 3, 4), grad=False, inplace=True),
    Case({"type": "Clip", "min": -1.0, "max": 1.0}, away_from([-1.0, 1.0], 2, 3, 4, 3),
         kink=-1.0, kink_range=1e-2, inplace=True),
    Case({"type": "Clip", "min": 0.0, "max": 0.5}, away_from([0.0, 0.5], 4, 6),
         kink=0.0, kink_range=1e-2, inplace=True, id="asymmetric"),
]
