"""Bring a loaded document to the current format before validation.

Today that means one thing: Caffe-style nesting is accepted and flattened, so a layer may
say ``convolution_param: {num_output: 20}`` (as a prototxt does) and mean ``num_output: 20``,
and ``transform_param`` means ``transform``.  Lines move with the fields, so errors in a
nested field still point at the line where it was written.  The ``netspec:`` version key is
checked by the schema; future format versions will be upgraded here.
"""

from __future__ import annotations

import copy

from netspec.errors import SpecError, raise_all
from netspec.spec.load import Doc

RENAMED_BLOCKS = {"transform_param": "transform"}


def migrate(doc: Doc) -> Doc:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
        return doc
    data = copy.deepcopy(data)
    lines = dict(doc.lines)
    errors = []
    for i, layer in enumerate(data["layers"]):
        if not isinstance(layer, dict):
            continue
        base = ("layers", i)
        for key in [k for k in layer if isinstance(k, str) and k.endswith("_param")]:
            block = layer[key]
            if key in RENAMED_BLOCKS:
                new = RENAMED_BLOCKS[key]
                if new in layer:
                    errors.append(SpecError(f"give '{new}' or '{key}', not both", file=doc.file,
                                            line=doc.line(base + (key,)), layer=layer.get("name"),
                                            layer_type=layer.get("type"), field=key))
                    continue
                layer[new] = layer.pop(key)
                _move_lines(lines, base + (key,), base + (new,))
                continue
            if not isinstance(block, dict):
                continue  # the schema reports it as an unknown field
            del layer[key]
            for sub, value in block.items():
                if sub in layer:
                    errors.append(SpecError(f"'{sub}' is given both in '{key}' and directly in the layer",
                                            file=doc.file, line=doc.line(base + (key, sub)),
                                            layer=layer.get("name"), layer_type=layer.get("type"), field=sub))
                    continue
                layer[sub] = value
                _move_lines(lines, base + (key, sub), base + (sub,))
    raise_all(errors)
    return Doc(data=data, lines=lines, file=doc.file, base_dir=doc.base_dir)


def _move_lines(lines: dict, old: tuple, new: tuple) -> None:
    for p in [p for p in lines if p[: len(old)] == old]:
        lines[new + p[len(old):]] = lines[p]
