"""Commands that read a net file without running it: check, summary, render, schema, draw."""

from __future__ import annotations

import json
from pathlib import Path

import click

from netspec.cli import options as opt


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_flops(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@click.command()
@opt.net_file
@opt.stage
@opt.level
@click.option("-q", "--quiet", is_flag=True, help="print nothing when the net is valid")
def check(file, stages, level, quiet):
    """Validate a net or solver file: syntax, schema, connections and shapes of every phase.

    A solver file is checked with the nets it trains; a net file that names a solver
    (``solver:``) is checked with that solver.  Opens no data and imports no compute kernels.
    Exit status 0 when valid, 1 with every error (file:line, layer, field) otherwise.
    """
    from netspec import api
    from netspec.solvers.config import resolve_training

    doc = api.load_doc(file)
    solver_keys = {"net", "net_param", "train_net", "train_net_param", "base_lr", "lr_policy", "max_iter"}

    def is_solver_doc(d):
        return isinstance(d.data, dict) and "layers" not in d.data and bool(solver_keys & set(d.data))

    training = None
    if is_solver_doc(doc) or (isinstance(doc.data, dict) and doc.data.get("solver") is not None):
        training = resolve_training(file)
    nets = [training.train.spec] if training and is_solver_doc(doc) else [api.net_from_doc(doc)]
    if training:
        seen = {n.file for n in nets}
        for use in [training.train] + training.tests:
            if use.spec.file not in seen:
                seen.add(use.spec.file)
                nets.append(use.spec)
        for w in training.warnings:
            click.echo(f"warning: {w}", err=True)
    for net in nets:
        res = api.check(net, stages=stages or None, level=level)
        for w in res.warnings:
            click.echo(f"warning: {w}", err=True)
        if not quiet:
            parts = [f"{label}: {len(p.layers)} layers" for label, p in res.plans.items()]
            any_plan = next(iter(res.plans.values()))
            click.echo(f"{res.net.file}: OK ({_fmt_int(any_plan.num_params)} params; {'; '.join(parts)})")
    if training and not quiet:
        s = training.solver
        tests = ", ".join(f"{u.label or 'test'} x{u.test_iter}" for u in training.tests) or "none"
        click.echo(f"{s.file}: OK (solver {s.get('type', 'SGD')}, lr_policy {s.get('lr_policy')}, "
                   f"max_iter {s.get('max_iter')}; test nets: {tests})")


@click.command()
@opt.net_file
@opt.phase
@opt.stage
@opt.level
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
def summary(file, phase, stages, level, as_json):
    """A table of the net: layer, type, top shapes, params, FLOPs and memory, with totals.

    FLOPs count one forward pass of one batch (a multiply-add is 2); memory counts the
    float32 tops a layer writes (in-place tops are free) plus its params.
    """
    from netspec import api

    net = api.load_net(file)
    p = api.compile_net(net, phase, level, stages or None)
    rows = api.summary_rows(p)
    if as_json:
        click.echo(json.dumps({"net": net.get("name"), "phase": p.phase, "layers": rows,
                               "total": api.summary_totals(p, rows)}, indent=1))
        return
    head = ("layer", "type", "top shapes", "params", "FLOPs", "memory")
    table = [head] + [(r["layer"], r["type"], "  ".join(r["tops"]) or "-", _fmt_int(r["params"]) if r["params"] else "-",
                       _fmt_flops(r["flops"]) if r["flops"] else "-", _fmt_bytes(r["memory"]))
                      for r in rows]
    tot = api.summary_totals(p, rows)
    table.append(("total", "", "", _fmt_int(tot["params"]), _fmt_flops(tot["flops"]), _fmt_bytes(tot["memory"])))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    right = {3, 4, 5}
    stage = p.net.get("state", {}).get("stage")
    title = f"{net.get('name', Path(file).stem)} ({p.phase}{'[' + ','.join(stage) + ']' if stage else ''}): " \
            f"{len(p.layers)} layers"
    click.echo(title)
    for k, r in enumerate(table):
        if k == 1 or k == len(table) - 1:
            click.echo("  ".join("-" * w for w in widths))
        click.echo("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    click.echo(f"inputs: {', '.join(p.inputs) or '-'}    outputs: {', '.join(p.outputs) or '-'}")
    click.echo(f"params: {_fmt_int(tot['params'])} ({_fmt_bytes(tot['params'] * 4)})    "
               f"learnable: {_fmt_int(tot['learnable'])}")


@click.command()
@opt.net_file
@click.option("--phase", type=click.Choice(["TRAIN", "TEST", "DEPLOY"], case_sensitive=False), default=None,
              callback=lambda c, p, v: v.upper() if v else v,
              help="render one phase's net (default: the normalized net with all phases)")
@opt.stage
@opt.level
@click.option("--splits", is_flag=True, help="also show the Split layers the compiler inserts")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write to a file instead of stdout")
@click.option("--json", "as_json", is_flag=True, help="write JSON instead of YAML")
def render(file, phase, stages, level, splits, output, as_json):
    """Print the net as the compiler sees it: defaults filled in, shorthands expanded,
    and with --phase, filtered to one phase (DEPLOY: the derived deploy net)."""
    from netspec import api
    from netspec.graph.splits import insert_splits
    from netspec.spec.dump import dump
    from netspec.spec.model import to_plain

    net = api.load_net(file)
    out = net if phase is None else api.phase_net(net, phase, level, stages or None)
    if splits:
        out = insert_splits(out)
    text = (json.dumps(to_plain(out), indent=1) + "\n") if as_json else dump(out)
    if output:
        tmp = Path(output).with_name(f".{Path(output).name}.tmp")
        tmp.write_text(text)
        tmp.replace(output)
    else:
        click.echo(text, nl=False)


@click.command()
@click.option("--types", is_flag=True, help="list the layer types instead, with their count")
@click.option("--kind", type=click.Choice(["net"]), default="net", show_default=True,
              help="which file format's schema")
def schema(types, kind):
    """Print the JSON Schema of net files (for editors: completion and validation)."""
    from netspec.core.layer import registry
    from netspec.spec.schema import build_net_schema, dump

    if types:
        reg = registry()
        for t in sorted(reg):
            doc = (reg[t].__doc__ or "").strip().splitlines()[0] if reg[t].__doc__ else ""
            click.echo(f"{t:<26} {doc}")
        click.echo(f"{len(reg)} layer types")
        return
    click.echo(dump(build_net_schema()), nl=False)


@click.command()
@opt.net_file
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="the picture: .svg, .png, .pdf, or .dot for the Graphviz source")
@opt.phase
@opt.stage
@opt.level
@click.option("--rankdir", type=click.Choice(["TB", "LR", "BT", "RL"]), default="TB", show_default=True)
def draw(file, output, phase, stages, level, rankdir):
    """Draw the net of one phase, with the shape of every blob (through Graphviz)."""
    from netspec import api
    from netspec.graph.draw import render as render_dot, to_dot

    net = api.load_net(file)
    p = api.compile_net(net, phase, level, stages or None)
    render_dot(to_dot(p, rankdir), Path(output))
    click.echo(f"wrote {output}")


COMMANDS = [check, summary, render, schema, draw]
