"""The Net runtime: the param arena, sharing, loss weights, backward need, and fillers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec import api
from netspec.core.fillers import check_filler, fill, fans

MLP = """
name: tiny
layers:
  - {name: data, type: Input, top: [data, label], shape: [[4, 3], [4]]}
  - {name: ip1, type: InnerProduct, bottom: data, num_output: 5, weight_filler: {type: gaussian, std: 0.5},
     bias_filler: {type: constant, value: 0.1}}
  - {name: relu1, type: ReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


def build(text: str, phase: str = "TRAIN", dtype=np.float64, seed: int = 0, **kw):
    net = api.load_net_text(text, file="net.yaml")
    return api.build_net(net, phase, dtype=dtype, seed=seed, **kw)


def feed(n, seed=0):
    rng = np.random.default_rng(seed)
    n.set_input("data", rng.normal(size=n.blobs["data"].shape))
    n.set_input("label", rng.integers(0, 3, size=n.blobs["label"].shape))


def test_params_are_views_of_one_arena():
    n = build(MLP)
    assert n.num_params == 3 * 5 + 5 + 5 * 3 + 3
    for p in n.learnable:
        assert np.shares_memory(p.blob.data, n.param_data)
        assert np.shares_memory(p.blob.grad, n.param_grad)
    n.param_data[...] = 0
    assert not n.params["ip1/weight"].data.any()
    np.testing.assert_array_equal(n.params["ip1/bias"].data, 0)


def test_fillers_applied_and_seeded():
    a, b, c = build(MLP, seed=1), build(MLP, seed=1), build(MLP, seed=2)
    np.testing.assert_array_equal(a.param_data, b.param_data)
    assert not np.array_equal(a.param_data, c.param_data)
    np.testing.assert_array_equal(a.params["ip1/bias"].data, 0.1)
    w = a.params["ip2/weight"].data
    assert np.abs(w).max() <= math.sqrt(3 / 5)


def numeric_param_grad(n, eps=1e-6):
    grads = np.zeros_like(n.param_data)
    for i in range(n.param_data.size):
        old = n.param_data[i]
        n.param_data[i] = old + eps
        plus = n.forward()
        n.param_data[i] = old - eps
        minus = n.forward()
        n.param_data[i] = old
        grads[i] = (plus - minus) / (2 * eps)
    return grads


def test_whole_net_gradient_matches_numeric():
    n = build(MLP)
    feed(n)
    n.clear_param_grads()
    n.forward()
    n.backward()
    analytic = n.param_grad.copy()
    np.testing.assert_allclose(analytic, numeric_param_grad(n), rtol=1e-5, atol=1e-8)


def test_loss_weight_scales_loss_and_gradients():
    n1 = build(MLP)
    n2 = build(MLP.replace("bottom: [ip2, label]}", "bottom: [ip2, label], loss_weight: 2.5}"))
    for n in (n1, n2):
        feed(n)
        n.clear_param_grads()
    l1, l2 = n1.forward(), n2.forward()
    assert l2 == pytest.approx(2.5 * l1)
    n1.backward()
    n2.backward()
    np.testing.assert_allclose(n2.param_grad, 2.5 * n1.param_grad)


SHARED = """
layers:
  - {name: data, type: Input, top: [a, b, label], shape: [[2, 3], [2, 3], [2]]}
  - {name: ip_a, type: InnerProduct, bottom: a, num_output: 2, weight_filler: {type: gaussian},
     param: {weight: {name: w_shared, lr_mult: 1}, bias: {name: b_shared}}}
  - {name: ip_b, type: InnerProduct, bottom: b, num_output: 2, param: {weight: {name: w_shared}, bias: {name: b_shared}}}
  - {name: loss_a, type: SoftmaxWithLoss, bottom: [ip_a, label]}
  - {name: loss_b, type: SoftmaxWithLoss, bottom: [ip_b, label], loss_weight: 0.5}
"""


def test_param_sharing_by_name_accumulates_gradients():
    n = build(SHARED)
    assert [p.key for p in n.learnable] == ["ip_a/weight", "ip_a/bias"]
    assert n.params["ip_b/weight"] is n.params["ip_a/weight"]
    rng = np.random.default_rng(0)
    n.set_input("a", rng.normal(size=(2, 3)))
    n.set_input("b", rng.normal(size=(2, 3)))
    n.set_input("label", [0, 1])
    n.clear_param_grads()
    n.forward()
    n.backward()
    np.testing.assert_allclose(n.param_grad, numeric_param_grad(n), rtol=1e-5, atol=1e-8)


FROZEN = """
layers:
  - {name: data, type: Input, top: [data, label], shape: [[4, 3], [4]]}
  - {name: ip1, type: InnerProduct, bottom: data, num_output: 5, weight_filler: {type: gaussian},
     param: {weight: {lr_mult: 0}, bias: {lr_mult: 0}}}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: gaussian}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


def test_frozen_bottom_layer_runs_no_backward():
    n = build(FROZEN)
    need = {lp.name: lp.need_backward for lp in n.layers}
    assert need == {"data": False, "ip1": False, "ip2": True, "loss": True}
    feed(n)
    n.clear_param_grads()
    n.forward()
    n.backward()
    assert not n.params["ip1/weight"].grad.any()
    assert n.params["ip2/weight"].grad.any()
    assert not n.blobs["data"].grad.any()


def test_test_net_shares_the_train_nets_params():
    net = api.load_net_text(MLP, file="net.yaml")
    train = api.build_net(net, "TRAIN", dtype=np.float64)
    test = api.build_net(net, "TEST", dtype=np.float64, share_from=train)
    for key in ("ip1/weight", "ip2/weight"):
        assert test.params[key] is train.params[key]
    train.param_data += 1.0
    np.testing.assert_array_equal(test.params["ip1/bias"].data, train.params["ip1/bias"].data)


def test_outputs_sorted_and_forward_returns_weighted_loss():
    n = build(MLP)
    feed(n)
    loss = n.forward()
    assert list(n.outputs()) == ["loss"]
    assert loss == pytest.approx(float(n.blobs["loss"].data))


# ---- fillers -------------------------------------------------------------------------------

def test_fans_follow_caffe():
    assert fans((20, 1, 5, 5)) == (25, 500)
    assert fans((500, 800)) == (800, 500)
    assert fans((7,)) == (1, 7)


@pytest.mark.parametrize("filler,check", [
    ({"type": "constant", "value": 3.0}, lambda a: np.all(a == 3.0)),
    ({"type": "uniform", "min": -2.0, "max": -1.0}, lambda a: a.min() >= -2 and a.max() <= -1),
    ({"type": "gaussian", "mean": 1.0, "std": 0.1}, lambda a: abs(a.mean() - 1) < 0.01 and abs(a.std() - 0.1) < 0.01),
    ({"type": "xavier"}, lambda a: np.abs(a).max() <= math.sqrt(3 / 250) and abs(a.std() - math.sqrt(1 / 250)) < 2e-3),
    ({"type": "xavier", "variance_norm": "AVERAGE"}, lambda a: np.abs(a).max() <= math.sqrt(3 / 625) and np.abs(a).max() > math.sqrt(3 / 700)),
    ({"type": "msra"}, lambda a: abs(a.std() - math.sqrt(2 / 250)) < 3e-3),
    ({"type": "msra", "variance_norm": "FAN_OUT"}, lambda a: abs(a.std() - math.sqrt(2 / 1000)) < 1e-3),
    ({"type": "positive_unitball"}, lambda a: np.allclose(a.reshape(40, -1).sum(1), 1) and a.min() >= 0),
])
def test_filler_distributions(filler, check):
    a = np.zeros((40, 10, 5, 5))
    fill(a, filler, np.random.default_rng(0))
    assert check(a)


def test_sparse_gaussian_keeps_expected_fraction():
    a = np.zeros((100, 784))
    fill(a, {"type": "gaussian", "std": 1.0, "sparse": 15}, np.random.default_rng(0))
    assert abs((a != 0).mean() - 0.15) < 0.01


def test_bilinear_filler_matches_caffe_kernel():
    a = np.zeros((2, 1, 4, 4))
    fill(a, {"type": "bilinear"}, np.random.default_rng(0))
    w1 = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(a[1, 0], np.outer(w1, w1))


def test_filler_checks():
    assert check_filler({"type": "xavier", "sparse": 3}, (3, 3)) is not None
    assert check_filler({"type": "bilinear"}, (2, 2, 3, 4)) is not None
    assert check_filler({"type": "uniform", "min": 1, "max": 0}, (3,)) is not None
    assert check_filler({"type": "gaussian", "sparse": 3}, (3, 3)) is None
