"""LRN, BatchNorm, MVN, Scale and Bias against plain Python loops, and against PyTorch.

The references are written from the formulas of CAFFE-REFERENCE §1.5, §3.17 and §3.18, and
their gradients from the Jacobian (every output's derivative scattered into the inputs it
reads), not from the layers' closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netspec.testing import LayerHarness


def run(fields, bottoms, dys, *, phase="TRAIN", params=None, inplace=False, dtype=np.float64, pd=None):
    h = LayerHarness(fields, bottoms, phase=phase, params=params, inplace=inplace, dtype=dtype)
    tops = h.forward()
    grads, pgrads = h.backward(dys, propagate_down=pd)
    return tops[0], grads, pgrads, h


# ---- LRN ------------------------------------------------------------------------------------

def lrn_across_reference(x, dy, size, alpha, beta, k):
    n, c, hh, ww = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x)
    dx = np.zeros_like(x)
    for a in range(n):
        for i in range(hh):
            for j in range(ww):
                for ch in range(c):
                    win = range(max(0, ch - half), min(c, ch + half + 1))
                    s = k + alpha / size * sum(x[a, q, i, j] ** 2 for q in win)
                    y[a, ch, i, j] = x[a, ch, i, j] * s ** -beta
                    g = dy[a, ch, i, j]
                    dx[a, ch, i, j] += g * s ** -beta
                    for q in win:   # d s / d x_q = 2 alpha / n x_q
                        dx[a, q, i, j] += g * x[a, ch, i, j] * -beta * s ** (-beta - 1) * 2 * alpha / size * x[a, q, i, j]
    return y, dx


def lrn_within_reference(x, dy, size, alpha, beta):
    n, c, hh, ww = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x)
    dx = np.zeros_like(x)
    for a in range(n):
        for ch in range(c):
            for i in range(hh):
                for j in range(ww):
                    win = [(p, q) for p in range(i - half, i + half + 1) for q in range(j - half, j + half + 1)
                           if 0 <= p < hh and 0 <= q < ww]   # zero padding: outside adds nothing
                    s = 1.0 + alpha / size ** 2 * sum(x[a, ch, p, q] ** 2 for p, q in win)
                    y[a, ch, i, j] = x[a, ch, i, j] * s ** -beta
                    g = dy[a, ch, i, j]
                    dx[a, ch, i, j] += g * s ** -beta
                    for p, q in win:
                        dx[a, ch, p, q] += (g * x[a, ch, i, j] * -beta * s ** (-beta - 1) * 2 * alpha / size ** 2
                                            * x[a, ch, p, q])
    return y, dx


@pytest.mark.parametrize("size,alpha,beta,k,shape", [
    (5, 1.0, 0.75, 1.0, (2, 7, 3, 2)),
    (3, 0.5, 0.6, 2.0, (1, 4, 2, 3)),
    (5, 2.0, 1.2, 1.0, (2, 3, 2, 2)),       # the window is wider than the channels
    (1, 0.8, 0.75, 1.5, (2, 3, 2, 2)),
])
def test_lrn_across_channels_matches_loops(size, alpha, beta, k, shape):
    rng = np.random.default_rng(size)
    x, dy = 1.5 * rng.normal(size=shape), rng.normal(size=shape)
    fields = {"type": "LRN", "local_size": size, "alpha": alpha, "beta": beta, "k": k}
    y, (dx,), _, _ = run(fields, [x], [dy])
    ry, rdx = lrn_across_reference(x, dy, size, alpha, beta, k)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("size,alpha,beta,shape", [
    (3, 2.0, 0.75, (2, 2, 4, 5)),
    (5, 1.0, 0.6, (1, 3, 4, 3)),   # the window is wider than the plane
])
def test_lrn_within_channel_matches_loops(size, alpha, beta, shape):
    rng = np.random.default_rng(size)
    x, dy = 1.5 * rng.normal(size=shape), rng.normal(size=shape)
    # k is ignored in this region: Caffe hard-codes the shift to 1
    fields = {"type": "LRN", "norm_region": "WITHIN_CHANNEL", "local_size": size, "alpha": alpha, "beta": beta,
              "k": 9.0}
    y, (dx,), _, _ = run(fields, [x], [dy])
    ry, rdx = lrn_within_reference(x, dy, size, alpha, beta)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.9, 0.6, 2.0), (5, 3.0, 1.1, 1.0)])
def test_lrn_across_channels_matches_torch(size, alpha, beta, k):
    # torch also divides alpha by the window size (an average pool over channels with zero
    # padding), so for odd sizes the two formulas are the same
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = (2 * rng.normal(size=(2, 8, 5, 4))).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    fields = {"type": "LRN", "local_size": size, "alpha": alpha, "beta": beta, "k": k}
    y, (dx,), _, _ = run(fields, [x], [dy], dtype=np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, size, alpha=alpha, beta=beta, k=k)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)


# ---- BatchNorm ------------------------------------------------------------------------------

def channel_values(x, ch):
    """All values of channel ``ch`` (axis 1), in C order of the other axes."""
    return np.array([x[(a, ch) + rest] for a in range(x.shape[0]) for rest in np.ndindex(*x.shape[2:])])


def bn_train_reference(x, dy, eps):
    """Batch-statistics BatchNorm and its input gradient from the Jacobian, channel by channel."""
    y = np.empty_like(x)
    dx = np.empty_like(x)
    for ch in range(x.shape[1]):
        v = channel_values(x, ch)
        g = channel_values(dy, ch)
        m = v.size
        mu = sum(v) / m
        var = sum((t - mu) ** 2 for t in v) / m          # biased
        inv = 1.0 / math.sqrt(var + eps)
        xh = [(t - mu) * inv for t in v]
        # dy_i/dx_j = inv (delta_ij - 1/m - xh_i xh_j / m)
        d = [sum(g[i] * inv * ((i == j) - 1.0 / m - xh[i] * xh[j] / m) for i in range(m)) for j in range(m)]
        for idx, (a, rest) in enumerate((a, rest) for a in range(x.shape[0]) for rest in np.ndindex(*x.shape[2:])):
            y[(a, ch) + rest] = xh[idx]
            dx[(a, ch) + rest] = d[idx]
    return y, dx


@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (6, 2), (3, 2, 5)], ids=["4d", "2d", "3d"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_batchnorm_train_matches_loops(shape, inplace):
    rng = np.random.default_rng(len(shape))
    x = 2 * rng.normal(size=shape) + 0.7
    dy = rng.normal(size=shape)
    y, (dx,), pg, _ = run({"type": "BatchNorm", "eps": 1e-3}, [x], [dy], inplace=inplace)
    ry, rdx = bn_train_reference(x, dy, 1e-3)
    np.testing.assert_allclose(y, ry, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-12)
    for g in pg.values():   # the accumulators are not learned: no gradient
        assert not g.any()


def test_batchnorm_running_statistics_after_k_steps():
    lam, eps, k = 0.9, 1e-5, 4
    rng = np.random.default_rng(11)
    batches = [3 * rng.normal(size=(3, 2, 2, 2)) + t for t in range(k)]
    h = LayerHarness({"type": "BatchNorm", "moving_average_fraction": lam, "eps": eps}, [batches[0]])
    for xb in batches:
        h.inputs[0][...] = xb
        h.forward()
    # by hand: s = sum lam^j; M and V sum the batch means and unbiased variances with weights lam^(k-1-t)
    w = [lam ** (k - 1 - t) for t in range(k)]
    s = sum(w)
    means = [[channel_values(xb, c).mean() for c in range(2)] for xb in batches]
    uvars = [[channel_values(xb, c).var(ddof=1) for c in range(2)] for xb in batches]   # m = 12
    M = [sum(w[t] * means[t][c] for t in range(k)) for c in range(2)]
    V = [sum(w[t] * uvars[t][c] for t in range(k)) for c in range(2)]
    np.testing.assert_allclose(h.params["scale_factor"].data, [s], rtol=1e-14)
    np.testing.assert_allclose(h.params["mean"].data, M, rtol=1e-13)
    np.testing.assert_allclose(h.params["variance"].data, V, rtol=1e-13)
    # a TEST net on those accumulators normalizes with M / s and V / s
    x = rng.normal(size=(2, 2, 3, 1))
    params = {p: b.data.copy() for p, b in h.params.items()}
    dy = rng.normal(size=x.shape)
    y, (dx,), _, t = run({"type": "BatchNorm", "eps": eps}, [x], [dy], phase="TEST", params=params)
    for c in range(2):
        sd = math.sqrt(V[c] / s + eps)
        np.testing.assert_allclose(y[:, c], (x[:, c] - M[c] / s) / sd, rtol=1e-12)
        np.testing.assert_allclose(dx[:, c], dy[:, c] / sd, rtol=1e-12)
    np.testing.assert_array_equal(t.params["scale_factor"].data, params["scale_factor"])  # TEST: unchanged


def test_batchnorm_single_value_per_channel_keeps_variance_factor_one():
    h = LayerHarness({"type": "BatchNorm", "moving_average_fraction": 0.5}, [np.array([[1.0, 2.0, 3.0]])])
    h.forward()
    np.testing.assert_array_equal(h.params["variance"].data, 0.0)   # m = 1: factor 1, not 1/0
    np.testing.assert_array_equal(h.params["mean"].data, [1.0, 2.0, 3.0])


def test_batchnorm_fresh_net_in_global_mode_divides_by_sqrt_eps():
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    y, (dx,), _, _ = run({"type": "BatchNorm", "eps": 1e-4}, [x], [np.ones_like(x)], phase="TEST")
    np.testing.assert_allclose(y, x / math.sqrt(1e-4), rtol=1e-14)
    np.testing.assert_allclose(dx, np.full_like(x, 100.0), rtol=1e-14)


def test_batchnorm_modes_and_who_updates():
    x = np.random.default_rng(3).normal(size=(4, 3))
    stats = {"mean": np.array([1.0, 2.0, 3.0]), "variance": np.array([4.0, 8.0, 2.0]), "scale_factor": np.array([2.0])}
    # TRAIN with use_global_stats: frozen statistics, nothing moves
    h = LayerHarness({"type": "BatchNorm", "use_global_stats": True, "eps": 0.01}, [x], params=stats)
    (y,) = h.forward()
    np.testing.assert_allclose(y, (x - stats["mean"] / 2) / np.sqrt(stats["variance"] / 2 + 0.01), rtol=1e-14)
    for p in stats:
        np.testing.assert_array_equal(h.params[p].data, stats[p])
    # TEST with use_global_stats: false normalizes by the batch but leaves the shared accumulators
    h = LayerHarness({"type": "BatchNorm", "use_global_stats": False}, [x], phase="TEST", params=stats)
    (y,) = h.forward()
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-14)
    for p in stats:
        np.testing.assert_array_equal(h.params[p].data, stats[p])
    # TRAIN default: batch statistics, accumulators move
    h = LayerHarness({"type": "BatchNorm"}, [x], params=stats)
    h.forward()
    np.testing.assert_allclose(h.params["scale_factor"].data, [2.0 * 0.999 + 1])


def test_batchnorm_in_place_backward_survives_a_later_in_place_layer():
    # BatchNorm -> Scale, both in place: Scale overwrites the blob BatchNorm wrote before
    # BatchNorm's backward runs; the gradient must not depend on that
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    h = LayerHarness({"type": "BatchNorm"}, [x], inplace=True)
    h.forward()
    h.top[0].data[...] = 5.0 * h.top[0].data + 1.0
    (dx,), _ = h.backward([dy])
    np.testing.assert_allclose(dx, bn_train_reference(x, dy, 1e-5)[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (16, 5)], ids=["4d", "2d"])
def test_batchnorm_matches_torch_training_mode(shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = (2 * rng.normal(size=shape) - 1).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    y, (dx,), _, _ = run({"type": "BatchNorm", "eps": 1e-5}, [x], [dy], dtype=np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.batch_norm(tx, None, None, weight=None, bias=None, training=True, eps=1e-5)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-5)


# ---- MVN ------------------------------------------------------------------------------------

def mvn_reference(x, dy, across, normalize_variance, eps):
    rows = x.shape[0] if across else x.shape[0] * x.shape[1]
    xs, gs = x.reshape(rows, -1), dy.reshape(rows, -1)
    y, dx = np.zeros_like(xs), np.zeros_like(xs)
    for r in range(rows):
        v, g = list(xs[r]), list(gs[r])
        m = len(v)
        mu = sum(v) / m
        z = [t - mu for t in v]
        if not normalize_variance:
            y[r] = z
            dx[r] = [sum(g[i] * ((i == j) - 1.0 / m) for i in range(m)) for j in range(m)]
            continue
        sd = math.sqrt(sum(t * t for t in z) / m)
        y[r] = [t / (sd + eps) for t in z]
        # y_i = z_i / (sd + eps): dy_i/dx_j = (delta_ij - 1/m) / (sd + eps) - z_i z_j / (m sd (sd + eps)^2)
        dx[r] = [sum(g[i] * (((i == j) - 1.0 / m) / (sd + eps) - z[i] * z[j] / (m * sd * (sd + eps) ** 2))
                     for i in range(m)) for j in range(m)]
    return y.reshape(x.shape), dx.reshape(x.shape)


@pytest.mark.parametrize("across", [False, True], ids=["per-channel", "across"])
@pytest.mark.parametrize("normalize_variance", [True, False], ids=["var", "mean-only"])
@pytest.mark.parametrize("eps", [1e-9, 0.3], ids=["eps-default", "eps-large"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_mvn_matches_loops(across, normalize_variance, eps, inplace):
    rng = np.random.default_rng(9)
    x = 2 * rng.normal(size=(2, 3, 2, 3)) + 1
    dy = rng.normal(size=x.shape)
    fields = {"type": "MVN", "across_channels": across, "normalize_variance": normalize_variance, "eps": eps}
    y, (dx,), _, _ = run(fields, [x], [dy], inplace=inplace)
    ry, rdx = mvn_reference(x, dy, across, normalize_variance, eps)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-14)
    # a large eps shows the exact gradient: Caffe's backward drops a factor (std + eps) / std
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-13)


def test_mvn_constant_rows_stay_finite():
    x = np.ones((2, 3, 4))
    y, (dx,), _, _ = run({"type": "MVN"}, [x], [np.random.default_rng(0).normal(size=x.shape)])
    np.testing.assert_array_equal(y, 0.0)
    assert np.all(np.isfinite(dx))


# ---- Scale and Bias -------------------------------------------------------------------------

def affine_reference(x, dy, gamma, beta, axis):
    """y = x * gamma + beta broadcast at ``axis`` (a one-value operand broadcasts everywhere)."""
    op_shape = (gamma if gamma is not None else beta).shape
    scalar = int(np.prod(op_shape)) == 1
    y, dx = np.zeros_like(x), np.zeros_like(x)
    dg = None if gamma is None else np.zeros_like(gamma)
    db = None if beta is None else np.zeros_like(beta)
    for idx in np.ndindex(*x.shape):
        k = (0,) * len(op_shape) if scalar else idx[axis:axis + len(op_shape)]
        g = gamma[k] if gamma is not None else 1.0
        y[idx] = x[idx] * g + (beta[k] if beta is not None else 0.0)
        dx[idx] = dy[idx] * g
        if dg is not None:
            dg[k] += dy[idx] * x[idx]
        if db is not None:
            db[k] += dy[idx]
    return y, dx, dg, db


SCALE_CASES = [  # fields, x shape, operand shape, canonical axis
    ({}, (2, 3, 4), (3,), 1),
    ({"num_axes": 0}, (2, 3, 4), (), 0),
    ({"num_axes": -1}, (2, 3, 2, 2), (3, 2, 2), 1),
    ({"axis": 0, "num_axes": 2}, (2, 3, 4), (2, 3), 0),
    ({"axis": -1}, (2, 3, 4), (4,), 2),
    ({"axis": 2, "num_axes": 2}, (2, 2, 3, 4), (3, 4), 2),
]


@pytest.mark.parametrize("extra,shape,op,axis", SCALE_CASES)
@pytest.mark.parametrize("bias", [False, True], ids=["scale", "scale-bias"])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_scale_one_bottom_matches_loops(extra, shape, op, axis, bias, inplace):
    rng = np.random.default_rng(10)
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    gamma, beta = rng.normal(size=op), rng.normal(size=op)
    params = {"scale": gamma, **({"bias": beta} if bias else {})}
    y, (dx,), pg, _ = run({"type": "Scale", "bias_term": bias, **extra}, [x], [dy], params=params, inplace=inplace)
    ry, rdx, rdg, rdb = affine_reference(x, dy, gamma, beta if bias else None, axis)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13)
    np.testing.assert_allclose(pg["scale"], rdg, rtol=1e-12)
    if bias:
        np.testing.assert_allclose(pg["bias"], rdb, rtol=1e-12)


@pytest.mark.parametrize("fields,shape,op,axis", [
    ({}, (2, 3, 4, 2), (3, 4), 1),
    ({"axis": 0}, (2, 3, 4), (2,), 0),
    ({}, (2, 3, 4), (), 0),             # a scalar bottom 1 broadcasts everywhere
    ({"bias_term": True}, (2, 3, 2), (3,), 1),
])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_scale_two_bottoms_gives_gamma_its_gradient(fields, shape, op, axis, inplace):
    rng = np.random.default_rng(12)
    x, gamma, dy = rng.normal(size=shape), rng.normal(size=op), rng.normal(size=shape)
    beta = rng.normal(size=op)
    bias = fields.get("bias_term", False)
    h = LayerHarness({"type": "Scale", **fields}, [x, gamma], params={"bias": beta} if bias else None,
                     inplace=inplace)
    (y,) = h.forward()
    h.bottom[1].grad[...] = 99.0   # overwritten, not accumulated
    (dx, dg), pg = h.backward([dy], propagate_down=[True, True])
    ry, rdx, rdg, rdb = affine_reference(x, dy, gamma, beta if bias else None, axis)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13)
    np.testing.assert_allclose(dg, rdg, rtol=1e-12)
    if bias:
        np.testing.assert_allclose(pg["bias"], rdb, rtol=1e-12)
    if not inplace:  # propagate_down [False, True]: gamma still gets its gradient, x's is left alone
        h.forward()
        h.bottom[0].grad[...] = 7.0
        h.top[0].grad[...] = dy
        h.layer.backward(h.top, [False, True], h.bottom)
        np.testing.assert_array_equal(h.bottom[0].grad, 7.0)
        np.testing.assert_allclose(h.bottom[1].grad, rdg, rtol=1e-12)


@pytest.mark.parametrize("extra,shape,op,axis", SCALE_CASES)
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_bias_one_bottom_matches_loops(extra, shape, op, axis, inplace):
    rng = np.random.default_rng(13)
    x, dy, beta = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=op)
    y, (dx,), pg, _ = run({"type": "Bias", **extra}, [x], [dy], params={"bias": beta}, inplace=inplace)
    ry, rdx, _, rdb = affine_reference(x, dy, None, beta, axis)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13)
    np.testing.assert_allclose(pg["bias"], rdb, rtol=1e-12)


@pytest.mark.parametrize("fields,shape,op,axis", [
    ({}, (2, 3, 4, 2), (3, 4), 1),
    ({"axis": -1}, (3, 2, 4), (4,), 2),
    ({}, (2, 3), (1,), 0),
])
def test_bias_two_bottoms_matches_loops(fields, shape, op, axis):
    rng = np.random.default_rng(14)
    x, beta, dy = rng.normal(size=shape), rng.normal(size=op), rng.normal(size=shape)
    y, (dx, db), _, _ = run({"type": "Bias", **fields}, [x, beta], [dy], pd=[True, True])
    ry, rdx, _, rdb = affine_reference(x, dy, None, beta, axis)
    np.testing.assert_allclose(y, ry, rtol=1e-13)
    np.testing.assert_allclose(dx, rdx, rtol=1e-13)
    np.testing.assert_allclose(db, rdb, rtol=1e-12)


def test_scale_default_gamma_is_one_and_bias_zero():
    x = np.random.default_rng(0).normal(size=(2, 3))
    h = LayerHarness({"type": "Scale", "bias_term": True}, [x])
    np.testing.assert_array_equal(h.forward()[0], x)


# ---- inside a Net -----------------------------------------------------------------------------

BN_NET = """
layers:
  - {name: data, type: Input, top: [data, label], shape: [[6, 4], [6]]}
  - {name: ip1, type: InnerProduct, bottom: data, num_output: 3, weight_filler: {type: gaussian, std: 0.7},
     bias_filler: {type: constant, value: 0.2}}
  - {name: bn1, type: BatchNorm, bottom: ip1, top: ip1, moving_average_fraction: 0.8}
  - {name: scale1, type: Scale, bottom: ip1, top: ip1, bias_term: true, filler: {type: gaussian, mean: 1, std: 0.3},
     bias_filler: {type: gaussian, std: 0.3}}
  - {name: prelu1, type: PReLU, bottom: ip1, top: ip1}
  - {name: ip2, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
"""


def test_batchnorm_scale_prelu_in_place_chain_in_a_net():
    from netspec import api

    spec = api.load_net_text(BN_NET, file="net.yaml")
    net = api.build_net(spec, "TRAIN", dtype=np.float64, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    net.set_input("data", x)
    net.set_input("label", rng.integers(0, 3, size=6))
    net.clear_param_grads()
    net.forward()
    net.backward()
    analytic = net.param_grad.copy()
    numeric = np.zeros_like(analytic)
    for i in range(net.param_data.size):   # the BatchNorm accumulators drift but the loss ignores them
        old = net.param_data[i]
        net.param_data[i] = old + 1e-6
        plus = net.forward()
        net.param_data[i] = old - 1e-6
        minus = net.forward()
        net.param_data[i] = old
        numeric[i] = (plus - minus) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    # a TEST net shares the accumulators and normalizes with them: M / s and V / s
    test = api.build_net(spec, "TEST", dtype=np.float64, share_from=net)
    test.set_input("data", x)
    test.forward()
    M, V, s = (net.params[f"bn1/{p}"].data for p in ("mean", "variance", "scale_factor"))
    w, b = net.params["ip1/weight"].data, net.params["ip1/bias"].data
    h = x @ w.T + b
    expect = (h - M / s[0]) / np.sqrt(V / s[0] + 1e-5) * net.params["scale1/scale"].data + net.params["scale1/bias"].data
    slope = net.params["prelu1/slope"].data
    expect = np.where(expect > 0, expect, slope * expect)
    np.testing.assert_allclose(test.blobs["ip1"].data, expect, rtol=1e-12)
