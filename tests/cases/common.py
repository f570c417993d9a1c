"""Cases for Dropout and Embed (InnerProduct's cases live in core.py)."""

import numpy as np

from . import Case


def normal(*shape):
    return lambda rng: [rng.normal(size=shape)]


def indices(input_dim, *shape):
    """Integer indices (as floats, like every blob), each value used at least once if it fits."""
    def make(rng):
        n = int(np.prod(shape))
        idx = np.concatenate([np.arange(min(n, input_dim)), rng.integers(0, input_dim, size=max(0, n - input_dim))])
        return [rng.permutation(idx).reshape(shape).astype(np.float64)]
    return make


CASES = [
    Case({"type": "Dropout"}, normal(4, 3, 2, 3), inplace=True, id="train"),
    Case({"type": "Dropout", "dropout_ratio": 0.2}, normal(5, 6), inplace=True, id="train-0.2"),
    Case({"type": "Dropout", "dropout_ratio": 0.0}, normal(3, 4), id="train-keep-all"),
    Case({"type": "Dropout"}, normal(3, 4, 2), phase="TEST", inplace=True, id="test"),
    Case({"type": "Embed", "num_output": 4, "input_dim": 5}, indices(5, 3, 4), check_bottoms=[]),
    Case({"type": "Embed", "num_output": 3, "input_dim": 10, "bias_term": False}, indices(10, 2, 3, 2),
         check_bottoms=[], id="nobias-repeats"),
    Case({"type": "Embed", "num_output": 2, "input_dim": 3}, indices(3, 7), check_bottoms=[], id="1d-repeats"),
]
