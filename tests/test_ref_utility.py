"""Utility layers against plain NumPy loop references, forward and backward.

Each reference walks the elements one by one (np.ndindex), written from Caffe's description
(CAFFE-REFERENCE section 1.6 and 3.19), not from the kernels.  Softmax is also compared with
PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec import api
from netspec.core.blob import Blob
from netspec.testing import LayerHarness

RTOL, ATOL = 1e-12, 1e-12


def run(fields, bottoms, top_grads=None, seed=5, inplace=False):
    """(tops, bottom grads, top grads used) of one forward and backward in float64."""
    h = LayerHarness(fields, bottoms, inplace=inplace)
    tops = h.forward()
    rng = np.random.default_rng(seed)
    grads = top_grads if top_grads is not None else [rng.normal(size=t.shape) for t in tops]
    if not h.layer.differentiable:
        return tops, None, grads
    bgrads, _ = h.backward(grads)
    return tops, bgrads, grads


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# ---- Concat and Slice ---------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    rng = np.random.default_rng(0)
    shapes = [(2, 3, 4), (2, 3, 4), (2, 3, 4)]
    ax = axis % 3
    sizes = [1, 2, 3]
    bottoms = []
    for s, n in zip(shapes, sizes):
        s = list(s)
        s[ax] = n
        bottoms.append(rng.normal(size=s))
    (y,), grads, (dy,) = run({"type": "Concat", "axis": axis}, bottoms)
    ref = np.zeros(y.shape)
    dref = [np.zeros(b.shape) for b in bottoms]
    for idx in np.ndindex(*y.shape):
        k, j = idx[ax], 0
        while k >= sizes[j]:  # which bottom holds position k of the concat axis
            k -= sizes[j]
            j += 1
        src = list(idx)
        src[ax] = k
        ref[idx] = bottoms[j][tuple(src)]
        dref[j][tuple(src)] = dy[idx]
    close(y, ref)
    for g, r in zip(grads, dref):
        close(g, r)


def test_concat_backward_respects_propagate_down():
    rng = np.random.default_rng(1)
    h = LayerHarness({"type": "Concat"}, [rng.normal(size=(2, 2)), rng.normal(size=(2, 3))])
    h.forward()
    h.bottom[0].grad[...] = 9.0
    bgrads, _ = h.backward([np.ones((2, 5))], [False, True])
    assert (bgrads[0] == 9.0).all() and (bgrads[1] == 1.0).all()


@pytest.mark.parametrize("fields,sizes", [
    ({"slice_point": [1, 3], "top": ["a", "b", "c"]}, [1, 2, 3]),
    ({"top": ["a", "b", "c"]}, [2, 2, 2]),
    ({"slice_point": [4], "top": ["a", "b"]}, [4, 2]),
])
def test_slice(fields, sizes):
    x = np.random.default_rng(2).normal(size=(2, 6, 3))
    tops, (dx,), dys = run({"type": "Slice", "axis": 1, **fields}, [x])
    assert [t.shape[1] for t in tops] == sizes
    start = 0
    dref = np.zeros_like(x)
    for t, dy, n in zip(tops, dys, sizes):
        for o, k, i in np.ndindex(*t.shape):
            assert t[o, k, i] == x[o, start + k, i]
            dref[o, start + k, i] = dy[o, k, i]
        start += n
    close(dx, dref)


def test_slice_then_concat_is_identity():
    x = np.random.default_rng(3).normal(size=(3, 7, 2))
    parts, _, _ = run({"type": "Slice", "slice_point": [2, 5], "top": ["a", "b", "c"]}, [x])
    (y,), _, _ = run({"type": "Concat"}, parts)
    np.testing.assert_array_equal(y, x)


# ---- Eltwise --------------------------------------------------------------------------------
def _eltwise_ref(op, xs, dy, coeff=None, stable=True):
    n = len(xs)
    y = np.zeros(xs[0].shape)
    grads = [np.zeros(xs[0].shape) for _ in xs]
    for idx in np.ndindex(*y.shape):
        v = [x[idx] for x in xs]
        if op == "SUM":
            c = coeff or [1.0] * n
            y[idx] = sum(ci * vi for ci, vi in zip(c, v))
            for j in range(n):
                grads[j][idx] = c[j] * dy[idx]
        elif op == "PROD":
            y[idx] = np.prod(v)
            for j in range(n):
                if stable:
                    grads[j][idx] = dy[idx] * np.prod([v[i] for i in range(n) if i != j])
                else:
                    grads[j][idx] = dy[idx] * y[idx] / v[j]
        else:
            # Caffe: bottom 1 wins a tie with bottom 0; later bottoms need a strict >
            best = 0 if v[0] > v[1] else 1
            for j in range(2, n):
                if v[j] > v[best]:
                    best = j
            y[idx] = v[best]
            grads[best][idx] = dy[idx]
    return y, grads


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("fields", [
    {"operation": "SUM"},
    {"operation": "SUM", "coeff": [0.5, -1.0, 2.0]},
    {"operation": "PROD"},
    {"operation": "PROD", "stable_prod_grad": False},
    {"operation": "MAX"},
], ids=["sum", "sum-coeff", "prod", "prod-quotient", "max"])
def test_eltwise(fields, inplace):
    rng = np.random.default_rng(4)
    xs = [rng.uniform(0.5, 2, size=(2, 3, 4)) * rng.choice([-1, 1], size=(2, 3, 4)) for _ in range(3)]
    (y,), grads, (dy,) = run({"type": "Eltwise", **fields}, xs, inplace=inplace)
    ry, rgrads = _eltwise_ref(fields["operation"], xs, dy, fields.get("coeff"), fields.get("stable_prod_grad", True))
    close(y, ry)
    for g, r in zip(grads, rgrads):
        close(g, r)


def test_eltwise_max_ties():
    a = np.array([1.0, 2.0, 3.0, 0.0])
    b = np.array([1.0, 2.0, 0.0, 5.0])
    c = np.array([1.0, 0.0, 3.0, 5.0])
    (y,), (ga, gb, gc), _ = run({"type": "Eltwise", "operation": "MAX"}, [a, b, c], top_grads=[np.ones(4)])
    np.testing.assert_array_equal(y, [1, 2, 3, 5])
    # ties between bottoms 0 and 1 go to bottom 1; a later bottom equal to the max does not win
    np.testing.assert_array_equal(ga, [0, 0, 1, 0])
    np.testing.assert_array_equal(gb, [1, 1, 0, 1])
    np.testing.assert_array_equal(gc, [0, 0, 0, 0])


def test_eltwise_prod_with_zero():
    a = np.array([0.0, 2.0])
    b = np.array([3.0, 4.0])
    (_,), (ga, gb), _ = run({"type": "Eltwise", "operation": "PROD"}, [a, b], top_grads=[np.ones(2)])
    np.testing.assert_array_equal(ga, [3.0, 4.0])
    np.testing.assert_array_equal(gb, [0.0, 2.0])
    # the quotient form divides by the zero, as Caffe's stable_prod_grad: false does
    with np.errstate(all="ignore"):
        (_,), (ga, _), _ = run({"type": "Eltwise", "operation": "PROD", "stable_prod_grad": False}, [a, b],
                               top_grads=[np.ones(2)])
    assert not np.isfinite(ga[0]) and ga[1] == 4.0


# ---- Flatten and Reshape --------------------------------------------------------------------
@pytest.mark.parametrize("fields,shape", [
    ({"type": "Flatten"}, (2, 24)),
    ({"type": "Flatten", "axis": 2}, (2, 3, 8)),
    ({"type": "Flatten", "axis": 1, "end_axis": 2}, (2, 12, 2)),
    ({"type": "Reshape", "shape": [0, -1, 2]}, (2, 12, 2)),
])
def test_view_layers_with_a_separate_top(fields, shape):
    # the harness (like the Net) gives a view; here the top is its own array, so both passes copy
    x = np.random.default_rng(5).normal(size=(2, 3, 4, 2))
    h = LayerHarness(fields, [x])
    assert np.shares_memory(h.top[0].data, h.bottom[0].data)
    assert h.top_shapes[0] == shape
    h.top[0] = Blob("sep", np.zeros(shape), np.zeros(shape))
    h.layer.setup(h.bottom, h.top)
    h.layer.forward(h.bottom, h.top)
    np.testing.assert_array_equal(h.top[0].data, x.reshape(shape))
    dy = np.random.default_rng(6).normal(size=shape)
    h.top[0].grad[...] = dy
    h.bottom[0].grad[...] = 0
    h.layer.backward(h.top, [True], h.bottom)
    np.testing.assert_array_equal(h.bottom[0].grad, dy.reshape(x.shape))


CAFFE_RESHAPES = [  # the equivalent specs of caffe.proto's ReshapeParameter comment, on a 2 x 8 input
    ({"shape": [2, 2, 4]}, (2, 2, 4)),
    ({"shape": [2, 4], "axis": 1}, (2, 2, 4)),
    ({"shape": [2, 4], "axis": -2}, (2, 2, 4)),
    ({"shape": [0, 2, -1]}, (2, 2, 4)),
    ({"shape": [1, 2, 8]}, (1, 2, 8)),
    ({"shape": [1, 2], "num_axes": 1}, (1, 2, 8)),
    ({"shape": [1], "num_axes": 0}, (1, 2, 8)),
    ({"shape": [2, 1, 8]}, (2, 1, 8)),
    ({"shape": [1], "axis": 1, "num_axes": 0}, (2, 1, 8)),
    ({"shape": [1], "axis": -1, "num_axes": 0}, (2, 8, 1)),
]


@pytest.mark.parametrize("fields,shape", CAFFE_RESHAPES)
def test_reshape_caffe_examples(fields, shape):
    x = np.arange(16.0).reshape(2, 8)
    (y,), (dx,), (dy,) = run({"type": "Reshape", **fields}, [x])
    assert y.shape == shape
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))
    np.testing.assert_array_equal(dx.reshape(-1), dy.reshape(-1))


def test_flatten_and_reshape_are_views_in_a_net():
    text = """
layers:
  - {name: data, type: Input, top: [data, target], shape: [[2, 3, 2, 2], [2, 12]]}
  - {name: flat, type: Flatten, bottom: data}
  - {name: re, type: Reshape, bottom: flat, shape: [0, 3, -1]}
  - {name: loss, type: EuclideanLoss, bottom: [re, target]}
"""
    net = api.build_net(api.load_net_text(text), "TRAIN", dtype=np.float64)
    for name in ("flat", "re"):
        assert np.shares_memory(net.blobs[name].data, net.blobs["data"].data)
        assert np.shares_memory(net.blobs[name].grad, net.blobs["data"].grad)
    rng = np.random.default_rng(7)
    x, t = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 12))
    net.set_input("data", x)
    net.set_input("target", t)
    np.testing.assert_allclose(net.forward(), ((x.reshape(2, 12) - t) ** 2).sum() / 4, rtol=1e-12)


# ---- Silence and Split ----------------------------------------------------------------------
def test_silence_writes_zero_gradients():
    h = LayerHarness({"type": "Silence"}, [np.ones((2, 3)), np.ones(4)])
    assert h.forward() == []
    for b in h.bottom:
        b.grad[...] = 5.0
    bgrads, _ = h.backward([], [True, False])
    np.testing.assert_array_equal(bgrads[0], 0.0)
    np.testing.assert_array_equal(bgrads[1], 5.0)


def test_split_sums_gradients():
    x = np.random.default_rng(8).normal(size=(2, 3))
    tops, (dx,), dys = run({"type": "Split", "top": ["a", "b", "c"]}, [x])
    for t in tops:
        np.testing.assert_array_equal(t, x)
    close(dx, dys[0] + dys[1] + dys[2])


# ---- Softmax --------------------------------------------------------------------------------
def _softmax_ref(x, axis):
    y = np.zeros_like(x)
    moved = np.moveaxis(x, axis, -1)
    out = np.moveaxis(y, axis, -1)
    for idx in np.ndindex(*moved.shape[:-1]):
        v = moved[idx]
        e = np.exp(v - v.max())
        out[idx] = e / e.sum()
    return y


@pytest.mark.parametrize("shape,axis", [((3, 5), 1), ((2, 4, 3, 2), 1), ((2, 3, 6), -1), ((4, 3), 0)])
def test_softmax(shape, axis):
    x = np.random.default_rng(9).normal(size=shape) * 3
    (y,), (dx,), (dy,) = run({"type": "Softmax", "axis": axis}, [x])
    ry = _softmax_ref(x, axis)
    close(y, ry)
    # dx = y * (dy - sum(dy * y)) along the axis
    dot = (dy * ry).sum(axis=axis, keepdims=True)
    close(dx, ry * (dy - dot))


def test_softmax_large_inputs_stay_finite():
    x = np.array([[1000.0, 999.0, -1000.0]])
    (y,), _, _ = run({"type": "Softmax"}, [x])
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [[1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0.0]], rtol=1e-12)


@pytest.mark.parametrize("shape,axis", [((4, 7), 1), ((2, 5, 3, 3), 1), ((2, 3, 4), -1)])
def test_softmax_matches_torch(shape, axis):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x = rng.normal(size=shape).astype(np.float32) * 4
    dy = rng.normal(size=shape).astype(np.float32)
    h = LayerHarness({"type": "Softmax", "axis": axis}, [x], dtype=np.float32)
    (y,) = h.forward()
    (dx,), _ = h.backward([dy])
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.softmax(tx, dim=axis)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-6)


# ---- ArgMax ---------------------------------------------------------------------------------
def _topk_caffe(values, k):
    """(indices, values) of the k largest, ordered as std::partial_sort with std::greater on
    (value, index) pairs: larger value first, and on equal values the larger index first."""
    pairs = sorted(((v, j) for j, v in enumerate(values)), reverse=True)[:k]
    return [j for _, j in pairs], [v for v, _ in pairs]


@pytest.mark.parametrize("k,out_max_val", [(1, False), (3, False), (2, True)])
def test_argmax_without_axis(k, out_max_val):
    x = np.round(np.random.default_rng(11).normal(size=(3, 2, 2, 2)), 1)  # rounding makes ties
    (y,), _, _ = run({"type": "ArgMax", "top_k": k, "out_max_val": out_max_val}, [x])
    assert y.shape == (3, 2 if out_max_val else 1, k, 1)  # Caffe keeps the 4th axis
    for n in range(3):
        ind, val = _topk_caffe(list(x[n].reshape(-1)), k)
        np.testing.assert_array_equal(y[n, 0, :, 0], ind)
        if out_max_val:
            np.testing.assert_array_equal(y[n, 1, :, 0], val)


@pytest.mark.parametrize("axis,k,out_max_val", [(1, 1, False), (1, 2, True), (-1, 3, False), (0, 2, False)])
def test_argmax_with_axis(axis, k, out_max_val):
    x = np.round(np.random.default_rng(12).normal(size=(3, 4, 5)), 1)
    (y,), _, _ = run({"type": "ArgMax", "axis": axis, "top_k": k, "out_max_val": out_max_val}, [x])
    ax = axis % 3
    expect = list(x.shape)
    expect[ax] = k
    assert y.shape == tuple(expect)
    moved_x, moved_y = np.moveaxis(x, ax, -1), np.moveaxis(y, ax, -1)
    for idx in np.ndindex(*moved_x.shape[:-1]):
        ind, val = _topk_caffe(list(moved_x[idx]), k)
        np.testing.assert_array_equal(moved_y[idx], val if out_max_val else ind)


def test_argmax_ties_give_the_larger_index_first():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    (y,), _, _ = run({"type": "ArgMax", "top_k": 4, "out_max_val": True}, [x])
    np.testing.assert_array_equal(y[0, 0], [4, 2, 1, 3])
    np.testing.assert_array_equal(y[0, 1], [3, 3, 3, 2])
    (y,), _, _ = run({"type": "ArgMax", "axis": 1}, [np.array([[2.0, 2.0], [3.0, 10.0]])])
    np.testing.assert_array_equal(y, [[1], [1]])


def test_argmax_2d_bottom_pads_to_three_axes():
    (y,), _, _ = run({"type": "ArgMax"}, [np.array([[0.0, 5.0, 1.0], [7.0, 0.0, 1.0]])])
    assert y.shape == (2, 1, 1)
    np.testing.assert_array_equal(y.reshape(-1), [1, 0])


# ---- Reduction ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reduction(op, axis):
    x = np.random.default_rng(13).normal(size=(2, 3, 4))
    x[0, 0, 0] = 0.0  # ASUM's gradient there is sign(0) = 0
    coeff = -1.5
    (y,), (dx,), (dy,) = run({"type": "Reduction", "operation": op, "axis": axis, "coeff": coeff}, [x])
    ax = axis % 3
    assert y.shape == x.shape[:ax]
    rows = x.reshape(int(np.prod(x.shape[:ax])), -1)
    dim = rows.shape[1]
    ry = np.zeros(rows.shape[0])
    rdx = np.zeros_like(rows)
    g = np.asarray(dy).reshape(-1)
    for r in range(rows.shape[0]):
        for j in range(dim):
            v = rows[r, j]
            if op == "SUM":
                ry[r] += coeff * v
                rdx[r, j] = coeff * g[r]
            elif op == "MEAN":
                ry[r] += coeff * v / dim
                rdx[r, j] = coeff * g[r] / dim
            elif op == "ASUM":
                ry[r] += coeff * abs(v)
                rdx[r, j] = coeff * g[r] * np.sign(v)
            else:
                ry[r] += coeff * v * v
                rdx[r, j] = 2 * coeff * g[r] * v
    close(np.asarray(y).reshape(-1), ry)
    close(dx.reshape(rows.shape), rdx)


# ---- Tile -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,tiles", [(1, 3), (0, 2), (-1, 4), (2, 1)])
def test_tile(axis, tiles):
    x = np.random.default_rng(14).normal(size=(2, 3, 2))
    (y,), (dx,), (dy,) = run({"type": "Tile", "axis": axis, "tiles": tiles}, [x])
    ax = axis % 3
    rdx = np.zeros_like(x)
    for idx in np.ndindex(*y.shape):
        src = list(idx)
        src[ax] = idx[ax] % x.shape[ax]  # Tile repeats the whole block x[..., axis:]
        assert y[idx] == x[tuple(src)]
        rdx[tuple(src)] += dy[idx]
    close(dx, rdx)
    close(y, np.tile(x, [tiles if d == ax else 1 for d in range(3)]))


# ---- Crop -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fields,ref_shape", [
    ({"offset": 1}, (1, 1, 3, 2)),
    ({"axis": 1, "offset": [0, 2, 1]}, (2, 3, 2, 2)),
    ({"axis": 3}, (5, 5, 5, 2)),
    ({"axis": 0, "offset": [1, 0, 1, 2]}, (1, 4, 3, 1)),
])
def test_crop(fields, ref_shape):
    rng = np.random.default_rng(15)
    x = rng.normal(size=(2, 4, 5, 4))
    ref = rng.normal(size=ref_shape)
    h = LayerHarness({"type": "Crop", **fields}, [x, ref])
    (y,) = h.forward()
    axis = fields.get("axis", 2)
    off = fields.get("offset", 0)
    offs = [0] * axis + (off if isinstance(off, list) else [off] * (4 - axis))
    assert y.shape == tuple(x.shape[d] if d < axis else ref_shape[d] for d in range(4))
    h.bottom[1].grad[...] = 3.0
    dy = rng.normal(size=y.shape)
    bgrads, _ = h.backward([dy], [True, False])
    rdx = np.zeros_like(x)
    for idx in np.ndindex(*y.shape):
        src = tuple(i + o for i, o in zip(idx, offs))
        assert y[idx] == x[src]
        rdx[src] = dy[idx]
    close(bgrads[0], rdx)
    np.testing.assert_array_equal(bgrads[1], 3.0)  # the reference bottom gets no gradient
