"""Cases for the layers written with the core: InnerProduct, ReLU, Softmax, SoftmaxWithLoss, Split."""

import numpy as np

from . import Case


def normal(*shape):
    return lambda rng: [rng.normal(size=shape)]


def scores_labels(n, c, *inner):
    def make(rng):
        return [rng.normal(size=(n, c) + inner), rng.integers(0, c, size=(n,) + inner).astype(np.float64)]
    return make


CASES = [
    Case({"type": "InnerProduct", "num_output": 4}, normal(3, 2, 3, 2)),
    Case({"type": "InnerProduct", "num_output": 3, "axis": 2, "transpose": True}, normal(2, 3, 4), id="axis2-transpose"),
    Case({"type": "InnerProduct", "num_output": 3, "bias_term": False}, normal(5, 4), id="nobias"),
    Case({"type": "ReLU"}, normal(2, 3, 4, 4), kink=0.0, kink_range=1e-2, inplace=True),
    Case({"type": "ReLU", "negative_slope": 0.2}, normal(3, 7), kink=0.0, kink_range=1e-2, inplace=True, id="leaky"),
    Case({"type": "Softmax"}, normal(3, 5, 2), inplace=True),
    Case({"type": "Softmax", "axis": -1}, normal(2, 3, 6), id="last-axis"),
    Case({"type": "SoftmaxWithLoss"}, scores_labels(6, 5)),
    Case({"type": "SoftmaxWithLoss", "ignore_label": 1, "normalization": "FULL"}, scores_labels(4, 3, 2, 2), id="ignore-full"),
    Case({"type": "SoftmaxWithLoss", "normalization": "BATCH_SIZE", "top": ["loss", "prob"]}, scores_labels(4, 3, 5),
         id="batch-prob", check_tops=[0]),
    Case({"type": "Split", "top": ["a", "b", "c"]}, normal(2, 3, 4)),
]
