"""Write nets (and other specs) back as readable YAML, in the style people write by hand.

Top-level keys and each layer are block mappings; short lists (bottoms, shapes) and small
mappings (fillers, rules, param settings) are written inline.  Reading the output back gives
the same data (``load(dump(x)) == x``).
"""

from __future__ import annotations

from typing import Any

import yaml

from netspec.spec.load import EXPONENT_FLOAT
from netspec.spec.model import to_plain


class _Dumper(yaml.SafeDumper):
    pass


# The loader reads 1e-4 as a float; the dumper must know it too, or the string "1e-4" would be
# written bare and read back as a number.
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _flow_ok(v: Any, depth: int = 0) -> bool:
    if _is_scalar(v):
        return True
    if depth > 2:
        return False
    if isinstance(v, list):
        return len(v) <= 16 and all(_flow_ok(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return len(v) <= 6 and all(_flow_ok(x, depth + 1) for x in v.values())
    return False


def _repr_list(dumper, data):
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_flow_ok(data))


def _repr_dict(dumper, data):
    flow = getattr(dumper, "_flow_depth", 0) > 0 and _flow_ok(data)
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _repr_float(dumper, data):
    if data != data or data in (float("inf"), float("-inf")):
        return yaml.SafeDumper.represent_float(dumper, data)
    text = repr(float(data))
    if "e" in text and "." not in text.split("e")[0]:
        m, e = text.split("e")
        text = f"{m}.0e{e}"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


_Dumper.add_representer(list, _repr_list)
_Dumper.add_representer(float, _repr_float)


class _LayerDict(dict):
    """A mapping written in block style whose values are written inline when small."""


class _Inline(dict):
    pass


def _repr_layer(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False)


def _repr_inline(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def _repr_plain_dict(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=False)


_Dumper.add_representer(_LayerDict, _repr_layer)
_Dumper.add_representer(_Inline, _repr_inline)
_Dumper.add_representer(dict, _repr_plain_dict)


def _shape(v: Any, top: bool = False) -> Any:
    """Mark small mappings for inline style; recurse into the rest."""
    if isinstance(v, dict):
        inner = {k: _shape(x) for k, x in v.items()}
        if not top and _flow_ok(v):
            return _Inline(inner)
        return _LayerDict(inner)
    if isinstance(v, list):
        return [_shape(x) for x in v]
    return v


def dump(data: Any, header: str | None = None) -> str:
    """YAML text for a spec (NetSpec, solver dict, manifest...)."""
    plain = to_plain(data)
    if isinstance(plain, dict):
        body = {}
        for k, v in plain.items():
            if k == "layers" and isinstance(v, list):
                body[k] = [_LayerDict({kk: _shape(vv) for kk, vv in layer.items()}) for layer in v]
            else:
                body[k] = _shape(v, top=False)
        out = _LayerDict(body)
    else:
        out = _shape(plain, top=True)
    text = yaml.dump(out, Dumper=_Dumper, sort_keys=False, width=120, default_flow_style=False,
                     allow_unicode=True)
    return (f"# {header}\n" if header else "") + text
