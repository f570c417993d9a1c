"""Learning-rate policies (Caffe's ``SGDSolver::GetLearningRate``), plus cosine and a linear warm-up.

``it`` is the number of completed updates.  With ``b = base_lr``, ``g = gamma``, ``p = power``:

    fixed      b
    step       b * g ** floor(it / stepsize)
    exp        b * g ** it
    inv        b * (1 + g * it) ** -p
    multistep  b * g ** current_step, where current_step advances by at most ONE per call
               when it >= stepvalue[current_step] (Caffe's behaviour; the step is restored
               from a snapshot, so a resumed run lags exactly as an uninterrupted one)
    poly       b * (1 - it / max_iter) ** p
    sigmoid    b / (1 + exp(-g * (it - stepsize)))
    cosine     min_lr + (b - min_lr) * (1 + cos(pi * it / max_iter)) / 2       (netspec)

``warmup_iter = W > 0`` multiplies any policy by ``f + (1 - f) * it / W`` while ``it < W``
(``f = warmup_start_factor``, default 0), the gradual warm-up of Goyal et al. (2017).
"""

from __future__ import annotations

import math
from typing import Mapping


class LearningRate:
    """The rate for each iteration; stateful only through ``current_step`` (step, multistep)."""

    def __init__(self, cfg: Mapping):
        self.policy: str = cfg["lr_policy"]
        self.base_lr = float(cfg["base_lr"])
        self.gamma = float(cfg.get("gamma", 0.0))
        self.power = float(cfg.get("power", 0.0))
        self.stepsize = int(cfg.get("stepsize", 0))
        self.stepvalue = [int(v) for v in cfg.get("stepvalue", [])]
        self.max_iter = int(cfg.get("max_iter", 0))
        self.min_lr = float(cfg.get("min_lr", 0.0))
        self.warmup_iter = int(cfg.get("warmup_iter", 0))
        self.warmup_start = float(cfg.get("warmup_start_factor", 0.0))
        self.current_step = 0

    def __call__(self, it: int) -> float:
        """The rate at iteration ``it`` (call once per update: multistep advances here)."""
        return self.policy_rate(it) * self.warmup_factor(it)

    def warmup_factor(self, it: int) -> float:
        if self.warmup_iter > 0 and it < self.warmup_iter:
            return self.warmup_start + (1.0 - self.warmup_start) * it / self.warmup_iter
        return 1.0

    def policy_rate(self, it: int) -> float:
        b, p = self.base_lr, self.policy
        if p == "fixed":
            return b
        if p == "step":
            self.current_step = it // self.stepsize
            return b * self.gamma ** self.current_step
        if p == "exp":
            return b * self.gamma ** it
        if p == "inv":
            return b * (1.0 + self.gamma * it) ** (-self.power)
        if p == "multistep":
            if self.current_step < len(self.stepvalue) and it >= self.stepvalue[self.current_step]:
                self.current_step += 1
            return b * self.gamma ** self.current_step
        if p == "poly":
            return b * max(0.0, 1.0 - it / self.max_iter) ** self.power
        if p == "sigmoid":
            z = self.gamma * (it - self.stepsize)
            # the same value in a form that cannot overflow for large |z|
            return b * (1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z)))
        if p == "cosine":
            t = min(it, self.max_iter) / self.max_iter
            return self.min_lr + (b - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        raise ValueError(f"unknown lr_policy {p!r}")
