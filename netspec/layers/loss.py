"""Loss layers and Accuracy.

Losses give a scalar top (shape ``()``) whose loss weight defaults to 1; a label bottom never
receives a gradient.  ``normalization`` follows Caffe's LossParameter: FULL, VALID (default),
BATCH_SIZE, NONE; the deprecated ``normalize: false`` means BATCH_SIZE.  The Net seeds the loss
top's gradient with the loss weight, so backward scales by ``top[0].grad / normalizer``.
Kernels: ``softmax`` (SoftmaxWithLoss, InfogainLoss's softmax) and ``loss`` (the rest).

On a GPU the scratch arrays live there and the loss is summed and divided there: a forward
reads one number back (the label check's answer), and the Net reads the loss top itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netspec.core import device as D
from netspec.core.device import kernels, to_host
from netspec.core.layer import Layer, count, register, wide_dtype
from netspec.spec import types as T

LOSS_PROPS = {
    "ignore_label": T.integer(desc="positions with this label add nothing to the loss or its gradient"),
    "normalization": T.enum(("FULL", "VALID", "BATCH_SIZE", "NONE"),
                            desc="what the summed loss is divided by (default VALID)"),
    "normalize": T.boolean(desc="deprecated: true means VALID, false means BATCH_SIZE"),
}


class Loss(Layer):
    """Base of loss layers: (prediction, label) -> scalar loss."""

    is_loss = True
    num_bottom = 2
    num_top = 1
    no_grad_bottoms = (1,)
    inplace = False

    def loss_shape(self):
        return ()

    def check_label(self, pred, label, outer_inner: int, what: str = "positions"):
        n = count(label)
        if n != outer_inner:
            raise self.error(f"the label has {n} values (shape {_fmt(label)}) but the prediction {_fmt(pred)} has "
                             f"{outer_inner} {what}; do the data and label batch sizes match?", "bottom")

    def ignore_args(self) -> tuple[bool, int]:
        """(has ignore_label, its value) as the kernels take them."""
        ign = self.p.get("ignore_label")
        return ign is not None, int(ign if ign is not None else 0)

    def set_loss(self, top, losses, valid, outer: int, inner: int) -> None:
        """``top = sum(losses) / normalizer``, computed where the arrays live.  Only VALID with
        an ignore_label depends on the data: that count is summed there too, and read on the
        host only when backward needs it.  (Without an ignore_label every one of the
        ``outer * inner`` positions counts.)"""
        if self.mode == "VALID" and self.has_ignore:
            self._count = valid.sum()
            self.z = None
            # a NumPy or device scalar: the division stays in the blob dtype, as with a float
            top[0].data[...] = losses.sum() / np.maximum(self._count, 1.0)
        else:
            self.z = normalizer(self.mode, outer, inner, outer * inner)
            top[0].data[...] = losses.sum() / self.z

    def grad_scale(self, top) -> float:
        """The loss weight the Net seeded over the last forward's normalizer."""
        if self.z is None:
            self.z = normalizer("VALID", 0, 0, float(to_host(self._count)))
        return float(to_host(top[0].grad)) / self.z


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Loss):
    """Softmax over ``axis`` followed by the multinomial logistic loss of the true class.

    Bottoms: scores ``(N, C, ...)`` and integer labels with ``N x ...`` entries.  Top: the loss;
    an optional second top gives the probabilities.

    Example::

        {name: loss, type: SoftmaxWithLoss, bottom: [ip2, label]}
    """

    num_top = (1, 2)
    deploy_as = "Softmax"
    schema = {"properties": {"axis": T.integer(default=1, desc="the class axis"), **LOSS_PROPS}}

    def reshape(self, bottom_shapes):
        pred, label = bottom_shapes
        axis = self.axis(self.p.get("axis", 1), len(pred))
        self.check_label(pred, label, count(pred, 0, axis) * count(pred, axis + 1))
        return [()] + ([tuple(pred)] if len(self.p.get("top", [])) > 1 else [])

    def flops(self, bottom_shapes, top_shapes):
        return 5 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("softmax")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.c, self.inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        dt = wide_dtype(bottom[0].data)
        self.prob = top[1].data if len(top) > 1 else D.empty(shape, dt)
        self.losses = D.empty((self.outer, self.inner), dt)
        self.valid = D.empty((self.outer, self.inner), dt)
        self.mode = normalization_mode(self.p)
        self.has_ignore, self.ignore_label = self.ignore_args()
        self.z = 1.0

    def _views(self, bottom):
        return (bottom[0].data.reshape(self.outer, self.c, self.inner),
                self.prob.reshape(self.outer, self.c, self.inner),
                bottom[1].data.reshape(self.outer, self.inner))

    def forward(self, bottom, top):
        x, prob, label = self._views(bottom)
        self.K.softmax_forward(prob, x)
        check_label_values(self, label, self.c)
        self.K.softmax_loss_forward(self.losses, self.valid, prob, label, self.has_ignore, self.ignore_label)
        self.set_loss(top, self.losses, self.valid, self.outer, self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _, prob, label = self._views(bottom)
            dx = bottom[0].grad.reshape(self.outer, self.c, self.inner)
            self.K.softmax_loss_backward(dx, prob, label, self.has_ignore, self.ignore_label, self.grad_scale(top))


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Loss):
    """Cross-entropy of sigmoid(scores) against targets in [0, 1], computed stably.

    Bottoms: scores and targets with the same count.  Normalization defaults to BATCH_SIZE.

    Example::

        {name: loss, type: SigmoidCrossEntropyLoss, bottom: [decode1, flatdata]}
    """

    deploy_as = "Sigmoid"
    schema = {"properties": dict(LOSS_PROPS)}

    def reshape(self, bottom_shapes):
        pred, target = bottom_shapes
        if count(pred) != count(target):
            raise self.error(f"scores {_fmt(pred)} and targets {_fmt(target)} must have the same number of values",
                             "bottom")
        return [()]

    def flops(self, bottom_shapes, top_shapes):
        return 5 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        self.num, self.dim = shape[0], count(shape, 1)
        dt = wide_dtype(bottom[0].data)
        self.losses = D.empty(self.num, dt)
        self.valid = D.empty(self.num, dt)
        # this layer's default is BATCH_SIZE, not VALID (Caffe's sigmoid_cross_entropy_loss_layer.cpp)
        self.mode = normalization_mode(self.p, default="BATCH_SIZE")
        # Caffe compares static_cast<int>(target) with ignore_label: targets are truncated first
        self.has_ignore, self.ignore_label = self.ignore_args()
        self.z = 1.0

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        t = bottom[1].data.reshape(self.num, self.dim)
        self.K.sigmoid_cross_entropy_forward(self.losses, self.valid, x, t, self.has_ignore, self.ignore_label)
        self.set_loss(top, self.losses, self.valid, self.num, self.dim)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.sigmoid_cross_entropy_backward(
                bottom[0].grad.reshape(self.num, self.dim), bottom[0].data.reshape(self.num, self.dim),
                bottom[1].data.reshape(self.num, self.dim), self.has_ignore, self.ignore_label,
                self.grad_scale(top))


@register("EuclideanLoss")
class EuclideanLoss(Loss):
    """``sum((a - b)^2) / (2 N)``; both bottoms receive gradients.

    Example::

        {name: loss, type: EuclideanLoss, bottom: [pred, target]}
    """

    no_grad_bottoms = ()

    def reshape(self, bottom_shapes):
        a, b = bottom_shapes
        if len(a) < 1 or len(b) < 1 or count(a, 1) != count(b, 1) or a[0] != b[0]:
            raise self.error(f"the bottoms must have equal shapes (as counts per item): {_fmt(a)} vs {_fmt(b)}",
                             "bottom")
        return [()]

    def flops(self, bottom_shapes, top_shapes):
        return 3 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        self.num, self.dim = shape[0], count(shape, 1)
        dt = wide_dtype(bottom[0].data)
        self.diff = D.empty((self.num, self.dim), dt)
        self.losses = D.empty(self.num, dt)

    def forward(self, bottom, top):
        self.K.euclidean_forward(self.diff, self.losses, bottom[0].data.reshape(self.num, self.dim),
                                 bottom[1].data.reshape(self.num, self.dim))
        top[0].data[...] = self.losses.sum() / self.num / 2

    def backward(self, top, propagate_down, bottom):
        for j, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[j]:
                alpha = sign * float(to_host(top[0].grad)) / self.num
                self.K.euclidean_backward(bottom[j].grad.reshape(-1), self.diff.reshape(-1), alpha)


@register("HingeLoss")
class HingeLoss(Loss):
    """One-vs-all hinge loss, L1 (``sum s / N``) or L2 (``sum s^2 / N``).

    Example::

        {name: loss, type: HingeLoss, bottom: [ip2, label], norm: L1}
    """

    schema = {"properties": {"norm": T.enum(("L1", "L2"), default="L1")}}

    def reshape(self, bottom_shapes):
        pred, label = bottom_shapes
        self.check_label(pred, label, pred[0], "items")
        return [()]

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        self.num, self.dim = shape[0], count(shape, 1)
        dt = wide_dtype(bottom[0].data)
        self.margins = D.empty((self.num, self.dim), dt)
        self.losses = D.empty(self.num, dt)
        self.norm = 2 if self.p.get("norm", "L1") == "L2" else 1

    def forward(self, bottom, top):
        label = bottom[1].data.reshape(-1)
        check_label_values(self, label, self.dim)
        self.K.hinge_forward(self.margins, self.losses, bottom[0].data.reshape(self.num, self.dim), label,
                             self.norm)
        top[0].data[...] = self.losses.sum() / self.num

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.hinge_backward(bottom[0].grad.reshape(self.num, self.dim), self.margins,
                                  bottom[1].data.reshape(-1), self.norm, float(to_host(top[0].grad)) / self.num)


@register("ContrastiveLoss")
class ContrastiveLoss(Loss):
    """Siamese loss: ``(1/2N) sum[y d^2 + (1-y) max(margin - d, 0)^2]`` with ``d = ||a - b||``.

    Bottoms: features a ``(N, C[,1,1])``, features b of the same shape, similarity y ``(N, ...)``.

    Example::

        {name: loss, type: ContrastiveLoss, bottom: [feat, feat_p, sim], margin: 1.0}
    """

    num_bottom = 3
    no_grad_bottoms = (2,)
    schema = {"properties": {
        "margin": T.number(default=1.0, desc="distance beyond which dissimilar pairs cost nothing"),
        "legacy_version": T.boolean(False, "use max(margin - d^2, 0) as Caffe's first version did"),
    }}

    def reshape(self, bottom_shapes):
        a, b, y = bottom_shapes
        if tuple(a) != tuple(b):
            raise self.error(f"the two feature bottoms must have the same shape: {_fmt(a)} vs {_fmt(b)}", "bottom")
        if len(a) < 2 or count(a, 2) != 1:
            raise self.error(f"features must be (N, C) or (N, C, 1, 1), got {_fmt(a)}", "bottom")
        self.check_label(a, y, a[0], "items")
        return [()]

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        self.num, self.dim = shape[0], count(shape, 1)
        dt = wide_dtype(bottom[0].data)
        self.diff = D.empty((self.num, self.dim), dt)
        self.dist_sq = D.empty(self.num, dt)
        self.losses = D.empty(self.num, dt)
        self.margin = float(self.p.get("margin", 1.0))
        self.legacy = bool(self.p.get("legacy_version", False))

    def forward(self, bottom, top):
        self.K.contrastive_forward(self.diff, self.dist_sq, self.losses, bottom[0].data.reshape(self.num, self.dim),
                                   bottom[1].data.reshape(self.num, self.dim), bottom[2].data.reshape(-1),
                                   self.margin, self.legacy)
        top[0].data[...] = self.losses.sum() / self.num / 2

    def backward(self, top, propagate_down, bottom):
        for j, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[j]:
                alpha = sign * float(to_host(top[0].grad)) / self.num
                self.K.contrastive_backward(bottom[j].grad.reshape(self.num, self.dim), self.diff, self.dist_sq,
                                            bottom[2].data.reshape(-1), self.margin, self.legacy, alpha)


@register("InfogainLoss")
class InfogainLoss(Loss):
    """Softmax, then ``-(1/Z) sum_k H[label, k] log p_k`` with an infogain matrix H (K x K).

    H comes from a third bottom or from ``source`` (a .npy file or a Caffe .binaryproto).

    Example::

        {name: loss, type: InfogainLoss, bottom: [ip2, label, H]}
    """

    num_bottom = (2, 3)
    num_top = (1, 2)
    no_grad_bottoms = (1, 2)
    schema = {"properties": {
        "source": T.string(desc="file holding H when there is no third bottom"),
        "axis": T.integer(default=1, desc="the class axis"),
        "ignore_label": LOSS_PROPS["ignore_label"],
        "normalization": LOSS_PROPS["normalization"],
    }}

    def reshape(self, bottom_shapes):
        pred, label = bottom_shapes[:2]
        axis = self.axis(self.p.get("axis", 1), len(pred))
        k = pred[axis]
        self.check_label(pred, label, count(pred, 0, axis) * count(pred, axis + 1))
        if len(bottom_shapes) == 3:
            if count(bottom_shapes[2]) != k * k:
                raise self.error(f"H must be {k}x{k} for {k} classes, got {_fmt(bottom_shapes[2])}", "bottom")
        elif "source" not in self.p:
            raise self.error("needs H: a third bottom or a 'source' file", "source")
        return [()] + ([tuple(pred)] if len(self.p.get("top", [])) > 1 else [])

    def flops(self, bottom_shapes, top_shapes):
        return 6 * count(bottom_shapes[0])

    def setup(self, bottom, top):
        self.K = kernels("loss")
        self.S = kernels("softmax")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.c, self.inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        dt = wide_dtype(bottom[0].data)
        self.prob = top[1].data if len(top) > 1 else D.empty(shape, dt)
        self.losses = D.empty((self.outer, self.inner), dt)
        self.valid = D.empty((self.outer, self.inner), dt)
        # Caffe rejects the deprecated `normalize` here (the schema has no such field)
        self.mode = normalization_mode(self.p)
        self.has_ignore, self.ignore_label = self.ignore_args()
        self.H = None
        if len(bottom) < 3:
            self.H = D.asarray(self._load_h(dt))   # copied to the device once
        self.z = 1.0

    def _load_h(self, dtype) -> np.ndarray:
        from netspec.errors import DataError

        path = Path(self.p["source"])
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        try:
            h = read_blob_file(path)
        except (OSError, ValueError) as e:
            raise self.error(f"cannot read the infogain matrix {path}: {e}", "source", cls=DataError)
        if h.size != self.c * self.c:
            raise self.error(f"the infogain matrix in {path} has shape {_fmt(h.shape)}; {self.c} classes need "
                             f"{self.c}x{self.c}", "source", cls=DataError)
        return np.ascontiguousarray(h.reshape(self.c, self.c), dtype=dtype)

    def _views(self, bottom):
        h = self.H if self.H is not None else bottom[2].data.reshape(self.c, self.c)
        return (self.prob.reshape(self.outer, self.c, self.inner),
                bottom[1].data.reshape(self.outer, self.inner), h)

    def forward(self, bottom, top):
        prob, label, h = self._views(bottom)
        self.S.softmax_forward(prob, bottom[0].data.reshape(self.outer, self.c, self.inner))
        check_label_values(self, label, self.c)
        self.K.infogain_forward(self.losses, self.valid, prob, label, h, self.has_ignore, self.ignore_label)
        self.set_loss(top, self.losses, self.valid, self.outer, self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            prob, label, h = self._views(bottom)
            self.K.infogain_backward(bottom[0].grad.reshape(self.outer, self.c, self.inner), prob, label, h,
                                     self.has_ignore, self.ignore_label, self.grad_scale(top))


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Loss):
    """``-(1/N) sum log p[label]`` of given probabilities (use SoftmaxWithLoss on scores).

    Example::

        {name: loss, type: MultinomialLogisticLoss, bottom: [prob, label]}
    """

    def reshape(self, bottom_shapes):
        pred, label = bottom_shapes
        self.check_label(pred, label, pred[0], "items")
        return [()]

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        self.num, self.dim = shape[0], count(shape, 1)
        self.losses = D.empty(self.num, wide_dtype(bottom[0].data))

    def forward(self, bottom, top):
        label = bottom[1].data.reshape(-1)
        check_label_values(self, label, self.dim)
        self.K.multinomial_logistic_forward(self.losses, bottom[0].data.reshape(self.num, self.dim), label)
        top[0].data[...] = self.losses.sum() / self.num

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.K.multinomial_logistic_backward(bottom[0].grad.reshape(self.num, self.dim),
                                                 bottom[0].data.reshape(self.num, self.dim),
                                                 bottom[1].data.reshape(-1), float(to_host(top[0].grad)) / self.num)


@register("Accuracy")
class Accuracy(Layer):
    """Fraction of items whose true class is among the ``top_k`` highest scores (ties count against).

    Bottoms: scores ``(N, C, ...)`` and labels.  Top: the accuracy; an optional second top gives
    per-class accuracy ``(C,)``.  No gradient; loss weight 0.

    Example::

        {name: accuracy, type: Accuracy, bottom: [ip2, label], include: {phase: TEST}}
    """

    num_bottom = 2
    num_top = (1, 2)
    differentiable = False
    inplace = False
    schema = {"properties": {
        "top_k": T.integer(1, default=1, desc="count a hit when the true class is among the k best"),
        "axis": T.integer(default=1, desc="the class axis"),
        "ignore_label": LOSS_PROPS["ignore_label"],
    }}

    def reshape(self, bottom_shapes):
        pred, label = bottom_shapes
        axis = self.axis(self.p.get("axis", 1), len(pred))
        k = self.p.get("top_k", 1)
        if k > pred[axis]:
            raise self.error(f"top_k {k} is larger than the number of classes {pred[axis]}", "top_k")
        n = count(pred, 0, axis) * count(pred, axis + 1)
        if count(label) != n:
            raise self.error(f"the label has {count(label)} values ({_fmt(label)}) but the prediction "
                             f"{_fmt(pred)} has {n} positions; do the data and label batch sizes match?", "bottom")
        return [()] + ([(pred[axis],)] if len(self.p.get("top", [])) > 1 else [])

    def setup(self, bottom, top):
        self.K = kernels("loss")
        shape = bottom[0].shape
        axis = self.axis(self.p.get("axis", 1), len(shape))
        self.outer, self.c, self.inner = count(shape, 0, axis), shape[axis], count(shape, axis + 1)
        self.top_k = int(self.p.get("top_k", 1))
        ign = self.p.get("ignore_label")
        self.has_ignore, self.ignore_label = ign is not None, int(ign if ign is not None else 0)
        self.hits = D.zeros(self.c, np.float64)   # per true class: correct positions
        self.nums = D.zeros(self.c, np.float64)   # per true class: counted (non-ignored) positions
        self._den = D.empty(self.c, np.float64) if len(top) > 1 else None   # nums, at least 1

    def forward(self, bottom, top):
        label = bottom[1].data.reshape(self.outer, self.inner)
        check_label_values(self, label, self.c)
        self.K.accuracy_forward(self.hits, self.nums, bottom[0].data.reshape(self.outer, self.c, self.inner),
                                label, self.top_k, self.has_ignore, self.ignore_label)
        # divided where the counts are (a count of 0 has 0 hits: 0 / 1 = 0, with no branch
        # on a device value)
        top[0].data[...] = self.hits.sum() / np.maximum(self.nums.sum(), 1.0)
        if len(top) > 1:  # a class never seen in the batch has accuracy 0
            np.maximum(self.nums, 1.0, out=self._den)
            np.divide(self.hits, self._den, out=top[1].data, casting="unsafe")


def normalizer(mode: str, outer: int, inner: int, valid: float) -> float:
    """Caffe's LossLayer::GetNormalizer, clamped to at least 1."""
    z = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(z))


def normalization_mode(p: dict, default: str = "VALID") -> str:
    if "normalization" in p:
        return p["normalization"]
    if "normalize" in p:
        return "VALID" if p["normalize"] else "BATCH_SIZE"
    return default


def check_label_values(layer, label, num_classes: int) -> None:
    """A DataError naming the position of the first label outside [0, num_classes)."""
    from netspec.errors import DataError

    flat = label.reshape(-1)
    ign = layer.p.get("ignore_label")
    # checked where the labels are; only the first bad position comes back (and its value)
    bad = layer.K.check_labels(flat, float(num_classes), ign is not None, float(ign if ign is not None else 0))
    if bad >= 0:
        value = float(to_host(flat[bad:bad + 1])[0])
        raise layer.error(f"label {value:g} at position {bad} of the batch is not a class index in "
                          f"[0, {num_classes}); check the dataset's labels or the number of outputs",
                          "bottom", cls=DataError)


# ---- matrix files (InfogainLoss ``source``) ------------------------------------------------
def read_blob_file(path: Path) -> np.ndarray:
    """An array from a ``.npy`` file or a Caffe ``BlobProto`` (``.binaryproto``) file."""
    import struct

    from netspec.data.blobproto import parse_blobproto

    raw = Path(path).read_bytes()
    if raw.startswith(b"\x93NUMPY"):
        return np.load(path, allow_pickle=False)
    try:
        return parse_blobproto(raw)
    except (ValueError, struct.error) as e:
        raise ValueError(f"neither a .npy file nor a Caffe BlobProto (.binaryproto): {e}") from None
