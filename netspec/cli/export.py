"""``netspec export``: a net and its weights as an ONNX model, with a parity report."""

from __future__ import annotations

import click

from netspec.cli import options as opt


def _batch(ctx, param, value):
    if value is None or value == "dynamic":
        return value
    try:
        k = int(value)
    except ValueError:
        raise click.BadParameter("give 'dynamic' or a positive batch size") from None
    if k < 1:
        raise click.BadParameter("give 'dynamic' or a positive batch size")
    return k


@click.command()
@opt.net_file
@click.option("--weights", metavar="W", required=True, help="a .safetensors weights file or zoo:<name>")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="the .onnx file to write")
@click.option("--opset", type=int, default=None, help="the ONNX opset (13 to 21) [default: 17]")
@click.option("--batch", callback=_batch, metavar="dynamic|K", default=None,
              help="the batch axis: a symbolic 'dynamic', or a fixed size K [default: the deploy net's]")
@click.option("--parity", type=click.Choice(["test", "random", "none"]), default="test", show_default=True,
              help="compare with ONNX Runtime on the net's first TEST batch (random inputs when its data "
                   "cannot be read), on random inputs, or not at all")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="the largest max abs difference the parity check accepts (exit 1 above it)")
@opt.stage
@opt.level
def export(file, weights, output, opset, batch, parity, tolerance, stages, level):
    """Export the deploy net of FILE with its weights to ONNX.

    \b
      netspec export models/lenet/train_val.yaml --weights zoo:lenet-fashion-mnist -o lenet.onnx
      netspec export NET.yaml --weights W.safetensors -o net.onnx --batch dynamic --opset 17

    Every layer becomes the ONNX operators that compute exactly what it does; a layer with no exact
    equivalent is an error naming it.  The model passes onnx.checker with full shape inference, and
    its outputs are compared with netspec's (max abs and relative difference).
    """
    from pathlib import Path

    from netspec import api
    from netspec.caffe.report import write_bytes_atomic
    from netspec.errors import NetspecError
    from netspec.onnx import DEFAULT_OPSET
    from netspec.onnx.export import export_model
    from netspec.onnx.parity import check_parity, test_batch
    from netspec.spec.load import display_name
    from netspec.zoo_registry import PREFIX, resolve_weights

    net = api.load_net(file)
    wpath = resolve_weights(weights) if weights.startswith(PREFIX) else Path(weights)
    from netspec.io.weights import load_weights

    tensors = load_weights(wpath)
    exported = export_model(net, tensors, opset=opset or DEFAULT_OPSET, batch=batch, level=level,
                            stages=list(stages) or None, weights_name=display_name(wpath) if not
                            weights.startswith(PREFIX) else weights)
    data = exported.model.SerializeToString()
    write_bytes_atomic(Path(output), data)
    ops = sum(len(v) for v in exported.layers.values())
    shapes = ", ".join(f"{n} [" + ", ".join("N" if batch == "dynamic" and i == 0 else str(d) for i, d in enumerate(s))
                       + "]" for n, s in exported.inputs.items())
    click.echo(f"wrote {output} ({len(data):,} bytes; opset {opset or DEFAULT_OPSET}; {len(exported.layers)} layers "
               f"as {ops} ONNX nodes; inputs {shapes}; outputs {', '.join(exported.outputs)})")
    if parity == "none":
        return
    inputs, source = None, "random"
    if parity == "test":
        try:
            inputs, source = test_batch(net, exported.inputs, level=level, stages=list(stages) or None)
        except (NetspecError, KeyError, OSError) as e:
            click.echo(f"note: the TEST data cannot be read ({str(e).splitlines()[0]}); comparing on random "
                       f"inputs", err=True)
    res = check_parity(exported, tensors, inputs, source)
    click.echo(res.text())
    if res.max_abs > tolerance:
        raise NetspecError(f"the exported model differs from netspec by {res.max_abs:.3g} (max abs), more "
                           f"than --tolerance {tolerance:g}", file=output)


COMMANDS = [export]
