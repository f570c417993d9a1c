"""Layer fusion in the Net: BatchNorm on batch statistics + the in-place Scale after it.

The fused pair must give what the two layers give apart (NETSPEC_FUSE=0), to rounding, in every
output, gradient and running statistic, and the whole net's gradient must match finite
differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec import api
from tests.test_net import numeric_param_grad

NET = """
name: bnnet
layers:
  - {name: data, type: Input, top: [data, label], shape: [[4, 2, 5, 5], [4]]}
  - {name: conv1, type: Convolution, num_output: 3, kernel_size: 3, pad: 1,
     weight_filler: {type: gaussian, std: 0.5}, bias_filler: {type: constant, value: 0.2}, {conv_param}}
  - {name: bn1, type: BatchNorm, bottom: conv1, top: {bn_top}, {bn_param}}
  - {name: scale1, type: Scale, bottom: {bn_top}, top: {bn_top}, {scale_param}}
  - {name: relu1, type: ReLU, bottom: {bn_top}, top: {bn_top}}
  - {name: ip1, type: InnerProduct, num_output: 3, weight_filler: {type: gaussian, std: 0.3}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip1, label]}
"""


def make(bn_top="conv1", bn_param="eps: 0.001", scale_param="bias_term: true, filler: {type: uniform, min: 0.5, max: 1.5}, bias_filler: {type: gaussian, std: 0.1}",
         conv_param="bias_term: true"):
    return (NET.replace("{bn_top}", bn_top).replace("{bn_param}", bn_param)
            .replace("{scale_param}", scale_param).replace("{conv_param}", conv_param))


def build(text, monkeypatch, fuse=True, phase="TRAIN", dtype=np.float64):
    monkeypatch.setenv("NETSPEC_FUSE", "1" if fuse else "0")
    net = api.build_net(api.load_net_text(text, file="net.yaml"), phase, dtype=dtype, seed=3)
    rng = np.random.default_rng(0)
    net.set_input("data", rng.normal(size=net.blobs["data"].shape) * 2 + 1)
    net.set_input("label", rng.integers(0, 3, size=net.blobs["label"].shape))
    return net


def run(net, steps=2):
    out = []
    for _ in range(steps):
        net.clear_param_grads()
        loss = net.forward()
        net.backward()
        out.append((loss, net.param_grad.copy(), net.param_data.copy(),
                    {k: b.data.copy() for k, b in net.blobs.items()}))
    return out


VARIANTS = {
    "in place": {},
    "BatchNorm not in place": {"bn_top": "bn1"},
    "Scale without bias": {"scale_param": "filler: {type: uniform, min: 0.5, max: 1.5}"},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_equals_unfused(variant, dtype, monkeypatch):
    text = make(**VARIANTS[variant])
    fused, apart = build(text, monkeypatch, True, dtype=dtype), build(text, monkeypatch, False, dtype=dtype)
    assert fused.fused == [("bn1", "scale1")] and apart.fused == []
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-4, atol=1e-5)
    for (l1, g1, p1, b1), (l2, g2, p2, b2) in zip(run(fused), run(apart)):
        assert l1 == pytest.approx(l2, rel=tol["rtol"])
        np.testing.assert_allclose(g1, g2, **tol)      # every param gradient, conv1's included
        np.testing.assert_allclose(p1, p2, **tol)      # the running statistics
        for k in b2:
            np.testing.assert_allclose(b1[k], b2[k], **tol, err_msg=k)
    assert fused.blobs["data"].grad.shape == apart.blobs["data"].grad.shape


def test_fused_net_gradient_matches_finite_differences(monkeypatch):
    net = build(make(), monkeypatch, True)
    assert net.fused == [("bn1", "scale1")]
    net.clear_param_grads()
    net.forward()
    net.backward()
    analytic = net.param_grad.copy()
    # BatchNorm's statistics have no gradient (nor any effect on a TRAIN loss): both sides 0
    numeric = numeric_param_grad(net)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert np.abs(analytic).sum() > 0


def test_only_the_scale_learns_when_nothing_below_needs_a_gradient(monkeypatch):
    # conv1 frozen with no bias: BatchNorm's bottom needs no gradient, the Scale's params do
    text = make(conv_param="bias_term: false, param: {weight: {lr_mult: 0}}")
    fused, apart = build(text, monkeypatch, True), build(text, monkeypatch, False)
    assert fused.fused == [("bn1", "scale1")]
    for (l1, g1, _, _), (l2, g2, _, _) in zip(run(fused), run(apart)):
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12)
    assert np.abs(fused.params["scale1/scale"].grad).sum() > 0


@pytest.mark.parametrize("why, kw, phase", [
    ("TEST uses the running statistics", {}, "TEST"),
    ("global statistics in TRAIN", {"bn_param": "use_global_stats: true"}, "TRAIN"),
    ("a scalar gamma", {"scale_param": "num_axes: 0, bias_term: true"}, "TRAIN"),
])
def test_pairs_that_stay_apart(why, kw, phase, monkeypatch):
    net = build(make(**kw), monkeypatch, True, phase=phase)
    assert net.fused == [], why
    run(net, 1)
