"""Caffe's seven fillers (constant, uniform, gaussian with ``sparse``, positive_unitball, xavier,
msra, bilinear) with ``variance_norm``, drawing from a seeded numpy Generator.

``fan_in = count / shape[0]`` and ``fan_out = count / shape[1]`` (``count`` for a 1-D blob), as
in Caffe's filler.hpp, so a converted net starts from the same distribution.
"""

from __future__ import annotations

import math

import numpy as np


def fans(shape) -> tuple[float, float]:
    count = int(np.prod(shape)) if len(shape) else 1
    fan_in = count / shape[0] if len(shape) >= 1 and shape[0] else count
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _n(filler: dict, shape) -> float:
    fan_in, fan_out = fans(shape)
    norm = filler.get("variance_norm", "FAN_IN")
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2.0}[norm]


def check_filler(filler: dict, shape) -> str | None:
    """Why ``filler`` cannot fill a param of ``shape``, or None when it can."""
    t = filler.get("type", "constant")
    if filler.get("sparse", -1) not in (-1, None) and t != "gaussian":
        return f"'sparse' works only with the gaussian filler, not {t}"
    if t == "uniform" and filler.get("min", 0.0) > filler.get("max", 1.0):
        return f"min {filler.get('min')} is greater than max {filler.get('max')}"
    if t == "bilinear":
        if len(shape) != 4:
            return f"the bilinear filler needs a 4-D param, got shape {list(shape)}"
        if shape[2] != shape[3]:
            return f"the bilinear filler needs a square kernel, got {shape[2]}x{shape[3]}"
    if t in ("xavier", "msra") and _n(filler, shape) <= 0:
        return f"{t} needs a param with a non-zero fan, got shape {list(shape)}"
    return None


def fill(out: np.ndarray, filler: dict, rng: np.random.Generator) -> np.ndarray:
    """Fill ``out`` in place according to ``filler``; returns ``out``."""
    t = filler.get("type", "constant")
    shape = out.shape
    if t == "constant":
        out[...] = filler.get("value", 0.0)
    elif t == "uniform":
        out[...] = rng.uniform(filler.get("min", 0.0), filler.get("max", 1.0), size=shape)
    elif t == "gaussian":
        out[...] = rng.normal(filler.get("mean", 0.0), filler.get("std", 1.0), size=shape)
        sparse = filler.get("sparse", -1)
        if sparse is not None and sparse >= 0:
            num_outputs = shape[0] if len(shape) else 1
            p = min(1.0, sparse / num_outputs)
            out *= rng.random(size=shape) < p
    elif t == "positive_unitball":
        vals = rng.uniform(0.0, 1.0, size=shape).reshape(shape[0] if len(shape) else 1, -1)
        vals /= vals.sum(axis=1, keepdims=True)
        out[...] = vals.reshape(shape)
    elif t == "xavier":
        a = math.sqrt(3.0 / _n(filler, shape))
        out[...] = rng.uniform(-a, a, size=shape)
    elif t == "msra":
        out[...] = rng.normal(0.0, math.sqrt(2.0 / _n(filler, shape)), size=shape)
    elif t == "bilinear":
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (k - 1) / (2.0 * f)
        x = np.arange(k)
        w1 = 1.0 - np.abs(x / f - c)
        out[...] = np.outer(w1, w1)[None, None, :, :]
    else:
        raise ValueError(f"unknown filler type {t!r}")
    return out
