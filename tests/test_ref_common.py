"""InnerProduct, Dropout and Embed against plain Python loops, and InnerProduct against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from netspec.errors import DataError
from netspec.testing import LayerHarness


# ---- InnerProduct ---------------------------------------------------------------------------

def ip_reference(x, w, b, dy, axis, transpose):
    m = int(np.prod(x.shape[:axis]))
    xs = x.reshape(m, -1)
    k = xs.shape[1]
    wn = w.T if transpose else w           # (N, K)
    n = wn.shape[0]
    g = dy.reshape(m, n)
    y = np.zeros((m, n))
    dx = np.zeros((m, k))
    dw = np.zeros((n, k))
    for i in range(m):
        for o in range(n):
            y[i, o] = sum(xs[i, j] * wn[o, j] for j in range(k)) + (b[o] if b is not None else 0.0)
            for j in range(k):
                dx[i, j] += g[i, o] * wn[o, j]
                dw[o, j] += g[i, o] * xs[i, j]
    db = g.sum(axis=0)
    return y.reshape(dy.shape), dx.reshape(x.shape), dw.T if transpose else dw, db


@pytest.mark.parametrize("shape,axis,transpose,bias", [
    ((3, 2, 2, 2), 1, False, True),
    ((2, 3, 4), 2, True, True),
    ((5, 4), 1, False, False),
    ((2, 3, 2), 1, True, False),
])
def test_inner_product_matches_loops(shape, axis, transpose, bias):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    k = int(np.prod(shape[axis:]))
    n = 3
    w = rng.normal(size=(k, n) if transpose else (n, k))
    b = rng.normal(size=n) if bias else None
    fields = {"type": "InnerProduct", "num_output": n, "axis": axis, "transpose": transpose, "bias_term": bias}
    params = {"weight": w, **({"bias": b} if bias else {})}
    h = LayerHarness(fields, [x], params=params)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape)
    (dx,), pg = h.backward([dy])
    ry, rdx, rdw, rdb = ip_reference(x, w, b, dy, axis, transpose)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12)
    np.testing.assert_allclose(pg["weight"], rdw, rtol=1e-12)
    if bias:
        np.testing.assert_allclose(pg["bias"], rdb, rtol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product_matches_torch_linear(transpose):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 2, 3, 2)).astype(np.float32)
    w = rng.normal(size=(12, 5) if transpose else (5, 12)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    fields = {"type": "InnerProduct", "num_output": 5, "transpose": transpose}
    h = LayerHarness(fields, [x], params={"weight": w, "bias": b}, dtype=np.float32)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape).astype(np.float32)
    (dx,), pg = h.backward([dy])
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.linear(tx.reshape(6, -1), tw.T if transpose else tw, tb)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg["weight"], tw.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pg["bias"], tb.grad.numpy(), rtol=1e-5, atol=1e-5)


# ---- Dropout --------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.0, 0.9])
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_train_mask_comes_from_the_layer_generator(ratio, inplace, dtype):
    rng = np.random.default_rng(3)
    x, dy = rng.normal(size=(4, 3, 5)), rng.normal(size=(4, 3, 5))
    h = LayerHarness({"type": "Dropout", "dropout_ratio": ratio}, [x], inplace=inplace, dtype=dtype, seed=21)
    (y,) = h.forward()
    (dx,), _ = h.backward([dy])
    # the harness gives the layer Generator(PCG64(seed)) before each forward: one uniform per unit
    u = np.random.Generator(np.random.PCG64(21)).random(x.size).reshape(x.shape)
    scale = 1.0 / (1.0 - ratio)
    ry = np.zeros_like(x)
    rdx = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        if u[idx] >= ratio:    # kept with probability 1 - ratio
            ry[idx] = x[idx] * scale
            rdx[idx] = dy[idx] * scale
    tol = 1e-6 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(y, ry, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, rdx, rtol=tol, atol=tol)


def test_dropout_keeps_the_right_fraction_and_draws_a_new_mask_each_forward():
    x = np.ones((200, 100))
    h = LayerHarness({"type": "Dropout", "dropout_ratio": 0.3}, [x])
    (a,) = h.forward(reset_rng=False)
    (b,) = h.forward(reset_rng=False)
    assert set(np.unique(a)) == {0.0, 1.0 / 0.7}
    assert abs((a != 0).mean() - 0.7) < 0.01
    assert (a != b).any()


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_dropout_test_phase_is_identity(inplace):
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    h = LayerHarness({"type": "Dropout", "dropout_ratio": 0.6}, [x], phase="TEST", inplace=inplace)
    (y,) = h.forward()
    (dx,), _ = h.backward([dy])
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(dx, dy)


def test_dropout_follows_the_layer_phase_over_the_net_phase():
    x = np.ones((50, 10))
    h = LayerHarness({"type": "Dropout", "phase": "TEST"}, [x], phase="TRAIN")
    np.testing.assert_array_equal(h.forward()[0], x)


# ---- Embed ----------------------------------------------------------------------------------

def embed_reference(idx, w, b, dy):
    flat = idx.reshape(-1).astype(int)
    n = w.shape[1]
    y = np.zeros((flat.size, n))
    dw = np.zeros_like(w)
    g = dy.reshape(flat.size, n)
    for i, r in enumerate(flat):
        for o in range(n):
            y[i, o] = w[r, o] + (b[o] if b is not None else 0.0)
            dw[r, o] += g[i, o]
    db = g.sum(axis=0)
    return y.reshape(idx.shape + (n,)), dw, db


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embed_matches_loops_and_accumulates_repeated_rows(bias, dtype):
    rng = np.random.default_rng(5)
    idx = np.array([[0, 3, 3], [1, 3, 0]], dtype=np.float64)   # row 3 three times, row 2 never
    w, b = rng.normal(size=(4, 5)), rng.normal(size=5)
    fields = {"type": "Embed", "num_output": 5, "input_dim": 4, "bias_term": bias}
    h = LayerHarness(fields, [idx], params={"weight": w, **({"bias": b} if bias else {})}, dtype=dtype)
    (y,) = h.forward()
    assert y.shape == (2, 3, 5)
    dy = rng.normal(size=y.shape)
    h.bottom[0].grad[...] = 3.0
    (didx,), pg = h.backward([dy])
    ry, rdw, rdb = embed_reference(idx, w, b if bias else None, dy)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, ry, rtol=tol, atol=tol)
    np.testing.assert_allclose(pg["weight"], rdw, rtol=tol, atol=tol)
    assert not pg["weight"][2].any()
    if bias:
        np.testing.assert_allclose(pg["bias"], rdb, rtol=tol, atol=tol)
    np.testing.assert_array_equal(didx, 3.0)   # the indices get no gradient


@pytest.mark.parametrize("bad,pos", [(4.0, 2), (-1.0, 0), (1.5, 1), (float("nan"), 3)])
def test_embed_rejects_bad_indices_with_a_data_error(bad, pos):
    idx = np.array([0.0, 1.0, 2.0, 3.0])
    idx[pos] = bad
    h = LayerHarness({"type": "Embed", "num_output": 2, "input_dim": 4}, [idx])
    with pytest.raises(DataError) as err:
        h.forward()
    msg = str(err.value)
    assert f"position {pos}" in msg and "[0, 4)" in msg and "layer 'layer' (Embed)" in msg
