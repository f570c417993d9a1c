"""Split insertion (Caffe's ``InsertSplits``): a blob read by several layers gets a Split.

Layers overwrite their bottoms' gradients, so a blob with two consumers needs a Split layer
whose backward sums the gradients of its tops.  Naming and loss-weight handling follow Caffe
exactly: layer ``{blob}_{producer}_{i}_split`` with tops ``..._split_{k}``; a consumed top that
carries a loss weight hands it to ``split_0`` and the consumers start at ``split_1``.
Unknown bottoms are left alone here; ``plan`` reports them.
"""

from __future__ import annotations

from collections import defaultdict

from netspec.spec.model import LayerSpec, NetSpec


def split_layer_name(blob: str, layer: str, top_idx: int) -> str:
    return f"{blob}_{layer}_{top_idx}_split"


def split_blob_name(blob: str, layer: str, top_idx: int, k: int) -> str:
    return f"{split_layer_name(blob, layer, top_idx)}_{k}"


def is_inserted_split(layer: LayerSpec) -> bool:
    """Whether ``layer`` is a Split this pass made (by its naming), not one the user wrote."""
    name = layer.get("name", "")
    tops = layer.get("top", [])
    return (layer.get("type") == "Split" and name.endswith("_split")
            and tops == [f"{name}_{k}" for k in range(len(tops))])


def insert_splits(net: NetSpec) -> NetSpec:
    layers = net.layers
    last_producer: dict[str, tuple[int, int]] = {}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    consumers: dict[tuple[int, int], int] = defaultdict(int)
    loss_of: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, blob in enumerate(layer.get("bottom", [])):
            if blob in last_producer:
                src = last_producer[blob]
                source[(i, j)] = src
                consumers[src] += 1
        for j, blob in enumerate(layer.get("top", [])):
            last_producer[blob] = (i, j)
        for j, w in enumerate(layer.get("loss_weight", [])):
            if w and j < len(layer.get("top", [])):
                loss_of[(i, j)] = w
                consumers[(i, j)] += 1

    next_split: dict[tuple[int, int], int] = defaultdict(int)
    out: list[LayerSpec] = []
    for i, layer in enumerate(layers):
        bottoms = list(layer.get("bottom", []))
        for j, blob in enumerate(bottoms):
            src = source.get((i, j))
            if src is not None and consumers[src] > 1:
                producer = layers[src[0]]
                bottoms[j] = split_blob_name(blob, producer["name"], src[1], next_split[src])
                next_split[src] += 1
        new = layer.derive(bottom=bottoms) if bottoms != layer.get("bottom", []) else layer
        splits = []
        for j, blob in enumerate(layer.get("top", [])):
            n = consumers[(i, j)]
            if n <= 1:
                continue
            fields = {"name": split_layer_name(blob, layer["name"], j), "type": "Split", "bottom": [blob],
                      "top": [split_blob_name(blob, layer["name"], j, k) for k in range(n)]}
            w = loss_of.get((i, j))
            if w:
                fields["loss_weight"] = [w] + [0.0] * (n - 1)
                lw = list(new["loss_weight"])
                lw[j] = 0.0
                new = new.derive(loss_weight=lw)
                next_split[(i, j)] += 1
            splits.append(LayerSpec(fields, layer.src))
        out.append(new)
        out.extend(splits)
    return net.with_layers(out)
