"""Update rules and gradient conditioning, vectorized over the net's flat param arena.

``Updater.apply(rate, it)`` is Caffe's ``ApplyUpdate`` for every param at once: clip the
global L2 norm (before the ``1/iter_size`` normalization, as Caffe does, unless
``clip_after_normalize``), normalize, regularize (L2: ``g += lambda*w``, L1:
``g += lambda*sign(w)``, with ``lambda = weight_decay * decay_mult``), compute the rule's update
``u`` with the local rate ``alpha = rate * lr_mult``, then ``w -= u``.  Per-param ``lr_mult``
and ``decay_mult`` are expanded into arrays over the arena once.

The rules (``w`` the params, ``g`` the conditioned gradient, state as in Caffe's history):

    SGD       v = mu*v + alpha*g;  u = v
    Nesterov  v' = mu*v + alpha*g;  u = (1+mu)*v' - mu*v
    AdaGrad   h += g^2;  u = alpha * g / (sqrt(h) + delta)
    RMSProp   h = rho*h + (1-rho)*g^2;  u = alpha * g / (sqrt(h) + delta)
    AdaDelta  h = mu*h + (1-mu)*g^2;  d = g*sqrt((h2+delta)/(h+delta));  h2 = mu*h2 + (1-mu)*d^2;  u = alpha*d
    Adam      m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  t = it+1
              u = alpha * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + delta)      (delta not bias-corrected)
    AdamW     Adam on the unregularized gradient, plus the decay applied to the weights directly:
              u += alpha * lambda * w   (L1: alpha * lambda * sign(w))   (Loshchilov & Hutter)

Params with ``lr_mult`` 0 are never changed: their gradient is zeroed first (Caffe computes
none for them), so they do not count in the clipping norm, and their update is exactly 0.

Everything lives on the net's device (``net.device``): the rule state, the scratch arrays and
the per-param multipliers (built on the host once, then copied over).  The rules are NumPy
ufuncs with ``out=``, which on a GPU run on CuPy's arrays, one correctly rounded operation each,
so a GPU update gives the CPU's numbers bit for bit (the clipping norm, a BLAS or cuBLAS dot,
may differ in its last bits).  The rule state is device arrays; ``state_host`` and
``load_state`` copy it out and in for snapshots.
"""

from __future__ import annotations

import abc
import math
from typing import Mapping

import numpy as np

from netspec.core.device import CPU, Device, copy_in, to_host


class Rule(abc.ABC):
    """One update rule: its state arrays (over the whole arena) and ``update``."""

    name = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, cfg: Mapping, size: int, dtype, device: "Device | None" = None):
        self.device = device if device is not None else CPU
        self.momentum = float(cfg.get("momentum", 0.0))
        self.delta = float(cfg.get("delta", 1e-8))
        self.state = {n: self.device.zeros(size, dtype) for n in self.state_names}
        self.tmp = self.device.empty(size, dtype)

    @abc.abstractmethod
    def update(self, g: np.ndarray, alpha: np.ndarray, it: int) -> np.ndarray:
        """The update ``u`` for gradient ``g`` (which it may overwrite); ``w -= u`` follows."""


class SGD(Rule):
    name = "SGD"
    state_names = ("history",)

    def update(self, g, alpha, it):
        v = self.state["history"]
        np.multiply(alpha, g, out=g)
        v *= self.momentum
        v += g
        return v


class Nesterov(Rule):
    name = "Nesterov"
    state_names = ("history",)

    def update(self, g, alpha, it):
        v, prev, mu = self.state["history"], self.tmp, self.momentum
        prev[...] = v
        np.multiply(alpha, g, out=g)
        v *= mu
        v += g
        np.multiply(v, 1.0 + mu, out=g)
        prev *= mu
        g -= prev
        return g


class AdaGrad(Rule):
    name = "AdaGrad"
    state_names = ("history",)

    def update(self, g, alpha, it):
        h, t = self.state["history"], self.tmp
        np.multiply(g, g, out=t)
        h += t
        np.sqrt(h, out=t)
        t += self.delta
        g /= t
        g *= alpha
        return g


class RMSProp(Rule):
    name = "RMSProp"
    state_names = ("history",)

    def __init__(self, cfg, size, dtype, device=None):
        super().__init__(cfg, size, dtype, device)
        self.rho = float(cfg.get("rms_decay", 0.99))

    def update(self, g, alpha, it):
        h, t = self.state["history"], self.tmp
        np.multiply(g, g, out=t)
        t *= 1.0 - self.rho
        h *= self.rho
        h += t
        np.sqrt(h, out=t)
        t += self.delta
        g /= t
        g *= alpha
        return g


class AdaDelta(Rule):
    name = "AdaDelta"
    state_names = ("history", "update_history")

    def __init__(self, cfg, size, dtype, device=None):
        super().__init__(cfg, size, dtype, device)
        self.tmp2 = self.device.empty(size, dtype)

    def update(self, g, alpha, it):
        h, h2, t, t2, mu = self.state["history"], self.state["update_history"], self.tmp, self.tmp2, self.momentum
        np.multiply(g, g, out=t)
        t *= 1.0 - mu
        h *= mu
        h += t
        np.add(h2, self.delta, out=t)
        np.add(h, self.delta, out=t2)
        t /= t2
        np.sqrt(t, out=t)
        g *= t                      # d: the update before the rate (its square feeds h2)
        np.multiply(g, g, out=t)
        t *= 1.0 - mu
        h2 *= mu
        h2 += t
        g *= alpha
        return g


class Adam(Rule):
    name = "Adam"
    state_names = ("m", "v")

    def __init__(self, cfg, size, dtype, device=None):
        super().__init__(cfg, size, dtype, device)
        self.beta1 = self.momentum
        self.beta2 = float(cfg.get("momentum2", 0.999))

    def update(self, g, alpha, it):
        m, v, t = self.state["m"], self.state["v"], self.tmp
        b1, b2 = self.beta1, self.beta2
        step = it + 1
        m *= b1
        np.multiply(g, 1.0 - b1, out=t)
        m += t
        np.multiply(g, g, out=t)
        t *= 1.0 - b2
        v *= b2
        v += t
        correction = math.sqrt(1.0 - b2 ** step) / (1.0 - b1 ** step)
        np.sqrt(v, out=t)
        t += self.delta
        np.divide(m, t, out=g)
        g *= alpha
        g *= correction
        return g


class AdamW(Adam):
    name = "AdamW"
    decoupled = True


RULES: dict[str, type[Rule]] = {c.name: c for c in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam, AdamW)}


class Updater:
    """Gradient conditioning and the update rule over one net's param arena."""

    def __init__(self, cfg: Mapping, net):
        self.data: np.ndarray = net.param_data
        self.grad: np.ndarray = net.param_grad
        self.device: Device = getattr(net, "device", CPU)
        dev, size, dtype = self.device, self.data.size, self.data.dtype
        self.iter_size = int(cfg.get("iter_size", 1))
        self.clip = float(cfg.get("clip_gradients", -1.0))
        self.clip_after_normalize = bool(cfg.get("clip_after_normalize", False))
        self.l1 = cfg.get("regularization_type", "L2") == "L1"
        self.rule: Rule = RULES[cfg.get("type", "SGD")](cfg, size, dtype, dev)
        self.decoupled = getattr(self.rule, "decoupled", False)
        weight_decay = float(cfg.get("weight_decay", 0.0))
        lr_mult = np.zeros(size, dtype=dtype)      # on the host, then copied to the device once
        decay = np.zeros(size, dtype=dtype)
        self.frozen: list[tuple[int, int]] = []
        for p in net.learnable:
            n = p.blob.data.size
            lr_mult[p.offset:p.offset + n] = p.lr_mult
            decay[p.offset:p.offset + n] = weight_decay * p.decay_mult
            if p.lr_mult == 0:
                self.frozen.append((p.offset, n))
        self.lr_mult = dev.asarray(lr_mult)                 # the host array itself on the CPU
        self.decay = dev.asarray(decay) if weight_decay and decay.any() else None
        self.alpha = dev.empty(size, dtype)
        self._alpha_rate: float | None = None
        self.tmp = dev.empty(size, dtype)
        self.last_clip: tuple[float, float] | None = None   # (norm, scale) when clipping happened
        # the fused SGD pass, from the net's device's kernels (whatever device is current)
        self._sgd = dev.kernels("solver").sgd_update if isinstance(self.rule, SGD) and not self.l1 else None

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The rule state by name, each an array over the whole arena on the net's device."""
        return self.rule.state

    def state_host(self) -> dict[str, np.ndarray]:
        """Host (NumPy) copies of the rule state, for snapshots (the arrays themselves on the CPU)."""
        return {name: to_host(arr) for name, arr in self.rule.state.items()}

    def load_state(self, host: Mapping[str, np.ndarray]) -> None:
        """Copy rule state (host arrays over the whole arena, by name) into this updater's."""
        for name, arr in self.rule.state.items():
            copy_in(arr, np.reshape(to_host(host[name]), arr.shape))

    def apply(self, rate: float, it: int) -> None:
        """Condition the gradient (already summed over iter_size passes), then ``w -= u``."""
        g, w = self.grad, self.data
        for off, n in self.frozen:
            g[off:off + n] = 0
        self.last_clip = None
        if not self.clip_after_normalize:
            self._clip(g)
        if self.iter_size > 1:
            g *= 1.0 / self.iter_size
        if self.clip_after_normalize:
            self._clip(g)
        if rate != self._alpha_rate:  # the local rates change only when the rate does
            np.multiply(self.lr_mult, rate, out=self.alpha)
            self._alpha_rate = rate
        alpha = self.alpha
        if self._sgd is not None:
            # the same operations in one pass over the arena (bit for bit the same result)
            decay = self.decay if self.decay is not None else alpha
            self._sgd(w, self.rule.state["history"], g, alpha, decay, w.dtype.type(self.rule.momentum),
                      self.decay is not None)
            return
        if self.decay is not None and not self.decoupled:
            g += self._decay_term(w)
        u = self.rule.update(g, alpha, it)
        if self.decay is not None and self.decoupled:
            t = self._decay_term(w)
            t *= alpha
            u += t
        w -= u

    def _decay_term(self, w: np.ndarray) -> np.ndarray:
        t = self.tmp
        if self.l1:
            np.sign(w, out=t)
            t *= self.decay
        else:
            np.multiply(self.decay, w, out=t)
        return t

    def _clip(self, g: np.ndarray) -> None:
        if self.clip < 0 or g.size == 0:
            return
        norm = math.sqrt(float(np.dot(g, g)))
        if norm > self.clip:
            scale = self.clip / norm
            g *= scale
            self.last_clip = (norm, scale)
