"""Loss layers and Accuracy against plain NumPy loop references, Caffe's documented values and
PyTorch (where torch computes exactly the same function).

Every backward runs with a loss weight other than 1 in the top gradient, since the Net seeds the
loss top's gradient with the weight and the layers scale by it.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from netspec.errors import DataError
from netspec.data.blobproto import parse_blobproto
from netspec.testing import LayerHarness

LW = 2.5  # the loss weight in the top's gradient
NORMS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def run(fields, bottoms, lw=LW, dtype=np.float64):
    """(loss, bottom grads, other tops) of one forward and backward."""
    h = LayerHarness(fields, bottoms, dtype=dtype)
    tops = h.forward()
    grads = [np.full(t.shape, lw) if j == 0 else np.zeros(t.shape) for j, t in enumerate(tops)]
    bgrads, _ = h.backward(grads) if h.layer.differentiable else (None, None)
    return float(tops[0]), bgrads, tops[1:]


def normalizer(mode, outer, inner, valid):
    z = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(z))


def labelled(rng, n, c, inner=(), ignore=None, frac=0.3):
    x = rng.normal(size=(n, c) + inner) * 2
    lab = rng.integers(0, c, size=(n,) + inner).astype(np.float64)
    if ignore is not None:
        lab[rng.random(lab.shape) < frac] = ignore
    return x, lab


# ---- SoftmaxWithLoss ------------------------------------------------------------------------
def softmax_loss_ref(x, lab, mode="VALID", ignore=None, lw=LW):
    """Loops over (n, position): softmax over axis 1, -log max(p[label], FLT_MIN)."""
    n, c = x.shape[:2]
    inner = x.shape[2:]
    loss, valid = 0.0, 0
    dx = np.zeros_like(x)
    for i in range(n):
        for pos in np.ndindex(*inner):
            col = x[(i, slice(None)) + pos]
            p = np.exp(col - col.max())
            p /= p.sum()
            label = int(lab[(i,) + pos])
            if ignore is not None and label == ignore:
                continue
            valid += 1
            loss -= np.log(max(p[label], np.finfo(np.float32).tiny))
            g = p.copy()
            g[label] -= 1
            dx[(i, slice(None)) + pos] = g
    z = normalizer(mode, n, int(np.prod(inner)), valid)
    return loss / z, dx * lw / z


@pytest.mark.parametrize("mode", NORMS)
@pytest.mark.parametrize("inner", [(), (3, 2)])
def test_softmax_loss_normalizations_with_ignore(mode, inner):
    rng = np.random.default_rng(0)
    x, lab = labelled(rng, 4, 5, inner, ignore=3)
    loss, (dx, _), _ = run({"type": "SoftmaxWithLoss", "ignore_label": 3, "normalization": mode}, [x, lab])
    rl, rdx = softmax_loss_ref(x, lab, mode, ignore=3)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-14)


def test_softmax_loss_documented_normalizer_values():
    # 2 items x 3 positions, 2 of the 6 labels ignored: FULL 6, VALID 4, BATCH_SIZE 2, NONE 1
    x = np.zeros((2, 4, 3))  # uniform probabilities: each counted position costs log 4
    lab = np.array([[0, 255, 1], [2, 3, 255]], dtype=np.float64)
    for mode, z in (("FULL", 6), ("VALID", 4), ("BATCH_SIZE", 2), ("NONE", 1)):
        loss, _, _ = run({"type": "SoftmaxWithLoss", "ignore_label": 255, "normalization": mode}, [x, lab], lw=1)
        np.testing.assert_allclose(loss, 4 * np.log(4) / z, rtol=1e-12, err_msg=mode)
    # normalize: false (deprecated) means BATCH_SIZE; normalize: true means VALID
    loss, _, _ = run({"type": "SoftmaxWithLoss", "ignore_label": 255, "normalize": False}, [x, lab])
    np.testing.assert_allclose(loss, 4 * np.log(4) / 2, rtol=1e-12)
    loss, _, _ = run({"type": "SoftmaxWithLoss", "ignore_label": 255, "normalize": True}, [x, lab])
    np.testing.assert_allclose(loss, 4 * np.log(4) / 4, rtol=1e-12)


def test_softmax_loss_all_ignored_clamps_normalizer():
    x = np.random.default_rng(1).normal(size=(3, 4))
    loss, (dx, _), _ = run({"type": "SoftmaxWithLoss", "ignore_label": 1}, [x, np.ones(3)])
    assert loss == 0.0 and not dx.any()


def test_softmax_loss_second_top_is_probabilities():
    x, lab = labelled(np.random.default_rng(2), 3, 4)
    _, _, (prob,) = run({"type": "SoftmaxWithLoss", "top": ["loss", "prob"]}, [x, lab])
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(prob, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("mode,reduction", [("VALID", "mean"), ("NONE", "sum"), ("FULL", "sum"),
                                            ("BATCH_SIZE", "sum")])
def test_softmax_loss_matches_torch_cross_entropy(mode, reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, lab = labelled(rng, 4, 6, (3,), ignore=5)
    x32 = x.astype(np.float32)
    loss, (dx, _), _ = run({"type": "SoftmaxWithLoss", "ignore_label": 5, "normalization": mode}, [x32, lab],
                           dtype=np.float32)
    tx = torch.tensor(x32, requires_grad=True)
    t = torch.nn.functional.cross_entropy(tx, torch.tensor(lab, dtype=torch.long), ignore_index=5,
                                          reduction=reduction)
    if mode == "FULL":
        t = t / lab.size
    elif mode == "BATCH_SIZE":
        t = t / lab.shape[0]
    (t * LW).backward()
    np.testing.assert_allclose(loss, t.item(), rtol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-6)


# ---- SigmoidCrossEntropyLoss ----------------------------------------------------------------
def sce_ref(x, t, mode="BATCH_SIZE", ignore=None, lw=LW):
    n = x.shape[0]
    xf, tf = x.reshape(n, -1), t.reshape(n, -1)
    loss, valid = 0.0, 0
    dx = np.zeros_like(xf)
    for i in range(n):
        for j in range(xf.shape[1]):
            if ignore is not None and int(tf[i, j]) == ignore:  # Caffe truncates the target
                continue
            v, target = xf[i, j], tf[i, j]
            # -[t log s + (1 - t) log(1 - s)], written with logaddexp so it stays finite
            loss += target * np.logaddexp(0, -v) + (1 - target) * np.logaddexp(0, v)
            dx[i, j] = np.exp(-np.logaddexp(0, -v)) - target  # sigmoid(v) without overflow
            valid += 1
    z = normalizer(mode, n, xf.shape[1], valid)
    return loss / z, (dx * lw / z).reshape(x.shape)


@pytest.mark.parametrize("fields,mode", [
    ({}, "BATCH_SIZE"),
    ({"normalize": True}, "VALID"),
    ({"normalize": False}, "BATCH_SIZE"),
    *[({"normalization": m}, m) for m in NORMS],
])
def test_sigmoid_cross_entropy(fields, mode):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 4)) * 3
    t = rng.integers(0, 2, size=(3, 8)).astype(np.float64)
    t[rng.random(t.shape) < 0.3] = -1
    loss, (dx, _), _ = run({"type": "SigmoidCrossEntropyLoss", "ignore_label": -1, **fields}, [x, t])
    rl, rdx = sce_ref(x, t, mode, ignore=-1)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-14)


def test_sigmoid_cross_entropy_soft_targets_and_extremes():
    x = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    t = np.array([[0.0, 0.25, 0.5, 1.0, 0.3]])
    loss, (dx, _), _ = run({"type": "SigmoidCrossEntropyLoss"}, [x, t])
    rl, rdx = sce_ref(x, t)
    assert np.isfinite(loss) and np.isfinite(dx).all()
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-15)  # sigmoid(30) - 1 cancels in any form


def test_sigmoid_cross_entropy_ignore_truncates_targets():
    # Caffe compares static_cast<int>(target) with ignore_label, so 0.7 counts as label 0
    x = np.array([[1.0, -1.0, 2.0]])
    t = np.array([[0.7, 1.0, 0.0]])
    loss, (dx, _), _ = run({"type": "SigmoidCrossEntropyLoss", "ignore_label": 0, "normalization": "VALID"}, [x, t])
    assert dx[0, 0] == 0.0 and dx[0, 2] == 0.0 and dx[0, 1] != 0.0
    np.testing.assert_allclose(loss, np.logaddexp(0, 1.0), rtol=1e-12)


@pytest.mark.parametrize("mode", ["BATCH_SIZE", "VALID", "FULL", "NONE"])
def test_sigmoid_cross_entropy_matches_torch(mode):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(4, 6)) * 3).astype(np.float32)
    t = rng.random((4, 6))
    t[rng.random(t.shape) < 0.25] = -1
    keep = t != -1
    loss, (dx, _), _ = run({"type": "SigmoidCrossEntropyLoss", "ignore_label": -1, "normalization": mode}, [x, t],
                           dtype=np.float32)
    tx = torch.tensor(x, requires_grad=True)
    per = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(t, dtype=torch.float32),
                                                               weight=torch.tensor(keep, dtype=torch.float32),
                                                               reduction="sum")
    z = normalizer(mode, 4, 6, keep.sum())
    (per / z * LW).backward()
    np.testing.assert_allclose(loss, per.item() / z, rtol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-6)


# ---- EuclideanLoss --------------------------------------------------------------------------
def test_euclidean_both_bottoms():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 6))
    loss, (da, db), _ = run({"type": "EuclideanLoss"}, [a, b])
    af = a.reshape(4, 6)
    rl = sum((af[i, j] - b[i, j]) ** 2 for i in range(4) for j in range(6)) / (2 * 4)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(da, (LW * (af - b) / 4).reshape(a.shape), rtol=1e-12)
    np.testing.assert_allclose(db, -LW * (af - b) / 4, rtol=1e-12)


def test_euclidean_matches_torch_mse():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    loss, (da, db), _ = run({"type": "EuclideanLoss"}, [a, b], dtype=np.float32)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    t = torch.nn.functional.mse_loss(ta, tb, reduction="sum") / (2 * 5)
    (t * LW).backward()
    np.testing.assert_allclose(loss, t.item(), rtol=1e-5)
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-5, atol=1e-7)


# ---- HingeLoss ------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge(norm):
    rng = np.random.default_rng(8)
    x, lab = labelled(rng, 6, 4)
    x = x / 2
    loss, (dx, _), _ = run({"type": "HingeLoss", "norm": norm}, [x, lab])
    n, k = x.shape
    rl, rdx = 0.0, np.zeros_like(x)
    for i in range(n):
        for j in range(k):
            d = 1.0 if j == int(lab[i]) else -1.0
            s = max(0.0, 1 - d * x[i, j])
            rl += s if norm == "L1" else s * s
            ds = (1.0 if s > 0 else 0.0) if norm == "L1" else 2 * s
            rdx[i, j] = -d * ds * LW / n
    np.testing.assert_allclose(loss, rl / n, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12)


def test_hinge_rejects_out_of_range_labels():
    with pytest.raises(DataError, match="label 4 at position 1"):
        run({"type": "HingeLoss"}, [np.zeros((2, 4)), np.array([0.0, 4.0])])


# ---- ContrastiveLoss ------------------------------------------------------------------------
def contrastive_ref(a, b, y, margin, legacy, lw=LW):
    n = a.shape[0]
    af, bf = a.reshape(n, -1), b.reshape(n, -1)
    loss, da = 0.0, np.zeros_like(af)
    for i in range(n):
        diff = af[i] - bf[i]
        d2 = float(diff @ diff)
        d = np.sqrt(d2)
        if int(y.reshape(-1)[i]):
            loss += d2
            da[i] = lw / n * diff
        elif legacy:
            loss += max(margin - d2, 0.0)
            if margin - d2 > 0:
                da[i] = -lw / n * diff
        else:
            loss += max(margin - d, 0.0) ** 2
            if margin - d > 0:
                da[i] = -lw / n * (margin - d) / (d + 1e-4) * diff  # Caffe's 1e-4 in the denominator
    return loss / (2 * n), da.reshape(a.shape)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 1, 1)])
def test_contrastive(legacy, shape):
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=shape) * 0.6, rng.normal(size=shape) * 0.6
    y = np.array([1, 0, 0, 1, 0, 0], dtype=np.float64).reshape((6,) + (1,) * (len(shape) - 1))
    margin = 1.2
    d = np.sqrt(((a - b).reshape(6, -1) ** 2).sum(axis=1))
    dist = d ** 2 if legacy else d
    dissimilar = y.reshape(-1) == 0
    assert (dist[dissimilar] < margin).any() and (dist[dissimilar] > margin).any()  # both branches run
    loss, (da, db, dy), _ = run({"type": "ContrastiveLoss", "margin": margin, "legacy_version": legacy}, [a, b, y])
    rl, rda = contrastive_ref(a, b, y, margin, legacy)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(da, rda, rtol=1e-12)
    np.testing.assert_allclose(db, -rda, rtol=1e-12)
    assert not dy.any()  # the similarity bottom gets nothing


def test_contrastive_similarity_is_truncated_to_int():
    # Caffe tests static_cast<int>(y): 0.9 means dissimilar
    a, b = np.array([[0.3, 0.0]]), np.array([[0.0, 0.0]])
    loss, _, _ = run({"type": "ContrastiveLoss", "margin": 1.0}, [a, b, np.array([[0.9]])])
    np.testing.assert_allclose(loss, (1.0 - 0.3) ** 2 / 2, rtol=1e-12)


# ---- MultinomialLogisticLoss ----------------------------------------------------------------
def test_multinomial_logistic():
    rng = np.random.default_rng(10)
    p = rng.uniform(0.05, 1, size=(5, 4))
    p /= p.sum(axis=1, keepdims=True)
    lab = np.array([0, 3, 1, 1, 2], dtype=np.float64)
    p[2, 1] = 0.0  # clamped to 1e-20 in the loss and in the gradient
    loss, (dp, _), _ = run({"type": "MultinomialLogisticLoss"}, [p, lab])
    rl, rdp = 0.0, np.zeros_like(p)
    for i in range(5):
        q = max(p[i, int(lab[i])], 1e-20)
        rl -= np.log(q)
        rdp[i, int(lab[i])] = -LW / 5 / q
    np.testing.assert_allclose(loss, rl / 5, rtol=1e-12)
    np.testing.assert_allclose(dp, rdp, rtol=1e-12)


def test_multinomial_logistic_matches_torch_nll():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    p = rng.uniform(0.05, 1, size=(6, 5)).astype(np.float32)
    lab = rng.integers(0, 5, size=6).astype(np.float64)
    loss, (dp, _), _ = run({"type": "MultinomialLogisticLoss"}, [p, lab], dtype=np.float32)
    tp = torch.tensor(p, requires_grad=True)
    t = torch.nn.functional.nll_loss(torch.log(tp), torch.tensor(lab, dtype=torch.long))
    (t * LW).backward()
    np.testing.assert_allclose(loss, t.item(), rtol=1e-5)
    np.testing.assert_allclose(dp, tp.grad.numpy(), rtol=1e-5)


# ---- InfogainLoss ---------------------------------------------------------------------------
def infogain_ref(x, lab, H, mode="VALID", ignore=None, lw=LW):
    n, c = x.shape[:2]
    inner = x.shape[2:]
    loss, valid, dx = 0.0, 0, np.zeros_like(x)
    for i in range(n):
        for pos in np.ndindex(*inner):
            sl = (i, slice(None)) + pos
            p = np.exp(x[sl] - x[sl].max())
            p /= p.sum()
            label = int(lab[(i,) + pos])
            if ignore is not None and label == ignore:
                continue
            valid += 1
            for k in range(c):
                loss -= H[label, k] * np.log(max(p[k], 1e-20))
            dx[sl] = p * H[label].sum() - H[label]
    z = normalizer(mode, n, int(np.prod(inner)), valid)
    return loss / z, dx * lw / z


@pytest.mark.parametrize("mode", NORMS)
def test_infogain_with_h_bottom(mode):
    rng = np.random.default_rng(12)
    x, lab = labelled(rng, 3, 4, (2,), ignore=2)
    H = rng.uniform(0, 2, size=(4, 4))
    loss, (dx, _, dh), _ = run({"type": "InfogainLoss", "ignore_label": 2, "normalization": mode}, [x, lab, H])
    rl, rdx = infogain_ref(x, lab, H, mode, ignore=2)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-14)
    assert not dh.any()


def test_infogain_identity_is_softmax_loss():
    x, lab = labelled(np.random.default_rng(13), 5, 3)
    loss, (dx, _, _), _ = run({"type": "InfogainLoss"}, [x, lab, np.eye(3)])
    sl, (sdx, _), _ = run({"type": "SoftmaxWithLoss"}, [x, lab])
    np.testing.assert_allclose(loss, sl, rtol=1e-12)
    np.testing.assert_allclose(dx, sdx, rtol=1e-10, atol=1e-14)


def _varint(v: int) -> bytes:
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def blobproto(H: np.ndarray, style: str) -> bytes:
    """A BlobProto encoded by hand in one of the ways Caffe writers produce."""
    if style == "shape-packed":
        dims = b"".join(_varint(d) for d in H.shape)
        shape = _field(1, 2, _varint(len(dims)) + dims)
        data = H.astype("<f4").tobytes()
        return _field(7, 2, _varint(len(shape)) + shape) + _field(5, 2, _varint(len(data)) + data)
    if style == "legacy-unpacked":  # num, channels, height, width and one float per field
        head = _field(1, 0, _varint(1)) + _field(2, 0, _varint(1))
        head += _field(3, 0, _varint(H.shape[0])) + _field(4, 0, _varint(H.shape[1]))
        return head + b"".join(_field(5, 5, struct.pack("<f", v)) for v in H.reshape(-1))
    if style == "double":
        dims = b"".join(_field(1, 0, _varint(d)) for d in H.shape)  # unpacked dims
        data = H.astype("<f8").tobytes()
        return _field(7, 2, _varint(len(dims)) + dims) + _field(8, 2, _varint(len(data)) + data)
    raise ValueError(style)


@pytest.mark.parametrize("style", ["shape-packed", "legacy-unpacked", "double"])
def test_blobproto_encodings(style):  # the shared parser reads every encoding InfogainLoss may meet
    H = np.arange(12, dtype=np.float64).reshape(3, 4) / 8
    out = parse_blobproto(blobproto(H, style))
    np.testing.assert_array_equal(out.reshape(3, 4), H)
    assert out.shape == ((1, 1, 3, 4) if style == "legacy-unpacked" else (3, 4))


@pytest.mark.parametrize("fmt", ["npy", "binaryproto"])
def test_infogain_from_source(tmp_path, fmt):
    rng = np.random.default_rng(14)
    x, lab = labelled(rng, 4, 3)
    H = np.round(rng.uniform(0, 2, size=(3, 3)), 3).astype(np.float32).astype(np.float64)
    if fmt == "npy":
        np.save(tmp_path / "H.npy", H)
        path = tmp_path / "H.npy"
    else:
        path = tmp_path / "H.binaryproto"
        path.write_bytes(blobproto(H, "shape-packed"))
    loss, (dx, _), _ = run({"type": "InfogainLoss", "source": str(path)}, [x, lab])
    rl, rdx = infogain_ref(x, lab, H)
    np.testing.assert_allclose(loss, rl, rtol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-10, atol=1e-14)


def test_infogain_source_is_relative_to_the_net_file(tmp_path):
    from netspec import api

    np.save(tmp_path / "H.npy", np.eye(3))
    (tmp_path / "net.yaml").write_text("""
layers:
  - {name: data, type: Input, top: [x, label], shape: [[2, 3], [2]]}
  - {name: loss, type: InfogainLoss, bottom: [x, label], source: H.npy}
""")
    net = api.build_net(api.load_net(tmp_path / "net.yaml"), "TRAIN", dtype=np.float64)
    net.set_input("x", np.zeros((2, 3)))
    net.set_input("label", np.array([0.0, 2.0]))
    np.testing.assert_allclose(net.forward(), np.log(3), rtol=1e-12)


def test_infogain_source_errors(tmp_path):
    bad = tmp_path / "H.txt"
    bad.write_text("1 0\n0 1\n")
    with pytest.raises(DataError, match=r"neither a \.npy file nor a Caffe BlobProto"):
        run({"type": "InfogainLoss", "source": str(bad)}, [np.zeros((2, 2)), np.zeros(2)])
    np.save(tmp_path / "H.npy", np.eye(3))
    with pytest.raises(DataError, match="2 classes need 2x2"):
        run({"type": "InfogainLoss", "source": str(tmp_path / "H.npy")}, [np.zeros((2, 2)), np.zeros(2)])
    with pytest.raises(DataError, match="cannot read"):
        run({"type": "InfogainLoss", "source": str(tmp_path / "missing.npy")}, [np.zeros((2, 2)), np.zeros(2)])


# ---- Accuracy -------------------------------------------------------------------------------
def accuracy_ref(x, lab, k=1, ignore=None):
    n, c = x.shape[:2]
    hits, nums = np.zeros(c), np.zeros(c)
    for i in range(n):
        for pos in np.ndindex(*x.shape[2:]):
            label = int(lab[(i,) + pos])
            if ignore is not None and label == ignore:
                continue
            col = x[(i, slice(None)) + pos]
            # correct when fewer than k other classes score >= the true class (ties count against)
            better = sum(1 for j in range(c) if j != label and col[j] >= col[label])
            nums[label] += 1
            hits[label] += better < k
    total = nums.sum()
    per_class = np.divide(hits, nums, out=np.zeros(c), where=nums > 0)
    return (hits.sum() / total if total else 0.0), per_class


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("inner,ignore", [((), None), ((2, 3), 1)])
def test_accuracy(k, inner, ignore):
    rng = np.random.default_rng(15)
    x, lab = labelled(rng, 6, 5, inner, ignore=ignore)
    x = np.round(x)  # integer scores: many ties
    fields = {"type": "Accuracy", "top_k": k, "top": ["acc", "per_class"]}
    if ignore is not None:
        fields["ignore_label"] = ignore
    acc, _, (per_class,) = run(fields, [x, lab])
    ra, rpc = accuracy_ref(x, lab, k, ignore)
    np.testing.assert_allclose(acc, ra, rtol=1e-12)
    np.testing.assert_allclose(per_class, rpc, rtol=1e-12)


def test_accuracy_ties_count_against_the_prediction():
    x = np.array([[2.0, 2.0, 0.0], [1.0, 3.0, 3.0], [5.0, 1.0, 1.0]])
    lab = np.array([0.0, 2.0, 0.0])
    acc, _, (per_class,) = run({"type": "Accuracy", "top": ["acc", "pc"]}, [x, lab])
    assert acc == pytest.approx(1 / 3)  # both tied rows are wrong whichever index is lower
    np.testing.assert_array_equal(per_class, [0.5, 0.0, 0.0])  # class 1 never seen: 0
    acc, _, _ = run({"type": "Accuracy", "top_k": 2}, [x, lab])
    assert acc == 1.0


def test_accuracy_axis_and_nothing_counted():
    x = np.random.default_rng(16).normal(size=(2, 3, 4))
    lab = np.argmax(x, axis=-1).astype(np.float64)
    acc, _, _ = run({"type": "Accuracy", "axis": -1}, [x, lab])
    assert acc == 1.0
    acc, _, _ = run({"type": "Accuracy", "axis": -1, "ignore_label": 7}, [x, np.full((2, 3), 7.0)])
    assert acc == 0.0


def test_accuracy_float32_labels_and_scores():
    x, lab = labelled(np.random.default_rng(17), 7, 4)
    acc32, _, _ = run({"type": "Accuracy"}, [x.astype(np.float32), lab], dtype=np.float32)
    acc64, _, _ = run({"type": "Accuracy"}, [x, lab])
    assert acc64 == accuracy_ref(x, lab)[0]
    assert acc32 == np.float32(acc64)
