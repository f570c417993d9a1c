"""Derive the deploy net from the TEST net: data layers out, an Input in, losses out.

Caffe users kept a hand-written deploy.prototxt in step with train_val; here it is computed.
- Every data layer (``is_data``) goes; the blobs it gave that the rest still reads become the
  tops of one ``Input`` layer, shaped as in the TEST net.
- A loss layer with a ``deploy_as`` type (SoftmaxWithLoss -> Softmax, SigmoidCrossEntropyLoss
  -> Sigmoid) becomes that layer on its first bottom, with top ``prob``; other losses and
  Accuracy go.
- Then every layer whose bottoms are no longer produced goes, and every layer whose tops only
  the removed layers read as targets (the Flatten that shaped a loss target), until none is
  left to remove.  A removed loss's first bottom is a prediction: it stays, as an output.

The TEST net is the one with the given stages, or, when the file's TEST layers require stages
(the autoencoder's ``test-on-train``/``test-on-test``), the first stage set its rules name.
``DummyData`` counts as a data layer: it stands in for a dataset, and a deployed net is fed.
"""

from __future__ import annotations

from typing import Iterable

from netspec.core.layer import layer_class
from netspec.graph.plan import plan as plan_net
from netspec.graph.splits import insert_splits
from netspec.graph.state import filter_net, stage_sets
from netspec.spec.model import LayerSpec, NetSpec, Src
from netspec.spec.normalize import normalize_layer


def is_source(cls) -> bool:
    """A layer the deploy net replaces by its Input: a dataset reader or generated data."""
    return bool(cls.is_data) or cls.type == "DummyData"


def derive_deploy(net: NetSpec, batch: int | None = None, level: int | None = None,
                  stages: Iterable[str] | None = None) -> NetSpec:
    """The deploy net of a normalized (unfiltered) net."""
    if stages is None:
        stages = stage_sets(net, "TEST")[0]
    test = filter_net(net, "TEST", level, stages)
    shapes = plan_net(insert_splits(test)).blobs
    read_in_test = {b for l in test.layers for b in l.get("bottom", [])}
    data_tops: list[str] = []
    kept: list[LayerSpec] = []
    predictions: set[str] = set()
    for layer in test.layers:
        cls = layer_class(layer["type"])
        if is_source(cls):
            data_tops.extend(t for t in layer["top"] if t not in data_tops)
            continue
        if cls.is_loss or layer["type"] == "Accuracy":
            predictions.update(layer.get("bottom", [])[:1])
            if cls.deploy_as and layer.get("bottom"):
                kept.append(_replacement(layer, cls.deploy_as, kept))
            continue
        kept.append(layer)
    read_in_test -= predictions
    # drop layers that lost their inputs, and layers that fed only removed layers, repeatedly
    while True:
        produced = set(data_tops)
        out = []
        for layer in kept:
            if all(b in produced for b in layer.get("bottom", [])):
                out.append(layer)
                produced.update(layer["top"])
        read = {b for l in out for b in l.get("bottom", [])}
        out = [l for l in out if not l["top"] or any(t in read or t not in read_in_test for t in l["top"])]
        if len(out) == len(kept):
            break
        kept = out
    used = [t for t in data_tops if any(t in l.get("bottom", []) for l in kept)]
    layers = []
    if used:
        shape = [list(shapes[t]) for t in used]
        if batch is not None:
            shape = [[batch] + s[1:] for s in shape]
        names = {l["name"] for l in kept}
        name = used[0] if used[0] not in names else "input"
        src = next((l.src for l in test.layers if is_source(layer_class(l["type"]))), None)
        fields = {"name": name, "type": "Input", "top": used,
                  "shape": shape[0] if len(shape) == 1 else shape}
        layers.append(normalize_layer(fields, None, src or Src()))
    layers.extend(kept)
    return test.with_layers(layers, state={"phase": "TEST"})


def _replacement(layer: LayerSpec, new_type: str, kept: list[LayerSpec]) -> LayerSpec:
    names = {l["name"] for l in kept} | {t for l in kept for t in l["top"]}
    name = "prob" if "prob" not in names else f"{layer['name']}_prob"
    fields = {"name": name, "type": new_type, "bottom": [layer["bottom"][0]], "top": [name]}
    if new_type == "Softmax" and "axis" in layer:
        fields["axis"] = layer["axis"]
    return normalize_layer(fields, None, layer.src)
