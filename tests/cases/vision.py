"""Cases for the vision layers: Convolution, Deconvolution, Pooling, Im2col."""

from . import Case


def normal(*shapes):
    """One standard-normal bottom per shape."""
    return lambda rng: [rng.normal(size=s) for s in shapes]


def positive(*shape):
    """Inputs in [0.1, 1]: STOCHASTIC pooling samples in proportion to the values."""
    return lambda rng: [rng.uniform(0.1, 1.0, size=shape)]


S = (2, 3, 6, 5)

CASES = [
    # Convolution
    Case({"type": "Convolution", "num_output": 4, "kernel_size": 3}, normal(S), id="basic"),
    Case({"type": "Convolution", "num_output": 6, "kernel_size": 3, "pad": 1, "group": 2}, normal((2, 4, 5, 5)),
         id="group"),
    Case({"type": "Convolution", "num_output": 3, "kernel_size": 3, "dilation": 2, "pad": 1}, normal((2, 2, 7, 6)),
         id="dilation"),
    Case({"type": "Convolution", "num_output": 2, "kernel_size": 3, "stride": 2, "pad": 1}, normal(S),
         id="stride-pad"),
    Case({"type": "Convolution", "num_output": 3, "kernel_h": 2, "kernel_w": 3, "stride_h": 1, "stride_w": 2,
          "pad_h": 1, "pad_w": 0}, normal(S), id="rect"),
    Case({"type": "Convolution", "num_output": 3, "kernel_size": 3, "bias_term": False}, normal(S), id="nobias"),
    Case({"type": "Convolution", "num_output": 3, "kernel_size": 3, "pad": 1, "top": ["a", "b"]},
         normal(S, S), id="two-bottoms"),
    Case({"type": "Convolution", "num_output": 6, "kernel_size": 1, "group": 3}, normal((2, 6, 3, 4)),
         id="1x1-small"),
    Case({"type": "Convolution", "num_output": 4, "kernel_size": 1, "group": 2}, normal((2, 2, 10, 10)),
         id="1x1-gemm"),
    Case({"type": "Convolution", "num_output": 3, "kernel_size": 3, "stride": 2, "pad": 1, "dilation": 1},
         normal((2, 2, 9)), id="1d"),
    Case({"type": "Convolution", "num_output": 2, "kernel_size": [2, 3, 2], "stride": [1, 2, 1], "pad": 1,
          "dilation": [1, 1, 2]}, normal((2, 2, 4, 5, 4)), id="3d"),
    Case({"type": "Convolution", "num_output": 3, "kernel_size": 2, "axis": 2}, normal((2, 2, 3, 4, 3)),
         id="axis2"),
    # Deconvolution
    Case({"type": "Deconvolution", "num_output": 6, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2},
         normal((2, 4, 3, 4)), id="stride-pad-group"),
    Case({"type": "Deconvolution", "num_output": 2, "kernel_size": 4, "stride": 2, "pad": 1, "bias_term": False},
         normal((2, 3, 3, 3)), id="upsample-nobias"),
    Case({"type": "Deconvolution", "num_output": 3, "kernel_size": 1}, normal((2, 4, 3, 3)), id="1x1-small"),
    Case({"type": "Deconvolution", "num_output": 2, "kernel_size": 1}, normal((1, 3, 10, 11)), id="1x1-gemm"),
    Case({"type": "Deconvolution", "num_output": 2, "kernel_size": 3, "stride": 2, "dilation": 2},
         normal((2, 3, 5)), id="1d-dilation"),
    Case({"type": "Deconvolution", "num_output": 2, "kernel_size": 2, "stride": 2, "top": ["a", "b"]},
         normal((1, 2, 2, 3, 2), (1, 2, 2, 3, 2)), id="3d-two-bottoms"),
    # Pooling
    Case({"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2}, normal(S), id="max"),
    Case({"type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2, "top": ["p", "mask"]}, normal(S),
         id="max-argmax", check_tops=[0]),
    Case({"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}, normal(S), id="max-pad"),
    Case({"type": "Pooling", "pool": "MAX", "kernel_h": 2, "kernel_w": 3, "stride_h": 2, "stride_w": 1,
          "round_mode": "FLOOR"}, normal(S), id="max-rect-floor"),
    Case({"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}, normal(S), id="ave-pad"),
    Case({"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "round_mode": "FLOOR"}, normal(S),
         id="ave-floor"),
    Case({"type": "Pooling", "pool": "AVE", "global_pooling": True}, normal(S), id="ave-global"),
    Case({"type": "Pooling", "pool": "MAX", "global_pooling": True}, normal(S), id="max-global"),
    Case({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 3, "stride": 2}, positive(*S), phase="TEST",
         grad=False, id="stochastic-test"),
    # the sample is a step function of the inputs: a small step keeps the finite differences
    # from crossing a sampling boundary (the harness redraws the same uniforms every forward)
    Case({"type": "Pooling", "pool": "STOCHASTIC", "kernel_size": 2, "stride": 2}, positive(*S), step=1e-5,
         id="stochastic-train"),
    # Im2col
    Case({"type": "Im2col", "kernel_size": 3, "pad": 1, "stride": 2}, normal(S)),
    Case({"type": "Im2col", "kernel_h": 2, "kernel_w": 3, "dilation": 2}, normal((2, 2, 6, 7)), id="rect-dilation"),
    Case({"type": "Im2col", "kernel_size": 2, "pad": [1, 0, 1]}, normal((1, 2, 3, 4, 3)), id="3d"),
]
