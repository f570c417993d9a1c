"""Mixed precision: the loss scale of the solver's ``precision`` and ``loss_scale`` fields.

With ``precision: float16`` activations and their gradients hold float16 values (the net rounds
them, ``netspec.core.net``), and a gradient below float16's smallest subnormal (6e-8) would
become zero.  Backward therefore starts from the loss gradient times a scale, and the update
divides the scale out of the float32 param gradients.  A dynamic scale (Micikevicius et al.,
"Mixed Precision Training"; PyTorch's GradScaler has the same defaults) starts at 2**16; when a
param gradient is Inf or NaN the update is skipped (the iteration and the learning-rate schedule
still advance) and the scale halves; after ``loss_scale_window`` clean updates it doubles.  The
scale is a power of two, so scaling and unscaling are exact.  bfloat16 has float32's exponent
range and needs no scale (1 unless one is given).
"""

from __future__ import annotations

import math

import numpy as np

INIT_SCALE = 65536.0
GROWTH = 2.0
BACKOFF = 0.5
MIN_SCALE = 2.0 ** -24    # below this every gradient is an overflow of the loss itself


def all_finite(a: np.ndarray) -> bool:
    """Whether ``a`` holds no NaN or Inf: one BLAS dot product (a NaN or Inf anywhere makes it
    non-finite), and the exact element test only when the sum of squares overflowed."""
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.dot(a, a))):
            return True
    return bool(np.isfinite(a).all())


class LossScaler:
    """The loss scale of one run, its schedule and its resumable state."""

    def __init__(self, cfg: dict):
        given = cfg.get("loss_scale")
        if given is None:
            given = "dynamic" if cfg.get("precision", "float32") == "float16" else 1.0
        self.dynamic = given == "dynamic"
        self.scale = INIT_SCALE if self.dynamic else float(given)
        self.window = int(cfg.get("loss_scale_window", 2000))
        self.clean = 0          # clean updates since the scale last changed
        self.skipped = 0        # updates skipped for an overflow, in the whole run

    @property
    def active(self) -> bool:
        return self.dynamic or self.scale != 1.0

    def describe(self) -> str:
        if self.dynamic:
            return (f"dynamic loss scale from {self.scale:g} (halved on an overflow, doubled after "
                    f"{self.window} clean updates)")
        return f"loss scale {self.scale:g}" if self.scale != 1.0 else "no loss scale"

    def unscale(self, grad) -> bool:
        """Divide the scale out of ``grad`` (the summed param gradients) and update a dynamic
        scale.  False, with ``grad`` left as it is, when the update must be skipped: a dynamic
        scale found an Inf or NaN (every rank decides alike: ``grad`` is already reduced)."""
        if self.dynamic and not all_finite(grad):
            self.scale = max(self.scale * BACKOFF, MIN_SCALE)
            self.clean = 0
            self.skipped += 1
            return False
        if self.scale != 1.0:
            grad *= 1.0 / self.scale
        if self.dynamic:
            self.clean += 1
            if self.clean >= self.window:
                self.scale *= GROWTH
                self.clean = 0
        return True

    def state(self) -> dict:
        return {"scale": self.scale, "clean": self.clean, "skipped": self.skipped}

    def set_state(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.clean = int(state["clean"])
        self.skipped = int(state["skipped"])
