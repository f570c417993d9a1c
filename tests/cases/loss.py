"""Cases for the loss layers and Accuracy (SoftmaxWithLoss's first cases are in core.py).

Labels are integer-valued float arrays, as a net holds them.  Label bottoms never receive a
gradient, so the gradient check covers the other bottoms only.
"""

import numpy as np

from . import Case

NORMS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def scores_labels(n, c, *inner, ignore=None):
    """Scores (n, c, *inner) and labels (n, *inner); with ``ignore``, about a third of the
    labels are that value."""
    def make(rng):
        x = rng.normal(size=(n, c) + inner)
        lab = rng.integers(0, c, size=(n,) + inner).astype(np.float64)
        if ignore is not None:
            lab[rng.random(lab.shape) < 0.35] = ignore
            lab.flat[0] = (ignore + 1) % c if 0 <= ignore < c else 0  # at least one counted position
        return [x, lab]
    return make


def logits_targets(*shape, soft=False, ignore=None):
    def make(rng):
        x = rng.normal(size=shape) * 2
        t = rng.random(shape) if soft else rng.integers(0, 2, size=shape).astype(np.float64)
        if ignore is not None:
            t[rng.random(shape) < 0.3] = ignore
        return [x, t]
    return make


def hinge_scores(n, k):
    """Scores kept 0.05 away from the hinge's kinks at +-1."""
    def make(rng):
        x = rng.normal(size=(n, k))
        near = np.abs(np.abs(x) - 1.0) < 0.05
        x[near] += 0.1
        return [x, rng.integers(0, k, size=n).astype(np.float64)]
    return make


def siamese(n, c, *tail, spread=0.5):
    """Feature pairs close enough that some dissimilar pairs fall inside the margin (1.0)."""
    def make(rng):
        a = rng.normal(size=(n, c) + tail) * spread
        b = rng.normal(size=(n, c) + tail) * spread
        y = np.tile([1.0, 0.0], n)[:n].reshape((n,) + (1,) * (len(tail) + 1))
        return [a, b, y]
    return make


def probs_labels(n, c):
    def make(rng):
        p = rng.uniform(0.05, 1.0, size=(n, c))
        return [p / p.sum(axis=1, keepdims=True), rng.integers(0, c, size=n).astype(np.float64)]
    return make


def infogain(n, c, *inner, ignore=None):
    def make(rng):
        x, lab = scores_labels(n, c, *inner, ignore=ignore)(rng)
        return [x, lab, rng.uniform(0.0, 2.0, size=(c, c))]
    return make


CASES = [
    # SoftmaxWithLoss: ignore_label under every normalization, spatial and last-axis classes
    *[Case({"type": "SoftmaxWithLoss", "ignore_label": 2, "normalization": m}, scores_labels(3, 4, 3, ignore=2),
           id=f"ignore-{m}") for m in NORMS],
    Case({"type": "SoftmaxWithLoss", "normalize": False}, scores_labels(5, 3), id="normalize-false"),
    Case({"type": "SoftmaxWithLoss", "axis": -1}, lambda rng: [rng.normal(size=(2, 3, 4)),
                                                               rng.integers(0, 4, size=(2, 3)).astype(float)],
         id="last-axis"),
    # SigmoidCrossEntropyLoss: default BATCH_SIZE, ignore_label under every normalization, soft targets
    Case({"type": "SigmoidCrossEntropyLoss"}, logits_targets(4, 6)),
    Case({"type": "SigmoidCrossEntropyLoss"}, logits_targets(3, 2, 2, 2, soft=True), id="soft-4d"),
    *[Case({"type": "SigmoidCrossEntropyLoss", "ignore_label": -1, "normalization": m},
           logits_targets(4, 5, ignore=-1), id=f"ignore-{m}") for m in NORMS],
    Case({"type": "SigmoidCrossEntropyLoss", "ignore_label": -1, "normalize": True}, logits_targets(4, 5, ignore=-1),
         id="normalize-true"),
    # EuclideanLoss: both bottoms get gradients; equal count(1) with different shapes
    Case({"type": "EuclideanLoss"}, lambda rng: [rng.normal(size=(4, 3)), rng.normal(size=(4, 3))]),
    Case({"type": "EuclideanLoss"}, lambda rng: [rng.normal(size=(3, 2, 2)), rng.normal(size=(3, 4))],
         id="reshaped"),
    Case({"type": "EuclideanLoss", "propagate_down": [False, True]},
         lambda rng: [rng.normal(size=(3, 2)), rng.normal(size=(3, 2))], check_bottoms=[1], id="target-only"),
    Case({"type": "EuclideanLoss", "top": "l2", "loss_weight": 0.0},
         lambda rng: [rng.normal(size=(2, 5)), rng.normal(size=(2, 5))], id="weight0"),
    # HingeLoss
    Case({"type": "HingeLoss"}, hinge_scores(6, 4)),
    Case({"type": "HingeLoss", "norm": "L2"}, hinge_scores(5, 3), id="L2"),
    # ContrastiveLoss: no gradient to the similarity bottom.  Caffe divides by d + 1e-4 in the
    # dissimilar gradient, so it differs from the exact derivative by about 1e-4 / d
    Case({"type": "ContrastiveLoss"}, siamese(6, 3), threshold=2e-3),
    Case({"type": "ContrastiveLoss", "margin": 2.0}, siamese(6, 4, 1, 1), threshold=2e-3, id="4d"),
    Case({"type": "ContrastiveLoss", "legacy_version": True, "margin": 1.5}, siamese(6, 3), id="legacy"),
    # MultinomialLogisticLoss on probabilities
    Case({"type": "MultinomialLogisticLoss"}, probs_labels(5, 4)),
    # InfogainLoss with H as a third bottom (never differentiated)
    Case({"type": "InfogainLoss"}, infogain(4, 3)),
    *[Case({"type": "InfogainLoss", "ignore_label": 1, "normalization": m}, infogain(3, 4, 2, ignore=1),
           id=f"ignore-{m}") for m in NORMS],
    Case({"type": "InfogainLoss", "axis": -1, "top": ["loss", "prob"]},
         lambda rng: [rng.normal(size=(2, 3, 4)), rng.integers(0, 4, size=(2, 3)).astype(float),
                      rng.uniform(0, 1, size=(4, 4))], check_tops=[0], id="last-axis-prob"),
    # Accuracy (no gradient)
    Case({"type": "Accuracy"}, scores_labels(8, 5), grad=False),
    Case({"type": "Accuracy", "top_k": 3}, scores_labels(8, 5), grad=False, id="top3"),
    Case({"type": "Accuracy", "ignore_label": 0, "top": ["acc", "per_class"]}, scores_labels(4, 3, 2, ignore=0),
         grad=False, id="ignore-per-class"),
    Case({"type": "Accuracy", "axis": -1, "top_k": 2}, lambda rng: [rng.normal(size=(2, 3, 4)),
                                                                    rng.integers(0, 4, size=(2, 3)).astype(float)],
         grad=False, id="last-axis"),
]
