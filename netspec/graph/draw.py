"""A planned net as a Graphviz DOT graph: layers as boxes, blobs as ellipses labelled with shapes.

Colours follow Caffe's ``draw_net.py`` (convolution red, pooling orange, inner product
purple, element-wise layers green, losses grey-blue).  Each write of a blob is its own node,
so in-place layers draw as a chain instead of a loop.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from netspec.errors import NetspecError
from netspec.graph.plan import Plan, describe_shape

COLOURS = {
    "Convolution": "#ff9999", "Deconvolution": "#ff9999", "Pooling": "#ffcc80",
    "InnerProduct": "#ccb3ff", "Embed": "#ccb3ff", "Data": "#b3e0ff", "ImageData": "#b3e0ff",
    "HDF5Data": "#b3e0ff", "Input": "#b3e0ff", "DummyData": "#b3e0ff", "Split": "#eeeeee",
    "Concat": "#e6e6b3", "Slice": "#e6e6b3", "Eltwise": "#e6e6b3", "BatchNorm": "#99d6d6",
    "Scale": "#99d6d6", "Bias": "#99d6d6", "LRN": "#99d6d6", "MVN": "#99d6d6", "Accuracy": "#dddddd",
}
NEURON = "#b3ffb3"
NL = "\\n"  # a line break inside a DOT label
LOSS = "#a3b8cc"


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


def _detail(lp) -> str:
    p = lp.spec
    t = lp.type
    if t in ("Convolution", "Deconvolution"):
        k = p.get("kernel_size")
        return f"{p['num_output']} out, k{k} s{p.get('stride', 1)} p{p.get('pad', 0)}"
    if t == "Pooling":
        return f"{p.get('pool', 'MAX')} k{p.get('kernel_size', 'global')} s{p.get('stride', 1)}"
    if t == "InnerProduct":
        return f"{p['num_output']} out"
    if t in ("Data", "ImageData", "HDF5Data"):
        return str(p.get("source", ""))
    return ""


def to_dot(plan: Plan, rankdir: str = "TB") -> str:
    name = plan.net.get("name", "net")
    title = f"{name} ({plan.phase})"
    lines = [f"digraph {_q(name)} {{",
             f"  rankdir={rankdir}; node [fontname=Helvetica, fontsize=10]; edge [color=\"#555555\"];",
             f"  label={_q(title)}; labelloc=t;"]
    version: dict[str, int] = {}

    def blob_node(name: str, new: bool) -> str:
        if new:
            version[name] = version.get(name, -1) + 1
        v = version.get(name, 0)
        return f"blob:{name}:{v}"

    declared: set[str] = set()
    for i, lp in enumerate(plan.layers):
        lid = f"layer:{i}"
        colour = COLOURS.get(lp.type, LOSS if lp.layer.is_loss else NEURON if len(lp.bottoms) == 1 and
                             len(lp.tops) == 1 and lp.top_shapes == lp.bottom_shapes else "#f2f2f2")
        label = f"{lp.name}\\n({lp.type})"
        d = _detail(lp)
        if d:
            label += f"\\n{d}"
        lines.append(f"  {_q(lid)} [shape=box, style=\"filled,rounded\", fillcolor={_q(colour)}, "
                     f"label={_q(label)}];")
        for b in lp.bottoms:
            node = blob_node(b, new=b not in version)
            if node not in declared:
                declared.add(node)
                lines.append(f"  {_q(node)} [shape=ellipse, label={_q(b)}];")
            lines.append(f"  {_q(node)} -> {_q(lid)};")
        for t, s in zip(lp.tops, lp.top_shapes):
            node = blob_node(t, new=True)
            declared.add(node)
            lines.append(f"  {_q(node)} [shape=ellipse, label={_q(t + NL + describe_shape(s))}];")
            lines.append(f"  {_q(lid)} -> {_q(node)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot: str, out: Path) -> None:
    """Write ``dot`` to ``out``: as DOT text for ``.dot``/``.gv``, else through Graphviz's ``dot``."""
    fmt = out.suffix.lower().lstrip(".")
    if fmt in ("dot", "gv"):
        _atomic_text(out, dot)
        return
    if fmt not in ("svg", "png", "pdf"):
        raise NetspecError(f"cannot draw to '{out.name}': use a .svg, .png, .pdf or .dot file")
    exe = shutil.which("dot")
    if exe is None:
        raise NetspecError("drawing needs Graphviz's 'dot' program: apt-get install graphviz "
                           "(or write a .dot file and render it elsewhere)")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=dot.encode(), capture_output=True,
                              timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetspecError(f"Graphviz failed: {e}") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise NetspecError(f"Graphviz failed: {proc.stderr.decode(errors='replace').strip()}")
    tmp.replace(out)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
