"""Activation layers against plain Python loops written from the formulas, and against PyTorch.

Each reference computes forward and the input gradient element by element with ``math``; the
layer runs through ``LayerHarness`` (float64 unless the test says otherwise), in place and not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec.testing import LayerHarness

SHAPE = (2, 3, 4, 5)


def run(fields, x, dy, *, inplace=False, params=None, dtype=np.float64):
    """(top, bottom grad, param grads) of one forward and backward."""
    h = LayerHarness(fields, [x], params=params, inplace=inplace, dtype=dtype)
    (y,) = h.forward()
    if not h.layer.differentiable:
        return y, None, {}
    (dx,), pgrads = h.backward([dy])
    return y, dx, pgrads


def elementwise(f, df, x, dy):
    """Reference top and bottom grad of y = f(x) with dy/dx = df(x, y), one element at a time."""
    y = np.empty_like(x)
    dx = np.empty_like(x)
    for i in range(x.size):
        xi = float(x.flat[i])
        y.flat[i] = f(xi)
        dx.flat[i] = float(dy.flat[i]) * df(xi, float(y.flat[i]))
    return y, dx


def sig(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def bnll(v):
    return math.log(1.0 + math.exp(v)) if v < 30 else v + math.log(1.0 + math.exp(-v))


def bnll_grad(v, y):
    e = math.exp(min(v, 50.0))
    return e / (e + 1.0)


# (fields, f, df, input sampler)
ALPHA, BETA = 0.7, 1.8
REFS = {
    "Sigmoid": ({"type": "Sigmoid"}, sig, lambda v, y: sig(v) * (1 - sig(v)), "normal"),
    "TanH": ({"type": "TanH"}, math.tanh, lambda v, y: 1 - math.tanh(v) ** 2, "normal"),
    "ELU": ({"type": "ELU", "alpha": ALPHA}, lambda v: v if v > 0 else ALPHA * (math.exp(v) - 1),
            lambda v, y: 1.0 if v > 0 else ALPHA * math.exp(v), "normal"),
    "Swish": ({"type": "Swish", "beta": BETA}, lambda v: v * sig(BETA * v),
              lambda v, y: sig(BETA * v) + BETA * v * sig(BETA * v) * (1 - sig(BETA * v)), "normal"),
    "Swish-1": ({"type": "Swish"}, lambda v: v * sig(v), lambda v, y: sig(v) * (1 + v * (1 - sig(v))), "normal"),
    "AbsVal": ({"type": "AbsVal"}, abs, lambda v, y: (v > 0) - (v < 0), "normal"),
    "BNLL": ({"type": "BNLL"}, bnll, bnll_grad, "wide"),
    "Power": ({"type": "Power", "power": 3.0, "scale": 0.5, "shift": -0.25},
              lambda v: (-0.25 + 0.5 * v) ** 3, lambda v, y: 3 * 0.5 * (-0.25 + 0.5 * v) ** 2, "normal"),
    "Power-sqrt": ({"type": "Power", "power": 0.5, "scale": 2.0, "shift": 1.0},
                   lambda v: math.sqrt(1 + 2 * v), lambda v, y: 0.5 * 2 / math.sqrt(1 + 2 * v), "positive"),
    "Power-square": ({"type": "Power", "power": 2.0, "scale": -1.5, "shift": 0.5},
                     lambda v: (0.5 - 1.5 * v) ** 2, lambda v, y: 2 * -1.5 * (0.5 - 1.5 * v), "normal"),
    "Power-linear": ({"type": "Power", "power": 1.0, "scale": 3.0, "shift": 2.0},
                     lambda v: 2 + 3 * v, lambda v, y: 3.0, "normal"),
    "Power-constant": ({"type": "Power", "power": 0.0, "scale": 3.0, "shift": 2.0},
                       lambda v: 1.0, lambda v, y: 0.0, "normal"),
    "Power-zero-scale": ({"type": "Power", "power": 2.0, "scale": 0.0, "shift": 3.0},
                         lambda v: 9.0, lambda v, y: 0.0, "normal"),
    "Exp": ({"type": "Exp"}, math.exp, lambda v, y: math.exp(v), "normal"),
    "Exp-base": ({"type": "Exp", "base": 3.0, "scale": 0.5, "shift": 0.25},
                 lambda v: 3.0 ** (0.25 + 0.5 * v), lambda v, y: math.log(3.0) * 0.5 * 3.0 ** (0.25 + 0.5 * v), "normal"),
    "Log": ({"type": "Log"}, math.log, lambda v, y: 1 / v, "positive"),
    "Log-base": ({"type": "Log", "base": 2.0, "scale": 0.5, "shift": 3.0},
                 lambda v: math.log2(3 + 0.5 * v), lambda v, y: 0.5 / ((3 + 0.5 * v) * math.log(2.0)), "normal"),
    "Threshold": ({"type": "Threshold", "threshold": 0.3}, lambda v: 1.0 if v > 0.3 else 0.0, None, "normal"),
    "Clip": ({"type": "Clip", "min": -0.5, "max": 0.8}, lambda v: min(max(v, -0.5), 0.8),
             lambda v, y: 1.0 if -0.5 <= v <= 0.8 else 0.0, "normal"),
    "ReLU": ({"type": "ReLU", "negative_slope": 0.1}, lambda v: v if v > 0 else 0.1 * v,
             lambda v, y: 1.0 if v > 0 else 0.1, "normal"),
}


def sample(kind, rng):
    if kind == "positive":
        return rng.uniform(0.1, 3.0, size=SHAPE)
    if kind == "wide":
        x = 20 * rng.normal(size=SHAPE)
        x.flat[:6] = [0.0, 49.9, 50.1, 80.0, -80.0, -750.0]
        return x
    return 1.5 * rng.normal(size=SHAPE)


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_matches_loop_reference(name, inplace):
    fields, f, df, kind = REFS[name]
    if inplace and fields["type"] == "AbsVal":
        pytest.skip("AbsVal cannot run in place")
    rng = np.random.default_rng(sum(map(ord, name)))  # stable per name (hash() is salted)
    x = sample(kind, rng)
    dy = rng.normal(size=SHAPE)
    y, dx, _ = run(fields, x, dy, inplace=inplace)
    ref_y, ref_dx = elementwise(f, df or (lambda v, y: 0.0), x, dy)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-14)
    if df is not None:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-14)


def prelu_reference(x, slope, dy, shared):
    n, c = x.shape[:2]
    xs = x.reshape(n, c, -1)
    g = dy.reshape(n, c, -1)
    y = np.empty_like(xs)
    dx = np.empty_like(xs)
    dslope = np.zeros_like(slope)
    for a in range(n):
        for k in range(c):
            s = slope[0] if shared else slope[k]
            for i in range(xs.shape[2]):
                v = xs[a, k, i]
                y[a, k, i] = v if v > 0 else s * v
                dx[a, k, i] = g[a, k, i] if v > 0 else s * g[a, k, i]
                if v <= 0:
                    dslope[0 if shared else k] += g[a, k, i] * v
    return y.reshape(x.shape), dx.reshape(x.shape), dslope


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (5, 4)], ids=["4d", "2d"])
def test_prelu_matches_loop_reference(shared, inplace, shape):
    rng = np.random.default_rng(1)
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    slope = rng.normal(size=1 if shared else shape[1])
    fields = {"type": "PReLU", "channel_shared": shared}
    y, dx, pg = run(fields, x, dy, inplace=inplace, params={"slope": slope})
    ry, rdx, rds = prelu_reference(x, slope, dy, shared)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13)
    np.testing.assert_allclose(pg["slope"], rds, rtol=1e-12)


def test_prelu_default_slope_is_a_quarter():
    h = LayerHarness({"type": "PReLU"}, [np.full((2, 3), -4.0)])
    np.testing.assert_array_equal(h.params["slope"].data, 0.25)
    np.testing.assert_array_equal(h.forward()[0], -1.0)


def test_prelu_zero_slope_in_place_still_learns():
    # with slope 0 the output holds no trace of x < 0: the slope gradient needs the saved input
    x = np.array([[-2.0, 3.0], [-1.0, -0.5]])
    dy = np.ones_like(x)
    _, _, pg = run({"type": "PReLU", "channel_shared": True}, x, dy, inplace=True, params={"slope": [0.0]})
    np.testing.assert_allclose(pg["slope"], [-3.5])


@pytest.mark.parametrize("fields,x,expect", [
    ({"type": "ReLU"}, 0.0, 0.0),                           # x <= 0 gets the negative slope (0)
    ({"type": "ReLU", "negative_slope": 0.3}, 0.0, 0.3),
    ({"type": "AbsVal"}, 0.0, 0.0),                         # sign(0) = 0
    ({"type": "Clip", "min": -1.0, "max": 1.0}, 1.0, 1.0),  # the bounds let the gradient through
    ({"type": "Clip", "min": -1.0, "max": 1.0}, -1.0, 1.0),
    ({"type": "ELU", "alpha": 0.5}, 0.0, 0.5),              # y + alpha at x = 0
    ({"type": "Power", "power": 2.5, "scale": 1.0, "shift": 0.0}, 0.0, 0.0),  # Caffe: y/x = NaN
    ({"type": "Power", "power": 3.0, "scale": 2.0, "shift": -1.0}, 0.5, 0.0),
])
def test_gradient_at_kinks_follows_caffe(fields, x, expect):
    for inplace in ([False] if fields["type"] == "AbsVal" else [False, True]):
        _, dx, _ = run(fields, np.array([[x]]), np.array([[1.0]]), inplace=inplace)
        assert dx[0, 0] == expect, (fields, inplace)


def test_threshold_is_strict():
    y, _, _ = run({"type": "Threshold", "threshold": 0.5}, np.array([[0.5, 0.5000001, 0.4999999, -3.0]]), None)
    np.testing.assert_array_equal(y, [[0.0, 1.0, 0.0, 0.0]])


def test_extremes_stay_finite():
    x = np.array([[-1000.0, -80.0, 0.0, 80.0, 1000.0]])
    with np.errstate(all="raise"):
        for t in ("Sigmoid", "TanH", "BNLL", "ELU", "Swish"):
            for dtype in (np.float32, np.float64):
                y, dx, _ = run({"type": t}, x, np.ones_like(x), dtype=dtype)
                assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx)), t
    y, dx, _ = run({"type": "BNLL"}, x, np.ones_like(x))
    np.testing.assert_allclose(y[0], [0.0, math.exp(-80.0), math.log(2.0), 80.0, 1000.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(dx[0], [0.0, math.exp(-80.0), 0.5, 1.0, 1.0], rtol=1e-15, atol=0)


def test_bnll_in_place_gradient_matches():
    rng = np.random.default_rng(2)
    x = 10 * rng.normal(size=(3, 40))
    dy = rng.normal(size=x.shape)
    _, a, _ = run({"type": "BNLL"}, x, dy)
    _, b, _ = run({"type": "BNLL"}, x, dy, inplace=True)
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-300)


def test_float32_kernels_keep_float32():
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    for fields in [{"type": "Sigmoid"}, {"type": "Power", "power": 2.0}, {"type": "PReLU"},
                   {"type": "Exp", "base": 2.0}, {"type": "Clip", "min": 0.0, "max": 1.0}]:
        h = LayerHarness(fields, [x], dtype=np.float32)
        (y,) = h.forward()
        (dx,), _ = h.backward([np.ones_like(y)])
        assert y.dtype == np.float32 and dx.dtype == np.float32


# ---- PyTorch ------------------------------------------------------------------------------

def torch_grads(fn, x, dy, *extra):
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    targs = [torch.tensor(e, requires_grad=True) for e in extra]
    ty = fn(tx, *targs)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy(), [t.grad.numpy() for t in targs]


TORCH = {
    "Sigmoid": ({"type": "Sigmoid"}, lambda F, t: F.sigmoid(t)),
    "TanH": ({"type": "TanH"}, lambda F, t: F.tanh(t)),
    "ELU": ({"type": "ELU", "alpha": 0.6}, lambda F, t: F.elu(t, alpha=0.6)),
    "BNLL": ({"type": "BNLL"}, lambda F, t: F.softplus(t)),
    "Swish": ({"type": "Swish"}, lambda F, t: F.silu(t)),
    "ReLU": ({"type": "ReLU"}, lambda F, t: F.relu(t)),
    "AbsVal": ({"type": "AbsVal"}, lambda F, t: t.abs()),
    "Exp": ({"type": "Exp"}, lambda F, t: t.exp()),
    "Clip": ({"type": "Clip", "min": -0.5, "max": 0.5}, lambda F, t: t.clamp(-0.5, 0.5)),
}


@pytest.mark.parametrize("name", sorted(TORCH))
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    fields, fn = TORCH[name]
    rng = np.random.default_rng(5)
    x = (3 * rng.normal(size=SHAPE)).astype(np.float32)
    x[np.abs(x) < 1e-3] = 0.1   # keep away from kinks where conventions may differ
    x[np.abs(np.abs(x) - 0.5) < 1e-3] = 0.1
    dy = rng.normal(size=SHAPE).astype(np.float32)
    y, dx, _ = run(fields, x, dy, dtype=np.float32)
    ty, tdx, _ = torch_grads(lambda t: fn(F, t), x, dy)
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
def test_prelu_matches_torch(shared):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.normal(size=SHAPE).astype(np.float32)
    dy = rng.normal(size=SHAPE).astype(np.float32)
    slope = rng.uniform(0.05, 0.5, size=1 if shared else SHAPE[1]).astype(np.float32)
    y, dx, pg = run({"type": "PReLU", "channel_shared": shared}, x, dy, params={"slope": slope}, dtype=np.float32)
    ty, tdx, (tds,) = torch_grads(lambda t, w: torch.nn.functional.prelu(t, w), x, dy, slope)
    np.testing.assert_allclose(y, ty, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, tdx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pg["slope"], tds, rtol=1e-5, atol=1e-5)
