"""Replace a net's data layers by DummyData of the same shapes.

For timing and smoke-testing a net where its dataset is not available (``netspec time
--dummy-data``, converted Caffe nets whose LMDB sources cannot be read): data tops become
standard-normal noise, label tops (any top after the first) constant 0, a valid class index.
"""

from __future__ import annotations

from netspec.core.layer import layer_class
from netspec.graph.plan import plan as plan_net
from netspec.graph.splits import insert_splits
from netspec.spec.model import NetSpec
from netspec.spec.normalize import normalize_layer


def with_dummy_data(net: NetSpec) -> NetSpec:
    """``net`` (filtered to one phase) with every data layer replaced by DummyData."""
    shapes = plan_net(insert_splits(net)).blobs
    layers = []
    for layer in net.layers:
        if not layer_class(layer["type"]).is_data:
            layers.append(layer)
            continue
        tops = layer["top"]
        fields = {
            "name": layer["name"], "type": "DummyData", "top": list(tops),
            "shape": [list(shapes[t]) for t in tops],
            "data_filler": [{"type": "gaussian", "std": 1.0} if j == 0 else {"type": "constant", "value": 0.0}
                            for j in range(len(tops))],
        }
        layers.append(normalize_layer(fields, None, layer.src))
    return net.with_layers(layers)
