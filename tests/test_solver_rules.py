"""Update rules and gradient conditioning against hand-computed values and a plain-loop
reference of CAFFE-REFERENCE sections 2.3 and 2.4 (one element at a time, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec import api
from netspec.core.net import Net
from netspec.solvers.rules import Updater

NET = """
name: rules
layers:
  - {name: data, type: Input, top: data, shape: [2, 3]}
  - {name: a, type: InnerProduct, num_output: 2,
     param: {weight: {lr_mult: 1, decay_mult: 1}, bias: {lr_mult: 2, decay_mult: 0}}}
  - {name: b, type: InnerProduct, num_output: 2,
     param: {weight: {lr_mult: 0.5, decay_mult: 2}, bias: {lr_mult: 0}}}
"""


def make_net(text: str = NET, dtype=np.float64) -> Net:
    return Net(api.compile_net(api.load_net_text(text), "TRAIN"), dtype, seed=0)


def cfg(**kw) -> dict:
    base = {"type": "SGD", "momentum": 0.0, "momentum2": 0.999, "rms_decay": 0.99, "delta": 1e-8,
            "weight_decay": 0.0, "regularization_type": "L2", "clip_gradients": -1.0, "iter_size": 1}
    base.update(kw)
    return base


# ---- the reference: Caffe's formulas, element by element -----------------------------------

def reference_step(c: dict, params: list, rate: float, it: int, state: dict) -> None:
    """params: dicts with w, g (float64 arrays), lr_mult, decay_mult; updates w and state in place."""
    gs = [p["g"].copy() for p in params]
    for p, g in zip(params, gs):
        if p["lr_mult"] == 0:
            g[...] = 0.0

    def clip():
        if c["clip_gradients"] >= 0:
            norm = math.sqrt(sum(float(x) ** 2 for g in gs for x in g.ravel()))
            if norm > c["clip_gradients"]:
                for g in gs:
                    g *= c["clip_gradients"] / norm

    if not c.get("clip_after_normalize"):
        clip()
    for g in gs:
        g *= 1.0 / c["iter_size"] if c["iter_size"] > 1 else 1.0
    if c.get("clip_after_normalize"):
        clip()
    mu, delta = c["momentum"], c["delta"]
    for i, (p, g) in enumerate(zip(params, gs)):
        w = p["w"]
        lam = c["weight_decay"] * p["decay_mult"]
        alpha = rate * p["lr_mult"]
        st = state.setdefault(i, {k: np.zeros_like(w) for k in ("v", "h", "h2", "m")})
        for j in np.ndindex(w.shape):
            reg = lam * (np.sign(w[j]) if c["regularization_type"] == "L1" else w[j])
            gj = g[j] + (reg if c["type"] != "AdamW" else 0.0)
            t = c["type"]
            if t == "SGD":
                st["v"][j] = mu * st["v"][j] + alpha * gj
                u = st["v"][j]
            elif t == "Nesterov":
                prev = st["v"][j]
                st["v"][j] = mu * st["v"][j] + alpha * gj
                u = (1 + mu) * st["v"][j] - mu * prev
            elif t == "AdaGrad":
                st["h"][j] += gj * gj
                u = alpha * gj / (math.sqrt(st["h"][j]) + delta)
            elif t == "RMSProp":
                rho = c["rms_decay"]
                st["h"][j] = rho * st["h"][j] + (1 - rho) * gj * gj
                u = alpha * gj / (math.sqrt(st["h"][j]) + delta)
            elif t == "AdaDelta":
                st["h"][j] = mu * st["h"][j] + (1 - mu) * gj * gj
                d = gj * math.sqrt((st["h2"][j] + delta) / (st["h"][j] + delta))
                st["h2"][j] = mu * st["h2"][j] + (1 - mu) * d * d
                u = alpha * d
            else:  # Adam, AdamW
                b1, b2, step = mu, c["momentum2"], it + 1
                st["m"][j] = b1 * st["m"][j] + (1 - b1) * gj
                st["h"][j] = b2 * st["h"][j] + (1 - b2) * gj * gj
                u = alpha * math.sqrt(1 - b2 ** step) / (1 - b1 ** step) * st["m"][j] / (math.sqrt(st["h"][j]) + delta)
                if t == "AdamW":
                    u += alpha * reg
            w[j] -= u


def run_both(c: dict, steps: int = 3, seed: int = 0, rates=None):
    """Apply ``steps`` updates with random gradients through the Updater and the reference."""
    rng = np.random.default_rng(seed)
    net = make_net()
    net.param_data[...] = rng.normal(size=net.param_data.size)
    upd = Updater(c, net)
    params = [{"w": p.blob.data.copy(), "lr_mult": p.lr_mult, "decay_mult": p.decay_mult} for p in net.learnable]
    state: dict = {}
    for it in range(steps):
        rate = rates[it] if rates else 0.1
        net.param_grad[...] = rng.normal(size=net.param_grad.size) * 2.0
        for p, ref in zip(net.learnable, params):
            ref["g"] = p.blob.grad.copy()
        upd.apply(rate, it)
        reference_step(c, params, rate, it, state)
    return net, params


RULE_CONFIGS = {
    "SGD": cfg(type="SGD", momentum=0.9),
    "Nesterov": cfg(type="Nesterov", momentum=0.9),
    "AdaGrad": cfg(type="AdaGrad", delta=1e-6),
    "RMSProp": cfg(type="RMSProp", rms_decay=0.98, delta=1e-6),
    "AdaDelta": cfg(type="AdaDelta", momentum=0.95, delta=1e-6),
    "Adam": cfg(type="Adam", momentum=0.9, momentum2=0.999),
    "AdamW": cfg(type="AdamW", momentum=0.9, momentum2=0.999),
}


@pytest.mark.parametrize("rule", list(RULE_CONFIGS))
@pytest.mark.parametrize("extra", [{}, {"weight_decay": 0.01}, {"weight_decay": 0.01, "regularization_type": "L1"},
                                   {"iter_size": 2}, {"clip_gradients": 1.5, "iter_size": 2},
                                   {"clip_gradients": 1.5, "iter_size": 2, "clip_after_normalize": True}],
                         ids=["plain", "L2", "L1", "iter_size2", "clip", "clip_after_normalize"])
def test_rule_matches_reference(rule, extra):
    c = dict(RULE_CONFIGS[rule], **extra)
    net, params = run_both(c, steps=3, rates=[0.1, 0.05, 0.02])
    for p, ref in zip(net.learnable, params):
        np.testing.assert_allclose(p.blob.data, ref["w"], rtol=1e-10, atol=1e-12, err_msg=p.key)


def test_frozen_params_are_untouched_by_every_rule():
    for rule, c in RULE_CONFIGS.items():
        net = make_net()
        net.param_data[...] = np.linspace(-1, 1, net.param_data.size)
        frozen = [p for p in net.learnable if p.lr_mult == 0]
        assert [p.key for p in frozen] == ["b/bias"]
        before = frozen[0].blob.data.copy()
        upd = Updater(dict(c, weight_decay=0.1), net)
        for it in range(3):
            net.param_grad[...] = 1.0
            upd.apply(0.5, it)
        assert np.array_equal(frozen[0].blob.data, before), rule
        assert not np.array_equal(net.learnable[0].blob.data, np.linspace(-1, 1, net.param_data.size)[:6])


# ---- hand-computed values ------------------------------------------------------------------

ONE = """
name: one
layers:
  - {name: data, type: Input, top: data, shape: [1, 1]}
  - {name: p, type: InnerProduct, num_output: 1, bias_term: false}
"""


def one_param(c: dict, w0: float, grads: list[float], rates: list[float], dtype=np.float64) -> list[float]:
    net = make_net(ONE, dtype)
    net.param_data[...] = w0
    upd = Updater(c, net)
    out = []
    for it, (g, r) in enumerate(zip(grads, rates)):
        net.param_grad[...] = g
        upd.apply(r, it)
        out.append(float(net.param_data[0]))
    return out


def test_sgd_momentum_by_hand():
    # v = 0.9 v + 0.1 * 0.5: 0.05, then 0.095; w = 1 - v
    assert one_param(cfg(momentum=0.9), 1.0, [0.5, 0.5], [0.1, 0.1]) == pytest.approx([0.95, 0.855])


def test_sgd_folds_the_rate_into_the_history():
    # a rate change does not rescale v: v1 = 0.1, v2 = 0.5 * 0.1 + 0.01 * 1
    assert one_param(cfg(momentum=0.5), 0.0, [1.0, 1.0], [0.1, 0.01]) == pytest.approx([-0.1, -0.16])


def test_nesterov_by_hand():
    # v1 = 0.1, u1 = 1.9*0.1 - 0.9*0 = 0.19; v2 = 0.09 + 0.1 = 0.19, u2 = 1.9*0.19 - 0.9*0.1 = 0.271
    assert one_param(cfg(type="Nesterov", momentum=0.9), 0.0, [1.0, 1.0], [0.1, 0.1]) == \
        pytest.approx([-0.19, -0.19 - 0.271])


def test_adagrad_and_rmsprop_first_steps():
    # AdaGrad: h = g^2, u = alpha * g / (|g| + delta) ~ alpha
    assert one_param(cfg(type="AdaGrad", delta=0.0), 1.0, [0.5, -0.5], [0.1, 0.1]) == \
        pytest.approx([0.9, 0.9 + 0.1 / math.sqrt(2)])
    # RMSProp: h = 0.01 g^2, u = alpha * g / (0.1 |g|) = 10 alpha
    assert one_param(cfg(type="RMSProp", rms_decay=0.99, delta=0.0), 1.0, [2.0], [0.01]) == pytest.approx([0.9])


def test_adadelta_first_step():
    # h = 0.05 * 4 = 0.2; d = 2 * sqrt(1e-6 / (0.2 + 1e-6)); u = 1.0 * d
    got = one_param(cfg(type="AdaDelta", momentum=0.95, delta=1e-6), 0.0, [2.0], [1.0])
    assert got == pytest.approx([-2.0 * math.sqrt(1e-6 / (0.2 + 1e-6))])


def test_adam_first_step_is_the_rate_times_the_sign():
    # m = 0.1 g, v = 0.001 g^2; correction sqrt(0.001)/0.1; u = alpha * sign(g) (delta ~ 0)
    assert one_param(cfg(type="Adam", momentum=0.9, delta=1e-12), 1.0, [0.3, -5.0], [0.1, 0.1])[0] == \
        pytest.approx(0.9, abs=1e-9)


def test_adamw_decays_outside_the_gradient():
    # w = 2, lambda = 0.1, alpha = 0.1: decay 0.1*0.1*2 = 0.02 on top of Adam's 0.1
    got = one_param(cfg(type="AdamW", momentum=0.9, delta=1e-12, weight_decay=0.1), 2.0, [0.3], [0.1])
    assert got == pytest.approx([2.0 - 0.1 - 0.02], abs=1e-9)
    # with Adam the same decay goes through the gradient and is normalized away: still 0.1
    got = one_param(cfg(type="Adam", momentum=0.9, delta=1e-12, weight_decay=0.1), 2.0, [0.3], [0.1])
    assert got == pytest.approx([1.9], abs=1e-9)


def test_l1_and_l2_regularization_by_hand():
    # L2: g = 0.0 + 0.5 * w = -1; L1: g = 0.5 * sign(w) = -0.5
    assert one_param(cfg(weight_decay=0.5), -2.0, [0.0], [1.0]) == pytest.approx([-1.0])
    assert one_param(cfg(weight_decay=0.5, regularization_type="L1"), -2.0, [0.0], [1.0]) == pytest.approx([-1.5])


def test_lr_mult_and_decay_mult_by_hand():
    net = make_net()
    net.param_data[...] = 1.0
    upd = Updater(cfg(weight_decay=0.1), net)
    net.param_grad[...] = 1.0
    upd.apply(0.1, 0)
    got = {p.key: float(p.blob.data.ravel()[0]) for p in net.learnable}
    # a/weight: lr 1, decay 1: g = 1.1; a/bias: lr 2, decay 0: g = 1; b/weight: lr 0.5, decay 2: g = 1.2
    assert got == pytest.approx({"a/weight": 1 - 0.11, "a/bias": 1 - 0.2, "b/weight": 1 - 0.06, "b/bias": 1.0})


def test_clipping_happens_before_the_iter_size_normalization():
    two = """
name: two
layers:
  - {name: data, type: Input, top: data, shape: [1, 2]}
  - {name: p, type: InnerProduct, num_output: 1, bias_term: false}
"""

    def run(**kw):
        net = make_net(two)
        upd = Updater(cfg(iter_size=2, clip_gradients=1.0, **kw), net)
        net.param_grad[...] = [3.0, 4.0]      # summed over 2 passes, norm 5
        upd.apply(1.0, 0)
        return -net.param_data.copy(), upd.last_clip

    caffe, clip = run()
    assert np.allclose(caffe, [0.3, 0.4])        # clipped to norm 1, then halved (issue #6199)
    assert clip == pytest.approx((5.0, 0.2))
    after, clip = run(clip_after_normalize=True)
    assert np.allclose(after, [0.6, 0.8])        # halved to norm 2.5, then clipped to 1
    assert clip == pytest.approx((2.5, 0.4))


def test_frozen_gradients_do_not_count_in_the_clipping_norm():
    net = make_net()
    net.param_grad[...] = 0.0
    frozen = next(p for p in net.learnable if p.lr_mult == 0)
    frozen.blob.grad[...] = 100.0
    net.learnable[0].blob.grad.ravel()[0] = 0.5
    upd = Updater(cfg(clip_gradients=1.0), net)
    upd.apply(1.0, 0)
    assert upd.last_clip is None                 # norm 0.5 < 1: the frozen 100s are ignored
    assert net.learnable[0].blob.data.ravel()[0] == pytest.approx(-0.5)


def test_float32_arena_stays_float32():
    got = one_param(cfg(type="Adam", momentum=0.9), 1.0, [0.5] * 3, [0.01] * 3, dtype=np.float32)
    assert got == pytest.approx([0.99, 0.98, 0.97], abs=1e-6)
