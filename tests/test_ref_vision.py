"""Convolution, Deconvolution, Pooling and Im2col against plain NumPy loops, and against PyTorch.

The references are written from the definitions (CAFFE-REFERENCE §1.2, §3.15, §3.16, §3.20),
not from the kernels: a convolution is a sum over kernel offsets of strided slices of the
zero-padded input, its gradients are the same sums scattered back; pooling loops over every
window element by element.  PyTorch is compared where its semantics agree with Caffe's;
Caffe's own edge cases are checked against hand-computed values.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import netspec.layers.vision as vision
from netspec.errors import GraphError
from netspec.testing import LayerHarness

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)


def as_list(v, d):
    return list(v) if isinstance(v, (list, tuple)) else [v] * d


# ---- convolution references -------------------------------------------------------------------

def _window(o_pos, k_pos, stride, dil):
    """Slices of the padded input read by kernel offset ``k_pos`` for all outputs ``o_pos``."""
    return tuple(slice(k * d, k * d + (o - 1) * s + 1, s) for o, k, s, d in zip(o_pos, k_pos, stride, dil))


def conv_reference(x, w, b, stride, pad, dil, group, dy):
    """Convolution forward and backward for x (N, C, *S), w (M, C/g, *K); returns y, dx, dw, db."""
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    ks = w.shape[2:]
    d = len(ks)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(xp.shape[2 + i] - (dil[i] * (ks[i] - 1) + 1)) // stride[i] + 1 for i in range(d)]
    mg = m // group
    y = np.zeros((n, m, *out))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for oc in range(m):
        gi = oc // mg
        for ic in range(cg):
            c_in = gi * cg + ic
            for kpos in itertools.product(*[range(k) for k in ks]):
                win = (slice(None), c_in) + _window(out, kpos, stride, dil)
                y[:, oc] += w[(oc, ic) + kpos] * xp[win]
                dxp[win] += w[(oc, ic) + kpos] * dy[:, oc]
                dw[(oc, ic) + kpos] = np.sum(dy[:, oc] * xp[win])
        if b is not None:
            y[:, oc] += b[oc]
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in zip(pad, x.shape[2:]))
    db = dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1))
    return y, dxp[crop], dw, db


def deconv_reference(x, w, b, stride, pad, dil, group, dy):
    """Deconvolution from its definition: each input value scatters ``x * w`` into the output.

    x (N, C, *S), w (C, M/g, *K); returns y, dx, dw, db for the output gradient dy.
    """
    n, c = x.shape[:2]
    _, mg, *ks = w.shape
    d = len(ks)
    m = mg * group
    cg = c // group
    full = [stride[i] * (x.shape[2 + i] - 1) + dil[i] * (ks[i] - 1) + 1 for i in range(d)]
    yp = np.zeros((n, m, *full))
    crop = tuple(slice(p, f - p) for p, f in zip(pad, full))
    dyp = np.zeros_like(yp)
    dyp[(slice(None), slice(None)) + crop] = dy
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for ic in range(c):
        gi = ic // cg
        for oc_g in range(mg):
            oc = gi * mg + oc_g
            for kpos in itertools.product(*[range(k) for k in ks]):
                win = (slice(None), oc) + _window(x.shape[2:], kpos, stride, dil)
                yp[win] += w[(ic, oc_g) + kpos] * x[:, ic]
                dx[:, ic] += w[(ic, oc_g) + kpos] * dyp[win]
                dw[(ic, oc_g) + kpos] = np.sum(x[:, ic] * dyp[win])
    y = yp[(slice(None), slice(None)) + crop].copy()
    if b is not None:
        y += b.reshape((1, m) + (1,) * d)
    db = dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1))
    return y, dx, dw, db


CONV_CASES = [
    # (input shape, fields)
    ((2, 3, 6, 5), {"num_output": 4, "kernel_size": 3}),
    ((2, 4, 7, 6), {"num_output": 6, "kernel_size": 3, "pad": 1, "stride": 2, "group": 2}),
    ((2, 2, 8, 7), {"num_output": 3, "kernel_size": 3, "pad": 2, "dilation": 2}),
    ((1, 3, 7, 8), {"num_output": 2, "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3,
                    "pad_h": 1, "pad_w": 2}),
    ((3, 6, 4, 3), {"num_output": 4, "kernel_size": 1, "group": 2}),
    ((2, 4, 10, 12), {"num_output": 4, "kernel_size": 1, "group": 2}),
    ((3, 4, 5, 4), {"num_output": 6, "kernel_size": 1, "stride": 2}),
    ((2, 2, 11), {"num_output": 3, "kernel_size": 3, "stride": 2, "pad": 1, "dilation": 2}),
    ((2, 2, 5, 4, 6), {"num_output": 3, "kernel_size": [2, 3, 2], "stride": [1, 2, 2], "pad": [1, 0, 1],
                       "dilation": [2, 1, 1]}),
    ((2, 4, 5, 5), {"num_output": 4, "kernel_size": 3, "group": 4, "bias_term": False}),
    ((3, 5, 7, 6), {"num_output": 4, "kernel_size": 3, "pad": 1}),                 # 3x3 stride 1: winograd
    ((2, 3, 9, 7), {"num_output": 5, "kernel_size": 5, "pad": 2}),                 # 5x5 stride 1: winograd
    ((2, 2, 6, 8), {"num_output": 3, "kernel_size": 5, "pad": 1, "bias_term": False}),
]


def conv_algos(shape, fields, ltype="Convolution"):
    """The algorithms that suit a layer (every one of them must pass the same tests)."""
    h = LayerHarness({"type": ltype, **fields}, [np.zeros(shape)], random_params=True)
    return [name for name, a in vision.CONV_ALGOS.items() if a.suits(h.layer.engine.g)]


def algo_cases(cases, ltype="Convolution"):
    """(shape, fields, algorithm) for every case and every algorithm that suits it."""
    return [pytest.param(shape, fields, name, id=f"{i}-{name}")
            for i, (shape, fields) in enumerate(cases) for name in conv_algos(shape, fields, ltype)]


def _conv_geometry(fields, d):
    k = fields.get("kernel_size", [fields.get("kernel_h"), fields.get("kernel_w")])
    return (as_list(k, d), as_list(fields.get("stride", [fields.get("stride_h", 1), fields.get("stride_w", 1)]), d),
            as_list(fields.get("pad", [fields.get("pad_h", 0), fields.get("pad_w", 0)]), d),
            as_list(fields.get("dilation", 1), d))


@pytest.mark.parametrize("shape,fields,algo", algo_cases(CONV_CASES))
def test_convolution_matches_reference(shape, fields, algo):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    d = len(shape) - 2
    k, stride, pad, dil = _conv_geometry(fields, d)
    g = fields.get("group", 1)
    w = rng.normal(size=(fields["num_output"], shape[1] // g, *k))
    bias = fields.get("bias_term", True)
    b = rng.normal(size=fields["num_output"]) if bias else None
    f = {"type": "Convolution", **fields, "algorithm": algo}
    h = LayerHarness(f, [x], params={"weight": w, **({"bias": b} if bias else {})})
    assert h.layer.algo == algo
    (y,) = h.forward()
    dy = rng.normal(size=y.shape)
    y_ref, dx_ref, dw_ref, db_ref = conv_reference(x, w, b, stride, pad, dil, g, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    (dx,), pg = h.backward([dy])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["weight"], dw_ref, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(pg["bias"], db_ref, rtol=1e-10, atol=1e-10)
    # a second pass on other data: nothing computed from the first may be reused
    x2 = rng.normal(size=shape)
    h.inputs[0][...] = x2
    (y2,) = h.forward()
    (dx2,), pg2 = h.backward([dy])
    y_ref, dx_ref, dw_ref, _ = conv_reference(x2, w, b, stride, pad, dil, g, dy)
    np.testing.assert_allclose(y2, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx2, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg2["weight"], dw_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape,fields", CONV_CASES[:10], ids=[str(i) for i in range(10)])
def test_default_algorithm(shape, fields):
    """Without a measurement (the test suite measures nothing) a layer takes the usual winner."""
    h = LayerHarness({"type": "Convolution", **fields}, [np.zeros(shape)], random_params=True)
    k, stride, pad, _ = _conv_geometry(fields, len(shape) - 2)
    pointwise = all(v == 1 for v in k) and all(s == 1 for s in stride) and not any(pad)
    assert h.layer.algo == ("gemm_1x1" if pointwise and np.prod(shape[2:]) >= 100 else "im2col_gemm")


def test_convolution_axis2_is_a_batch_of_batches():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 5, 6))          # axis 2: 6 images of 4 channels
    w, b = rng.normal(size=(3, 4, 2, 3)), rng.normal(size=3)
    h = LayerHarness({"type": "Convolution", "num_output": 3, "kernel_size": [2, 3], "axis": 2}, [x],
                     params={"weight": w, "bias": b})
    (y,) = h.forward()
    dy = rng.normal(size=y.shape)
    (dx,), pg = h.backward([dy])
    y_ref, dx_ref, dw_ref, db_ref = conv_reference(x.reshape(6, 4, 5, 6), w, b, [1, 1], [0, 0], [1, 1], 1,
                                                   dy.reshape(6, 3, 4, 4))
    np.testing.assert_allclose(y, y_ref.reshape(y.shape), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, dx_ref.reshape(x.shape), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["weight"], dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["bias"], db_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("algo", ["winograd", "patch_gemm", "im2col_gemm"])
def test_convolution_two_bottoms_share_weights_and_sum_their_grads(algo):
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(2, 3, 5, 5))
    w, b = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    f = {"type": "Convolution", "num_output": 4, "kernel_size": 3, "pad": 1, "top": ["y1", "y2"],
         "algorithm": algo}
    h = LayerHarness(f, [x1, x2], params={"weight": w, "bias": b})
    y1, y2 = h.forward()
    dy1, dy2 = rng.normal(size=y1.shape), rng.normal(size=y2.shape)
    (dx1, dx2), pg = h.backward([dy1, dy2])
    r1 = conv_reference(x1, w, b, [1, 1], [1, 1], [1, 1], 1, dy1)
    r2 = conv_reference(x2, w, b, [1, 1], [1, 1], [1, 1], 1, dy2)
    np.testing.assert_allclose(y1, r1[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(y2, r2[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx1, r1[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx2, r2[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["weight"], r1[2] + r2[2], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["bias"], r1[3] + r2[3], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ltype", ["Convolution", "Deconvolution"])
def test_chunked_batches_match_reference(ltype, monkeypatch):
    """Small column chunks: several chunks per batch and a short last one (7 images in chunks
    of 2), so the reuse of forward's columns in backward meets every chunk boundary."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 4, 6, 5))
    f = {"type": ltype, "num_output": 6, "kernel_size": 3, "pad": 1, "stride": 2, "group": 2}
    if ltype == "Convolution":
        w = rng.normal(size=(6, 2, 3, 3))
        rows, out = 4 * 9, 3 * 3
        ref = conv_reference
    else:
        w = rng.normal(size=(4, 3, 3, 3))
        rows, out = 6 * 9, 6 * 5
        ref = deconv_reference
    monkeypatch.setattr(vision, "COL_CHUNK_BYTES", 2 * rows * out * 8)
    b = rng.normal(size=6)
    h = LayerHarness(f, [x], params={"weight": w, "bias": b})
    assert h.layer.engine.nb == 2
    for it in range(2):   # a second iteration on new data: nothing stale may survive
        x = rng.normal(size=x.shape)
        h.inputs[0][...] = x
        (y,) = h.forward()
        dy = rng.normal(size=y.shape)
        (dx,), pg = h.backward([dy])
        y_ref, dx_ref, dw_ref, db_ref = ref(x, w, b, [2, 2], [1, 1], [1, 1], 2, dy)
        np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10, err_msg=f"iteration {it}")
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10, err_msg=f"iteration {it}")
        np.testing.assert_allclose(pg["weight"], dw_ref, rtol=1e-10, atol=1e-10, err_msg=f"iteration {it}")
        np.testing.assert_allclose(pg["bias"], db_ref, rtol=1e-10, atol=1e-10, err_msg=f"iteration {it}")


@pytest.mark.parametrize("ltype", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("algo,k,block", [("patch_gemm", 3, 600), ("patch_gemm", 3, 4000), ("winograd", 3, 2000),
                                          ("winograd", 3, 20000), ("winograd", 5, 3000), ("winograd", 5, 40000)])
def test_blocks_match_reference(ltype, algo, k, block, monkeypatch):
    """Small blocks for the channels-last algorithms: images cut into several blocks, and
    blocks holding several images (with a short last one), on 1 and 2 threads, so forward's
    reuse of its columns in backward and the per-thread sums meet every boundary."""
    from netspec.core.threads import set_threads
    from netspec.kernels.jit import get_num_threads

    monkeypatch.setattr(vision, "PATCH_BLOCK_BYTES", block)
    monkeypatch.setattr(vision, "WINOGRAD_BLOCK_BYTES", block)
    rng = np.random.default_rng(21)
    x = rng.normal(size=(7, 4, 6, 5))
    f = {"type": ltype, "num_output": 3, "kernel_size": k, "pad": k // 2, "algorithm": algo}
    w = rng.normal(size=(3, 4, k, k) if ltype == "Convolution" else (4, 3, k, k))
    b = rng.normal(size=3)
    ref = conv_reference if ltype == "Convolution" else deconv_reference
    before = get_num_threads()
    try:
        for threads in (1, 2):
            set_threads(threads)
            h = LayerHarness(f, [x], params={"weight": w, "bias": b})
            for it in range(2):
                xi = rng.normal(size=x.shape)
                h.inputs[0][...] = xi
                (y,) = h.forward()
                dy = rng.normal(size=y.shape)
                (dx,), pg = h.backward([dy])
                y_ref, dx_ref, dw_ref, db_ref = ref(xi, w, b, [1, 1], [k // 2] * 2, [1, 1], 1, dy)
                msg = f"threads {threads}, iteration {it}"
                np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10, err_msg=msg)
                np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10, err_msg=msg)
                np.testing.assert_allclose(pg["weight"], dw_ref, rtol=1e-10, atol=1e-10, err_msg=msg)
                np.testing.assert_allclose(pg["bias"], db_ref, rtol=1e-10, atol=1e-10, err_msg=msg)
    finally:
        set_threads(before)


@pytest.mark.parametrize("k", [3, 5])
def test_winograd_float32_matches_reference(k):
    """Winograd in float32 against the float64 reference loops, at float32 tolerance: the
    5x5 transforms scale by up to 5 and by sixths, so this is where rounding could show."""
    rng = np.random.default_rng(22)
    x = rng.normal(size=(4, 16, 12, 11)).astype(np.float32)
    w = (rng.normal(size=(8, 16, k, k)) / np.sqrt(16 * k * k)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    f = {"type": "Convolution", "num_output": 8, "kernel_size": k, "pad": k // 2, "algorithm": "winograd"}
    h = LayerHarness(f, [x], params={"weight": w, "bias": b}, dtype=np.float32)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape).astype(np.float32)
    (dx,), pg = h.backward([dy])
    refs = conv_reference(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), [1, 1],
                          [k // 2] * 2, [1, 1], 1, dy.astype(np.float64))
    for got, ref in zip((y, dx, pg["weight"], pg["bias"]), refs):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("ltype,stride,algo", [(t, s, a) for t in ("Convolution", "Deconvolution")
                                                for s, a in ((2, "im2col_gemm"), (2, "patch_gemm"),
                                                             (1, "winograd"), (1, "patch_gemm"))])
def test_backward_twice_without_forward(ltype, stride, algo):
    """Two backward passes with different top gradients and no forward between: the second
    must not reuse columns the first one computed from its gradient."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 2, 5, 5))
    h = LayerHarness({"type": ltype, "num_output": 3, "kernel_size": 3, "stride": stride, "algorithm": algo}, [x],
                     random_params=True)
    (y,) = h.forward()
    dy1, dy2 = rng.normal(size=y.shape), rng.normal(size=y.shape)
    g1, p1 = h.backward([dy1])
    g2, p2 = h.backward([dy2])
    h.forward()
    g2b, p2b = h.backward([dy2])
    np.testing.assert_allclose(g2[0], g2b[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p2["weight"], p2b["weight"], rtol=1e-12, atol=1e-12)
    assert not np.allclose(p1["weight"], p2["weight"])


def test_pointwise_and_im2col_algorithms_agree():
    """The 1x1 shortcut and the general path compute the same thing, in both directions."""
    from netspec.core.device import kernels

    rng = np.random.default_rng(6)
    g = vision.ConvShape(n=3, c=6, m=4, group=2, img=(10, 11), out=(10, 11), kernel=(1, 1), pad=(0, 0),
                         stride=(1, 1), dilation=(1, 1))
    x, w = rng.normal(size=(3, 6, 110)), rng.normal(size=(4, 3, 1, 1))
    dy = rng.normal(size=(3, 4, 110))
    results = []
    for algo in (vision.PointwiseGemm, vision.Im2colGemm):
        a = algo(g, np.float64, kernels("conv"))
        y, dx, dw, dw2 = np.empty((3, 4, 110)), np.empty_like(x), np.zeros_like(w), np.zeros_like(w)
        a.forward(x, w, y)
        a.backward(dy, w, dx, x, dw)
        a.forward(x, w, None, dy, dw2)
        results.append((y, dx, dw, dw2))
    for r1, r2 in zip(*results):
        np.testing.assert_allclose(r1, r2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][2], results[0][3], rtol=1e-12, atol=1e-12)
    assert vision.choose_conv_algo(g) == "gemm_1x1"
    small = vision.ConvShape(n=3, c=6, m=4, group=2, img=(4, 5), out=(4, 5), kernel=(1, 1), pad=(0, 0),
                             stride=(1, 1), dilation=(1, 1))
    assert vision.choose_conv_algo(small) == "im2col_gemm"   # too few columns per image


DECONV_CASES = [
    ((2, 4, 3, 4), {"num_output": 6, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2}),
    ((2, 3, 3, 3), {"num_output": 2, "kernel_size": 4, "stride": 2, "pad": 1, "bias_term": False}),
    ((1, 2, 4, 3), {"num_output": 3, "kernel_size": 3, "dilation": 2, "stride": 1, "pad": 2}),
    ((2, 4, 3, 3), {"num_output": 2, "kernel_size": 1}),
    ((2, 2, 5), {"num_output": 3, "kernel_size": 3, "stride": 3}),
    ((1, 2, 2, 3, 2), {"num_output": 2, "kernel_size": 2, "stride": [2, 1, 2], "pad": [0, 1, 0]}),
    ((2, 3, 5, 4), {"num_output": 4, "kernel_size": 3, "pad": 1}),        # winograd: stride 1, 3x3
    ((2, 3, 3, 4), {"num_output": 2, "kernel_size": 5, "pad": 2}),        # and 5x5
]


@pytest.mark.parametrize("shape,fields,algo", algo_cases(DECONV_CASES, "Deconvolution"))
def test_deconvolution_matches_reference(shape, fields, algo):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape)
    d = len(shape) - 2
    k, stride, pad, dil = _conv_geometry(fields, d)
    g = fields.get("group", 1)
    w = rng.normal(size=(shape[1], fields["num_output"] // g, *k))
    bias = fields.get("bias_term", True)
    b = rng.normal(size=fields["num_output"]) if bias else None
    h = LayerHarness({"type": "Deconvolution", **fields, "algorithm": algo}, [x],
                     params={"weight": w, **({"bias": b} if bias else {})})
    assert h.layer.algo == algo
    (y,) = h.forward()
    dy = rng.normal(size=y.shape)
    y_ref, dx_ref, dw_ref, db_ref = deconv_reference(x, w, b, stride, pad, dil, g, dy)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    (dx,), pg = h.backward([dy])
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pg["weight"], dw_ref, rtol=1e-10, atol=1e-10)
    if bias:
        np.testing.assert_allclose(pg["bias"], db_ref, rtol=1e-10, atol=1e-10)


def test_deconvolution_is_the_transpose_of_convolution():
    """<deconv(x), y> == <x, conv(y)> with the same weight and geometry (no bias)."""
    rng = np.random.default_rng(8)
    geo = {"kernel_size": 3, "stride": 2, "pad": 1, "group": 2, "bias_term": False}
    x = rng.normal(size=(2, 4, 3, 4))
    w = rng.normal(size=(4, 3, 3, 3))
    (yd,) = LayerHarness({"type": "Deconvolution", "num_output": 6, **geo}, [x], params={"weight": w}).forward()
    z = rng.normal(size=yd.shape)
    (yc,) = LayerHarness({"type": "Convolution", "num_output": 4, **geo}, [z], params={"weight": w}).forward()
    assert yc.shape == x.shape
    np.testing.assert_allclose(np.sum(yd * z), np.sum(x * yc), rtol=1e-12)


# ---- Im2col ------------------------------------------------------------------------------------

def im2col_reference(x, k, pad, stride, dil):
    """Caffe's layout, element by element: row (c kh + i) kw + j, column (oy, ox)."""
    n, c, hh, ww = x.shape
    oh = (hh + 2 * pad[0] - (dil[0] * (k[0] - 1) + 1)) // stride[0] + 1
    ow = (ww + 2 * pad[1] - (dil[1] * (k[1] - 1) + 1)) // stride[1] + 1
    col = np.zeros((n, c * k[0] * k[1], oh, ow))
    for a in range(n):
        for ch in range(c):
            for i in range(k[0]):
                for j in range(k[1]):
                    r = (ch * k[0] + i) * k[1] + j
                    for oy in range(oh):
                        for ox in range(ow):
                            iy = oy * stride[0] - pad[0] + i * dil[0]
                            ix = ox * stride[1] - pad[1] + j * dil[1]
                            if 0 <= iy < hh and 0 <= ix < ww:
                                col[a, r, oy, ox] = x[a, ch, iy, ix]
    return col


def col2im_reference(dcol, shape, k, pad, stride, dil):
    n, c, hh, ww = shape
    dx = np.zeros(shape)
    _, _, oh, ow = dcol.shape
    for a, ch, i, j, oy, ox in itertools.product(range(n), range(c), range(k[0]), range(k[1]), range(oh), range(ow)):
        iy = oy * stride[0] - pad[0] + i * dil[0]
        ix = ox * stride[1] - pad[1] + j * dil[1]
        if 0 <= iy < hh and 0 <= ix < ww:
            dx[a, ch, iy, ix] += dcol[a, (ch * k[0] + i) * k[1] + j, oy, ox]
    return dx


@pytest.mark.parametrize("fields,k,pad,stride,dil", [
    ({"kernel_size": 3, "pad": 1, "stride": 2}, [3, 3], [1, 1], [2, 2], [1, 1]),
    ({"kernel_h": 2, "kernel_w": 3, "dilation": 2, "pad_h": 2, "pad_w": 1, "stride_h": 1, "stride_w": 3},
     [2, 3], [2, 1], [1, 3], [2, 2]),
    ({"kernel_size": 1}, [1, 1], [0, 0], [1, 1], [1, 1]),
])
def test_im2col_matches_reference(fields, k, pad, stride, dil):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 3, 6, 7))
    ref = im2col_reference(x, k, pad, stride, dil)
    h = LayerHarness({"type": "Im2col", **fields}, [x])
    (y,) = h.forward()
    np.testing.assert_array_equal(y, ref)
    dcol = rng.normal(size=ref.shape)
    (dx,), _ = h.backward([dcol])
    np.testing.assert_allclose(dx, col2im_reference(dcol, x.shape, k, pad, stride, dil), rtol=1e-12, atol=1e-12)


def test_im2col_nd_matches_convolution_columns():
    """3-D: the columns contracted with a weight give the convolution (same row order)."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 2, 4, 3, 5))
    geo = {"kernel_size": [2, 3, 2], "pad": [1, 1, 0], "stride": [2, 1, 1], "dilation": [1, 1, 2]}
    (col,) = LayerHarness({"type": "Im2col", **geo}, [x]).forward()
    w = rng.normal(size=(3, 2, 2, 3, 2))
    (y,) = LayerHarness({"type": "Convolution", "num_output": 3, "bias_term": False, **geo}, [x],
                        params={"weight": w}).forward()
    np.testing.assert_allclose(np.einsum("mr,nr...->nm...", w.reshape(3, -1), col), y, rtol=1e-12, atol=1e-12)


# ---- pooling references ------------------------------------------------------------------------

def pool_reference(x, dy, pool, k, pad, stride, out):
    """MAX or AVE pooling, element by element as Caffe's CPU code; returns y, argmax, dx."""
    n, c, hh, ww = x.shape
    oh, ow = out
    y = np.zeros((n, c, oh, ow))
    arg = np.full((n, c, oh, ow), -1)
    dx = np.zeros_like(x)
    for a, ch, py, px in itertools.product(range(n), range(c), range(oh), range(ow)):
        hs, ws = py * stride[0] - pad[0], px * stride[1] - pad[1]
        if pool == "MAX":
            he, we = min(hs + k[0], hh), min(ws + k[1], ww)
            hs, ws = max(hs, 0), max(ws, 0)
            best, idx = -FLT_MAX, -1
            for i in range(hs, he):
                for j in range(ws, we):
                    if x[a, ch, i, j] > best:
                        best, idx = x[a, ch, i, j], i * ww + j
            y[a, ch, py, px], arg[a, ch, py, px] = best, idx
            if idx >= 0:
                dx[a, ch, idx // ww, idx % ww] += dy[a, ch, py, px]
        else:
            he, we = min(hs + k[0], hh + pad[0]), min(ws + k[1], ww + pad[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, hh), min(we, ww)
            y[a, ch, py, px] = x[a, ch, hs:he, ws:we].sum() / size
            dx[a, ch, hs:he, ws:we] += dy[a, ch, py, px] / size
    return y, arg, dx


POOL_CASES = [
    # (shape, fields, k, pad, stride)
    ((2, 3, 6, 5), {"pool": "MAX", "kernel_size": 3, "stride": 2}, [3, 3], [0, 0], [2, 2]),
    ((2, 3, 6, 5), {"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}, [3, 3], [1, 1], [2, 2]),
    ((2, 2, 7, 6), {"pool": "MAX", "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3, "pad_h": 2,
                    "pad_w": 1}, [3, 2], [2, 1], [2, 3]),
    ((2, 3, 6, 5), {"pool": "MAX", "kernel_size": 3, "stride": 2, "round_mode": "FLOOR"}, [3, 3], [0, 0], [2, 2]),
    ((2, 3, 6, 5), {"pool": "AVE", "kernel_size": 3, "stride": 2}, [3, 3], [0, 0], [2, 2]),
    ((2, 3, 6, 5), {"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}, [3, 3], [1, 1], [2, 2]),
    ((2, 2, 7, 6), {"pool": "AVE", "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3, "pad_h": 2,
                    "pad_w": 1}, [3, 2], [2, 1], [2, 3]),
    ((2, 3, 7, 7), {"pool": "AVE", "kernel_size": 4, "stride": 3, "pad": 2, "round_mode": "FLOOR"}, [4, 4],
     [2, 2], [3, 3]),
    ((2, 3, 5, 4), {"pool": "MAX", "global_pooling": True}, [5, 4], [0, 0], [1, 1]),
    ((2, 3, 5, 4), {"pool": "AVE", "global_pooling": True}, [5, 4], [0, 0], [1, 1]),
]


@pytest.mark.parametrize("shape,fields,k,pad,stride", POOL_CASES, ids=[str(i) for i in range(len(POOL_CASES))])
def test_pooling_matches_reference(shape, fields, k, pad, stride):
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape)
    f = {"type": "Pooling", **fields}
    h = LayerHarness(f, [x])
    (y,) = h.forward()
    dy = rng.normal(size=y.shape)
    (dx,), _ = h.backward([dy])
    y_ref, arg_ref, dx_ref = pool_reference(x, dy, fields["pool"], k, pad, stride, y.shape[2:])
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    if fields["pool"] == "MAX":
        np.testing.assert_array_equal(h.layer.index, arg_ref)


def test_max_pooling_ties_first_index_wins_and_mask_top():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = 5.0          # a tie inside the first window
    x[0, 0, 2:, 2:] = -1.0                       # an all-equal window: its first element wins
    h = LayerHarness({"type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2, "top": ["p", "mask"]}, [x])
    y, mask = h.forward()
    np.testing.assert_array_equal(y[0, 0], [[5, 0], [0, -1]])
    np.testing.assert_array_equal(mask[0, 0], [[4, 2], [8, 10]])    # h * W + w, as floats
    assert mask.dtype == np.float64
    dy = np.ones((1, 1, 2, 2))
    (dx,), _ = h.backward([dy, np.zeros_like(mask)])
    expect = np.zeros((4, 4))
    for idx in (4, 2, 8, 10):
        expect[idx // 4, idx % 4] = 1
    np.testing.assert_array_equal(dx[0, 0], expect)


def test_max_pooling_padding_never_wins():
    x = -np.ones((1, 1, 3, 3))
    (y,) = LayerHarness({"type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2, "pad": 1}, [x]).forward()
    np.testing.assert_array_equal(y, -np.ones((1, 1, 2, 2)))   # zeros in the padding do not count


def test_cifar_pool_sizes_ceil_and_floor():
    """CIFAR-10 quick: 32 -> pool(3, 2) is 16 with Caffe's ceil, 15 with floor; then 16 -> 8 -> 4."""
    x = np.random.default_rng(12).normal(size=(1, 2, 32, 32))
    for mode, size in (("CEIL", 16), ("FLOOR", 15)):
        h = LayerHarness({"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2, "round_mode": mode}, [x])
        (y,) = h.forward()
        assert y.shape == (1, 2, size, size)
        # the last ceil-mode window hangs over the edge: it holds only the last two rows/columns
        if mode == "CEIL":
            np.testing.assert_allclose(y[0, :, -1, -1], x[0, :, 30:, 30:].max(axis=(1, 2)))
    sizes = []
    s = 32
    for _ in range(3):
        (y,) = LayerHarness({"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2},
                            [np.zeros((1, 1, s, s))]).forward()
        s = y.shape[2]
        sizes.append(s)
    assert sizes == [16, 8, 4]


def test_pad_clipping_rule():
    """H=3, k=2, stride 2, pad 1: ceil((3+2-2)/2)+1 = 3, but the third window would start at 3,
    in the padding, so Caffe drops it: 2 outputs."""
    x = np.arange(9, dtype=float).reshape(1, 1, 3, 3)
    h = LayerHarness({"type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2, "pad": 1}, [x])
    (y,) = h.forward()
    np.testing.assert_array_equal(y[0, 0], [[0, 2], [6, 8]])
    (y,) = LayerHarness({"type": "Pooling", "pool": "AVE", "kernel_size": 2, "stride": 2, "pad": 1}, [x]).forward()
    np.testing.assert_allclose(y[0, 0], [[0 / 4, (1 + 2) / 4], [(3 + 6) / 4, (4 + 5 + 7 + 8) / 4]])


def test_ave_divisor_counts_padding_but_not_overhang():
    """H=W=4, k=3, stride 2, pad 1 -> 3x3 outputs; the last window [3, 6) is clipped to
    [3, 5) = H + pad for its divisor (2 rows), and to [3, 4) for its sum (1 row)."""
    x = np.ones((1, 1, 4, 4))
    (y,) = LayerHarness({"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}, [x]).forward()
    expect = np.array([[4 / 9, 6 / 9, 2 / 6],
                       [6 / 9, 9 / 9, 3 / 6],
                       [2 / 6, 3 / 6, 1 / 4]])
    np.testing.assert_allclose(y[0, 0], expect, rtol=1e-14)


def test_window_past_the_image_without_padding():
    """Caffe only drops a last window that starts in the padding when pad > 0; with pad 0 and a
    stride larger than the kernel, ceil mode keeps a window that starts past the image (H=5,
    k=1, stride 3: starts 0, 3, 6).  Caffe outputs -FLT_MAX (MAX) or -0 (AVE) there and its
    backward writes out of bounds; netspec keeps the shape and gives 0 with no gradient."""
    x = np.arange(25, dtype=float).reshape(1, 1, 5, 5) + 1
    for pool in ("MAX", "AVE"):
        h = LayerHarness({"type": "Pooling", "pool": pool, "kernel_size": 1, "stride": 3}, [x])
        (y,) = h.forward()
        assert y.shape == (1, 1, 3, 3)
        np.testing.assert_array_equal(y[0, 0], [[1, 4, 0], [16, 19, 0], [0, 0, 0]])
        (dx,), _ = h.backward([np.ones_like(y)])
        assert dx.sum() == 4


# ---- stochastic pooling ------------------------------------------------------------------------

def test_stochastic_test_phase_formula():
    rng = np.random.default_rng(13)
    x = rng.uniform(0, 1, size=(2, 3, 6, 5))
    x[0, 0, :3, :3] = 0.0                             # an all-zero window gives 0, not NaN
    (y,) = LayerHarness({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 3, "stride": 2}, [x],
                        phase="TEST").forward()
    assert y.shape == (2, 3, 3, 2)
    ref = np.zeros_like(y)
    for a, c, py, px in itertools.product(range(2), range(3), range(3), range(2)):
        win = x[a, c, py * 2:py * 2 + 3, px * 2:px * 2 + 3]
        ref[a, c, py, px] = (win ** 2).sum() / (FLT_MIN + win.sum())
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    assert y[0, 0, 0, 0] == 0.0


def test_stochastic_test_phase_has_no_backward():
    x = np.random.default_rng(14).uniform(0.1, 1, size=(1, 1, 4, 4))
    h = LayerHarness({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 2, "stride": 2}, [x], phase="TEST")
    (y,) = h.forward()
    with pytest.raises(GraphError, match="no backward in the TEST phase"):
        h.backward([np.ones_like(y)])


def test_stochastic_train_matches_reference_sampler():
    """TRAIN: with the uniforms the layer drew, the sample is the first element whose running
    sum reaches u * sum (Caffe's StoPoolForwardTrain); the gradient goes to it."""
    rng = np.random.default_rng(15)
    x = rng.uniform(0.05, 1, size=(2, 2, 7, 6))
    h = LayerHarness({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 3, "stride": 2}, [x])
    (y,) = h.forward()
    u = h.layer.uniform.copy()
    dy = rng.normal(size=y.shape)
    (dx,), _ = h.backward([dy])
    ref_y, ref_dx = np.zeros_like(y), np.zeros_like(x)
    for a, c, py, px in itertools.product(*map(range, y.shape)):
        hs, ws = py * 2, px * 2
        he, we = min(hs + 3, 7), min(ws + 3, 6)
        cells = [(i, j) for i in range(hs, he) for j in range(ws, we)]
        thres = u[a, c, py, px] * sum(x[a, c, i, j] for i, j in cells)
        run_sum = 0.0
        for i, j in cells:
            run_sum += x[a, c, i, j]
            if run_sum >= thres:
                break
        ref_y[a, c, py, px] = x[a, c, i, j]
        ref_dx[a, c, i, j] += dy[a, c, py, px]
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12, atol=1e-12)


def test_stochastic_train_samples_in_proportion_to_values():
    """One 2x2 window holding 1, 2, 3, 4, sampled 4000 times: frequencies ~ 0.1 .. 0.4."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]]).repeat(4000, axis=0)
    h = LayerHarness({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 2, "stride": 2}, [x])
    (y,) = h.forward()
    freq = np.array([(y == v).mean() for v in (1, 2, 3, 4)])
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)
    # the draws come from the layer's generator: the same seed gives the same samples
    (y2,) = h.forward()
    np.testing.assert_array_equal(y, y2)
    (y3,) = h.forward(reset_rng=False)
    assert not np.array_equal(y, y3)


# ---- PyTorch ------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_CONV = [
    # (shape, num_output, kernel, stride, pad, dilation, group)
    ((3, 4, 9, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 6, 10, 9), 4, (3, 2), (2, 1), (1, 0), (2, 1), 2),
    ((2, 4, 7, 7), 4, (5, 5), (1, 1), (2, 2), (1, 1), 4),
    ((2, 8, 6, 5), 6, (1, 1), (1, 1), (0, 0), (1, 1), 2),
    ((64, 20, 12, 12), 50, (5, 5), (1, 1), (0, 0), (1, 1), 1),        # LeNet conv2
    ((4, 32, 16, 16), 32, (5, 5), (1, 1), (2, 2), (1, 1), 1),          # CIFAR-10 conv2
    ((4, 16, 10, 9), 24, (3, 3), (1, 1), (1, 1), (1, 1), 1),
]


def _t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float32), requires_grad=grad)


def _torch_conv_cases():
    out = []
    for i, case in enumerate(TORCH_CONV):
        shape, m, k, s, p, d, g = case
        fields = {"num_output": m, "kernel_size": list(k), "stride": list(s), "pad": list(p), "dilation": list(d),
                  "group": g}
        out += [pytest.param(case, name, id=f"{i}-{name}") for name in conv_algos(shape, fields)]
    return out


@pytest.mark.parametrize("case,algo", _torch_conv_cases())
def test_convolution_matches_torch(case, algo):
    shape, m, k, s, p, d, g = case
    rng = np.random.default_rng(16)
    x = rng.normal(size=shape).astype(np.float32)
    w = (rng.normal(size=(m, shape[1] // g, *k)) / np.sqrt(np.prod(k) * shape[1] / g)).astype(np.float32)
    b = rng.normal(size=m).astype(np.float32)
    f = {"type": "Convolution", "num_output": m, "kernel_size": list(k), "stride": list(s), "pad": list(p),
         "dilation": list(d), "group": g, "algorithm": algo}
    h = LayerHarness(f, [x], params={"weight": w, "bias": b}, dtype=np.float32)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape).astype(np.float32)
    (dx,), pg = h.backward([dy])
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    yt = F.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d, groups=g)
    yt.backward(_t(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pg["weight"], wt.grad.numpy(), rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(pg["bias"], bt.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dims", [1, 3])
def test_convolution_nd_matches_torch(dims):
    rng = np.random.default_rng(17)
    shape = (2, 4) + (9, 7, 6)[:dims] if dims == 3 else (2, 4, 11)
    k, s, p, d = ([3, 2, 3], [2, 1, 1], [1, 0, 2], [1, 2, 1]) if dims == 3 else ([3], [2], [2], [2])
    x = rng.normal(size=shape).astype(np.float32)
    w = (rng.normal(size=(6, 2, *k)) * 0.3).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    f = {"type": "Convolution", "num_output": 6, "kernel_size": k, "stride": s, "pad": p, "dilation": d, "group": 2}
    h = LayerHarness(f, [x], params={"weight": w, "bias": b}, dtype=np.float32)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape).astype(np.float32)
    (dx,), pg = h.backward([dy])
    conv = F.conv3d if dims == 3 else F.conv1d
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    yt = conv(xt, wt, bt, stride=s, padding=p, dilation=d, groups=2)
    yt.backward(_t(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pg["weight"], wt.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(pg["bias"], bt.grad.numpy(), rtol=1e-4, atol=1e-3)


TORCH_DECONV = [
    # (shape, num_output, kernel, stride, pad, dilation, group)
    ((2, 4, 5, 6), 6, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    ((2, 3, 4, 4), 2, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    ((1, 2, 5, 3), 3, (3, 2), (1, 3), (2, 0), (2, 1), 1),
]


@pytest.mark.parametrize("case", TORCH_DECONV, ids=[str(i) for i in range(len(TORCH_DECONV))])
def test_deconvolution_matches_torch(case):
    shape, m, k, s, p, d, g = case
    rng = np.random.default_rng(18)
    x = rng.normal(size=shape).astype(np.float32)
    w = (rng.normal(size=(shape[1], m // g, *k)) * 0.3).astype(np.float32)   # torch's layout too
    b = rng.normal(size=m).astype(np.float32)
    f = {"type": "Deconvolution", "num_output": m, "kernel_size": list(k), "stride": list(s), "pad": list(p),
         "dilation": list(d), "group": g}
    h = LayerHarness(f, [x], params={"weight": w, "bias": b}, dtype=np.float32)
    (y,) = h.forward()
    dy = rng.normal(size=y.shape).astype(np.float32)
    (dx,), pg = h.backward([dy])
    xt, wt, bt = _t(x, True), _t(w, True), _t(b, True)
    yt = F.conv_transpose2d(xt, wt, bt, stride=s, padding=p, dilation=d, groups=g)
    yt.backward(_t(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pg["weight"], wt.grad.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(pg["bias"], bt.grad.numpy(), rtol=1e-4, atol=1e-3)


TORCH_POOL = [
    # (shape, pool, kernel, stride, pad, ceil) where torch and Caffe agree: Caffe's ceil rule
    # equals torch's ceil_mode whenever the last window starts inside the image or pad > 0, and
    # torch's count_include_pad divisor is Caffe's (clipped to [-pad, H + pad)).
    ((2, 3, 24, 24), "MAX", (2, 2), (2, 2), (0, 0), True),             # LeNet
    ((2, 3, 32, 32), "MAX", (3, 3), (2, 2), (0, 0), True),             # CIFAR-10 quick
    ((2, 3, 7, 6), "MAX", (3, 3), (2, 2), (1, 1), True),
    ((2, 3, 7, 6), "MAX", (3, 2), (2, 1), (1, 1), False),
    ((2, 3, 16, 16), "AVE", (3, 3), (2, 2), (0, 0), True),             # CIFAR-10 pool3
    ((2, 3, 7, 6), "AVE", (3, 3), (2, 2), (1, 1), True),
    ((2, 3, 8, 9), "AVE", (4, 3), (3, 2), (2, 1), False),
    ((2, 3, 5, 5), "AVE", (2, 2), (2, 2), (1, 1), True),
]


@pytest.mark.parametrize("case", TORCH_POOL, ids=[str(i) for i in range(len(TORCH_POOL))])
def test_pooling_matches_torch(case):
    shape, pool, k, s, p, ceil = case
    rng = np.random.default_rng(19)
    x = rng.normal(size=shape).astype(np.float32)
    f = {"type": "Pooling", "pool": pool, "kernel_size": list(k), "stride": list(s), "pad": list(p),
         "round_mode": "CEIL" if ceil else "FLOOR"}
    if pool == "MAX":
        f["top"] = ["p", "mask"]
    h = LayerHarness(f, [x], dtype=np.float32)
    tops = h.forward()
    dy = rng.normal(size=tops[0].shape).astype(np.float32)
    (dx,), _ = h.backward([dy] + [np.zeros_like(t) for t in tops[1:]])
    xt = _t(x, True)
    if pool == "MAX":
        yt, idx = F.max_pool2d(xt, k, s, p, ceil_mode=ceil, return_indices=True)
        np.testing.assert_array_equal(tops[1], idx.numpy().astype(np.float32))
    else:
        yt = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil, count_include_pad=True)
    yt.backward(_t(dy))
    assert tops[0].shape == tuple(yt.shape)
    np.testing.assert_allclose(tops[0], yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_global_pooling_matches_torch():
    rng = np.random.default_rng(20)
    x = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    for pool, ref in (("MAX", x.max(axis=(2, 3), keepdims=True)), ("AVE", x.mean(axis=(2, 3), keepdims=True))):
        (y,) = LayerHarness({"type": "Pooling", "pool": pool, "global_pooling": True}, [x], dtype=np.float32).forward()
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    (y,) = LayerHarness({"type": "Pooling", "pool": "AVE", "global_pooling": True}, [x], dtype=np.float32).forward()
    np.testing.assert_allclose(y, F.adaptive_avg_pool2d(_t(x), 1).numpy(), rtol=1e-6, atol=1e-6)
