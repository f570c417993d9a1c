"""Cases for the utility layers: Concat, Slice, Eltwise, Flatten, Reshape, Silence, Softmax,
ArgMax, Reduction, Tile, Crop (Split's case is in core.py)."""

import numpy as np

from . import Case


def normal(*shapes):
    """One standard-normal bottom per shape."""
    return lambda rng: [rng.normal(size=s) for s in shapes]


def away_from_zero(*shapes):
    """Bottoms with |x| in [0.5, 2]: PROD's quotient gradient divides by them."""
    return lambda rng: [rng.uniform(0.5, 2.0, size=s) * rng.choice([-1.0, 1.0], size=s) for s in shapes]


S = (2, 3, 4)

CASES = [
    # Concat
    Case({"type": "Concat"}, normal((2, 3, 4), (2, 1, 4), (2, 2, 4)), id="axis1-3bottoms"),
    Case({"type": "Concat", "axis": -1}, normal((2, 3, 2), (2, 3, 5)), id="last-axis"),
    Case({"type": "Concat", "axis": 0}, normal((1, 3, 2), (3, 3, 2)), id="axis0"),
    Case({"type": "Concat", "concat_dim": 2}, normal((2, 2, 1, 3), (2, 2, 2, 3)), id="concat_dim"),
    Case({"type": "Concat"}, normal((2, 3)), id="one-bottom"),
    # Slice
    Case({"type": "Slice", "top": ["a", "b", "c"], "slice_point": [1, 3]}, normal((2, 5, 3)), id="points"),
    Case({"type": "Slice", "top": ["a", "b"], "axis": -1}, normal((2, 3, 4)), id="equal-last-axis"),
    Case({"type": "Slice", "top": ["a", "b", "c"], "slice_dim": 0}, normal((6, 2)), id="slice_dim"),
    Case({"type": "Slice", "top": ["a", "b"], "axis": 2, "slice_point": 3}, normal((2, 2, 4, 2)), id="one-point"),
    # Eltwise
    Case({"type": "Eltwise"}, normal(S, S), inplace=True, id="sum"),
    Case({"type": "Eltwise", "operation": "SUM", "coeff": [1.0, -2.0, 0.5]}, normal(S, S, S), inplace=True,
         id="sum-coeff"),
    Case({"type": "Eltwise", "operation": "PROD"}, normal(S, S, S), inplace=True, id="prod-stable"),
    Case({"type": "Eltwise", "operation": "PROD", "stable_prod_grad": False}, away_from_zero(S, S, S),
         inplace=True, id="prod-quotient"),
    Case({"type": "Eltwise", "operation": "MAX"}, normal(S, S), inplace=True, id="max2"),
    Case({"type": "Eltwise", "operation": "MAX"}, normal(S, S, S, S), inplace=True, id="max4"),
    # Flatten and Reshape (views)
    Case({"type": "Flatten"}, normal((2, 3, 2, 2))),
    Case({"type": "Flatten", "axis": 2, "end_axis": 3}, normal((2, 3, 2, 2, 2)), id="middle"),
    Case({"type": "Flatten", "axis": 0, "end_axis": -2}, normal((2, 3, 4)), id="axis0"),
    Case({"type": "Reshape", "shape": [0, -1]}, normal((2, 3, 4))),
    Case({"type": "Reshape", "shape": [2, 2], "axis": 1, "num_axes": 1}, normal((2, 4, 3)), id="sub-range"),
    Case({"type": "Reshape", "shape": [1, -1], "axis": -1, "num_axes": 0}, normal((2, 6)), id="append-axes"),
    # Silence
    Case({"type": "Silence"}, normal((2, 3), (4,))),
    # Softmax (more axes than core.py's cases)
    Case({"type": "Softmax", "axis": 0}, normal((4, 3)), inplace=True, id="axis0"),
    Case({"type": "Softmax"}, normal((2, 3, 2, 2)), inplace=True, id="spatial"),
    # ArgMax (no gradient)
    Case({"type": "ArgMax"}, normal((3, 5)), grad=False),
    Case({"type": "ArgMax", "top_k": 3, "out_max_val": True}, normal((2, 3, 2, 2)), grad=False, id="topk-values"),
    Case({"type": "ArgMax", "axis": 1, "top_k": 2}, normal((2, 4, 3)), grad=False, id="axis"),
    Case({"type": "ArgMax", "axis": -1, "out_max_val": True, "top_k": 2}, normal((2, 3, 5)), grad=False,
         id="axis-values"),
    # Reduction
    Case({"type": "Reduction"}, normal((2, 3, 4)), id="sum-all"),
    Case({"type": "Reduction", "operation": "ASUM", "axis": 1, "coeff": -2.0}, normal((2, 3, 4)),
         kink=0.0, kink_range=1e-2, id="asum-axis1"),
    Case({"type": "Reduction", "operation": "SUMSQ", "axis": -1, "coeff": 0.5}, normal((2, 3, 4)), id="sumsq-last"),
    Case({"type": "Reduction", "operation": "MEAN", "axis": 2, "coeff": 3.0}, normal((2, 3, 4, 2)), id="mean"),
    # Tile
    Case({"type": "Tile", "tiles": 3}, normal((2, 3, 2))),
    Case({"type": "Tile", "axis": 0, "tiles": 2}, normal((2, 3))),
    Case({"type": "Tile", "axis": -1, "tiles": 4}, normal((2, 2, 3)), id="last-axis"),
    # Crop: the reference bottom gives only a shape
    Case({"type": "Crop", "offset": 1}, normal((2, 3, 5, 4), (1, 1, 3, 2))),
    Case({"type": "Crop", "axis": 1, "offset": [0, 2, 1]}, normal((2, 4, 5, 3), (2, 3, 2, 2)), id="axis1-offsets"),
    Case({"type": "Crop", "axis": -1}, normal((2, 3, 6), (9, 9, 4)), id="last-axis-no-offset"),
]
