"""Cases for the normalization and affine layers: LRN, BatchNorm, MVN, Scale, Bias."""

import numpy as np

from . import Case


def normal(*shape, scale=1.0, shift=0.0):
    return lambda rng: [shift + scale * rng.normal(size=shape)]


def pair(a, b):
    """Two normal bottoms of shapes ``a`` and ``b``."""
    return lambda rng: [rng.normal(size=a), rng.normal(size=b)]


# running statistics of a BatchNorm over 3 channels, as Caffe stores them: unnormalized sums
# and their normalizer (mean = M / s, variance = V / s)
BN_STATS = {"mean": np.array([0.6, -1.2, 0.3]), "variance": np.array([2.4, 0.9, 5.1]), "scale_factor": np.array([3.0])}

CASES = [
    Case({"type": "LRN", "local_size": 3, "alpha": 0.9, "beta": 0.75, "k": 1.5}, normal(2, 7, 3, 3)),
    Case({"type": "LRN"}, normal(2, 4, 3, 2, scale=1.5), id="defaults-window-wider-than-c"),
    Case({"type": "LRN", "norm_region": "WITHIN_CHANNEL", "local_size": 3, "alpha": 2.0, "beta": 0.6},
         normal(2, 3, 5, 4), id="within"),
    Case({"type": "LRN", "norm_region": "WITHIN_CHANNEL", "local_size": 5, "alpha": 3.0, "k": 7.0},
         normal(1, 2, 4, 6), id="within-k-ignored"),
    Case({"type": "BatchNorm"}, normal(4, 3, 2, 3, scale=2.0, shift=0.5), inplace=True, id="train"),
    Case({"type": "BatchNorm", "moving_average_fraction": 0.9, "eps": 1e-3}, normal(6, 4), inplace=True,
         id="train-2d"),
    Case({"type": "BatchNorm"}, normal(3, 3, 2, 2), phase="TEST", params=BN_STATS, inplace=True, id="test-global"),
    Case({"type": "BatchNorm", "use_global_stats": True}, normal(2, 3, 5), params=BN_STATS, inplace=True,
         id="train-global"),
    Case({"type": "BatchNorm", "use_global_stats": False}, normal(5, 3, 2), phase="TEST", id="test-batch"),
    Case({"type": "BatchNorm"}, normal(2, 3, 2, 2), phase="TEST", random_params=False, id="fresh-global"),
    Case({"type": "MVN"}, normal(2, 3, 4, 5, scale=2.0, shift=1.0), inplace=True),
    Case({"type": "MVN", "across_channels": True}, normal(2, 3, 3, 2), inplace=True, id="across"),
    Case({"type": "MVN", "normalize_variance": False}, normal(3, 2, 4), inplace=True, id="mean-only"),
    Case({"type": "MVN", "normalize_variance": False, "across_channels": True}, normal(2, 3, 4),
         id="mean-only-across"),
    Case({"type": "MVN", "eps": 0.5}, normal(2, 3, 6), id="large-eps"),
    Case({"type": "Scale"}, normal(2, 3, 4), inplace=True),
    Case({"type": "Scale", "bias_term": True}, normal(2, 3, 2, 3), inplace=True, id="bias"),
    Case({"type": "Scale", "num_axes": 0, "bias_term": True}, normal(2, 3, 4), inplace=True, id="scalar"),
    Case({"type": "Scale", "axis": 1, "num_axes": -1}, normal(2, 3, 4), inplace=True, id="to-end"),
    Case({"type": "Scale", "axis": 0, "num_axes": 2}, normal(2, 3, 4), inplace=True, id="axis0-2axes"),
    Case({"type": "Scale", "axis": -2, "num_axes": 2}, normal(2, 3, 2, 2), id="negative-axis"),
    Case({"type": "Scale"}, pair((2, 3, 4, 2), (3, 4)), inplace=True, id="two-bottoms"),
    Case({"type": "Scale", "axis": 0, "bias_term": True}, pair((2, 3, 4), (2, 3)), inplace=True,
         id="two-bottoms-bias"),
    Case({"type": "Scale"}, pair((2, 3, 4), ()), id="two-bottoms-scalar"),
    Case({"type": "Bias"}, normal(2, 3, 4), inplace=True),
    Case({"type": "Bias", "num_axes": 0}, normal(2, 3, 4), inplace=True, id="scalar"),
    Case({"type": "Bias", "num_axes": -1}, normal(2, 3, 2, 2), inplace=True, id="to-end"),
    Case({"type": "Bias", "axis": 0, "num_axes": 2}, normal(2, 3, 4), inplace=True, id="axis0-2axes"),
    Case({"type": "Bias"}, pair((2, 3, 4, 2), (3, 4)), inplace=True, id="two-bottoms"),
    Case({"type": "Bias", "axis": -1}, pair((3, 2, 4), (4,)), id="two-bottoms-last-axis"),
]
