"""Shared field handling for layers with kernels over spatial axes (convolution, pooling).

Caffe lets a kernel size be one number, one per spatial axis, or ``kernel_h``/``kernel_w``
(likewise pad and stride).  ``normalize_hw`` folds the ``_h``/``_w`` forms into the list form
and ``spatial`` expands a value to one entry per spatial axis, with located errors.
"""

from __future__ import annotations

from netspec.errors import SpecError
from netspec.spec import types as T

SPATIAL_FIELDS = ("kernel", "pad", "stride")


def hw_props(default_pad: int | None = None, default_stride: int | None = None) -> dict:
    """Schema properties: kernel_size/pad/stride (int or list) and their _h/_w forms."""
    return {
        "kernel_size": T.ints(1, desc="kernel size: one value, or one per spatial axis"),
        "pad": T.ints(0, default=default_pad, desc="zero padding: one value, or one per spatial axis"),
        "stride": T.ints(1, default=default_stride, desc="stride: one value, or one per spatial axis"),
        "kernel_h": T.integer(1, desc="2-D only: kernel height (with kernel_w)"),
        "kernel_w": T.integer(1, desc="2-D only: kernel width (with kernel_h)"),
        "pad_h": T.integer(0, desc="2-D only: padding height (with pad_w)"),
        "pad_w": T.integer(0, desc="2-D only: padding width (with pad_h)"),
        "stride_h": T.integer(1, desc="2-D only: stride height (with stride_w)"),
        "stride_w": T.integer(1, desc="2-D only: stride width (with stride_h)"),
    }


HW_RULES = {
    "dependentRequired": {"kernel_h": ["kernel_w"], "kernel_w": ["kernel_h"], "pad_h": ["pad_w"],
                          "pad_w": ["pad_h"], "stride_h": ["stride_w"], "stride_w": ["stride_h"]},
    "allOf": [{"not": {"required": ["kernel_size", "kernel_h"]}},
              {"not": {"required": ["pad_h", "pad"]}},
              {"not": {"required": ["stride_h", "stride"]}}],
}


def normalize_hw(fields: dict) -> dict:
    """``kernel_h: 3, kernel_w: 5`` -> ``kernel_size: [3, 5]`` (and pad, stride)."""
    f = dict(fields)
    for base, full in (("kernel", "kernel_size"), ("pad", "pad"), ("stride", "stride")):
        h, w = f.pop(f"{base}_h", None), f.pop(f"{base}_w", None)
        if h is not None and w is not None:
            f[full] = [h, w]
    return f


def spatial(layer, field: str, nsp: int, default: int | None) -> list[int]:
    """The value of ``field`` as one int per spatial axis."""
    v = layer.p.get(field, default)
    if v is None:
        raise layer.error(f"missing required field '{field}'", field, cls=SpecError)
    vals = [int(x) for x in v] if isinstance(v, list) else [int(v)]
    if len(vals) == 1:
        return vals * nsp
    if len(vals) != nsp:
        raise layer.error(f"gives {len(vals)} values but the input has {nsp} spatial axes; give one value "
                          f"or one per spatial axis", field)
    return vals

