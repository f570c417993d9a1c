"""``netspec convert``: Caffe nets, solvers and weights to netspec's formats, and weights back."""

from __future__ import annotations

from pathlib import Path

import click

PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt", ".pt", ".txt")


def _keyed(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """``NAME[:PHASE]=VALUE`` options as {"NAME" or "NAME:PHASE": VALUE}."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise click.BadParameter(f"'{v}': write NAME=VALUE or NAME:PHASE=VALUE", param_hint=flag)
        name, colon, phase = key.rpartition(":")
        if colon and phase.upper() in ("TRAIN", "TEST"):
            key = f"{name}:{phase.upper()}"
        out[key] = value
    return out


def _load_net(path: str, net_options):
    """A net given with --net: a Caffe prototxt (converted in memory) or a netspec YAML/JSON file."""
    from netspec import api
    from netspec.caffe.convert_net import convert_net_file

    if Path(path).suffix.lower() in PROTOTXT_SUFFIXES:
        return convert_net_file(path, net_options).net
    return api.load_net(path)


def _text_kind(path: str) -> str:
    """'net' or 'solver', from the names of the file's top-level fields."""
    from netspec.caffe import messages as M
    from netspec.caffe import textformat as tf
    from netspec.caffe.convert_net import read_text
    from netspec.spec.load import display_name

    names = set(tf.top_level_names(tf.parse(read_text(path), display_name(path))))
    solver, net = set(M.MESSAGES["SolverParameter"]), set(M.MESSAGES["NetParameter"])
    return "solver" if names and names <= solver and names - net else "net"


def _emit(report, quiet: bool, verbose: bool, report_file: str | None) -> None:
    if not quiet:
        click.echo(report.text(verbose), err=True)
    if report_file:
        report.write_json(report_file)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the file to write (nets and solvers: printed when not given)")
@click.option("--net", "net_file", type=click.Path(dir_okay=False),
              help="weights: the net they belong to (a Caffe prototxt or a netspec YAML)")
@click.option("--net-out", type=click.Path(dir_okay=False),
              help="solvers: where the converted net goes (default: beside -o, as <net stem>.yaml)")
@click.option("--data-source", "data_sources", multiple=True, metavar="NAME[:PHASE]=SOURCE",
              help="read data layer NAME (in PHASE) from SOURCE, e.g. mnist:TRAIN=fashion-mnist:train")
@click.option("--data-shape", "data_shapes", multiple=True, metavar="NAME[:PHASE]=CxHxW",
              help="the sample shape of data layer NAME when its source cannot be read (HDF5Data: one "
                   "shape per top, separated by '/')")
@click.option("--caffe-root", type=click.Path(file_okay=False),
              help="the folder Caffe ran in: its relative paths are rewritten from there")
@click.option("--weights-out", type=click.Path(dir_okay=False),
              help="ONNX: where the weights go (default: beside -o, as <stem>.safetensors)")
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="also write the coverage report as JSON")
@click.option("-q", "--quiet", is_flag=True, help="print no coverage report")
@click.option("-v", "--verbose", is_flag=True, help="list every mapped field in the report too")
def convert(file, output, net_file, net_out, data_sources, data_shapes, caffe_root, weights_out, report_file, quiet,
            verbose):
    """Convert Caffe and ONNX files: nets and solvers to YAML, weights to safetensors and back.

    \b
      netspec convert MODEL.onnx -o net.yaml [--weights-out net.safetensors]
      netspec convert NET.prototxt [-o net.yaml]
      netspec convert SOLVER.prototxt -o solver.yaml [--net-out net.yaml]
      netspec convert MODEL.caffemodel --net NET.prototxt|NET.yaml -o weights.safetensors
      netspec convert weights.safetensors --net NET.yaml -o MODEL.caffemodel

    A coverage report on stderr says what became of every Caffe field: mapped, ignored (and
    why), unsupported (and why).  Caffe LMDB/LevelDB data layers are kept; point them at data
    netspec reads with --data-source NAME[:PHASE]=SOURCE.  An ONNX model (the [onnx] extra)
    becomes a net and a weights file; operators netspec cannot express are named with their node.
    """
    from netspec.caffe.convert_net import NetOptions

    out = Path(output) if output else None
    root = Path(caffe_root) if caffe_root else None
    net_options = NetOptions(_keyed(data_sources, "--data-source"), _keyed(data_shapes, "--data-shape"), root, out)
    suffix = Path(file).suffix.lower()
    if suffix == ".onnx":
        if net_file or net_out or data_sources or data_shapes or caffe_root:
            raise click.UsageError("an .onnx file takes only -o, --weights-out, --report, -q and -v")
        _onnx(file, out, weights_out, report_file, quiet, verbose)
        return
    if weights_out:
        raise click.UsageError("--weights-out is for .onnx files")
    if suffix in (".caffemodel", ".safetensors"):
        _weights(file, suffix, out, net_file, net_options, report_file, quiet, verbose)
        return
    if net_file:
        raise click.UsageError("--net is for weights files (.caffemodel or .safetensors)")
    if _text_kind(file) == "solver":
        _solver(file, out, net_out, net_options, root, report_file, quiet, verbose)
        return
    if net_out:
        raise click.UsageError("--net-out is for solver files")
    from netspec.caffe.convert_net import convert_net_file
    from netspec.caffe.report import write_text_atomic

    res = convert_net_file(file, net_options)
    if out is not None:
        write_text_atomic(out, res.text)
    else:
        click.echo(res.text, nl=False)
    _emit(res.report, quiet, verbose, report_file)
    if res.check_error is not None:
        raise res.check_error


def _onnx(file, out, weights_out, report_file, quiet, verbose) -> None:
    from netspec.caffe.report import write_text_atomic
    from netspec.io.weights import write_safetensors
    from netspec.onnx.importer import convert_onnx_file

    if out is None:
        raise click.UsageError("give the net file to write with -o (the weights go beside it)")
    wout = Path(weights_out) if weights_out else out.with_suffix(".safetensors")
    res = convert_onnx_file(file, out, wout)
    write_safetensors(wout, res.weights, {"format": "netspec-weights", "converted_from": Path(file).name})
    write_text_atomic(out, res.text)
    res.report.summary["weights"] = str(wout)
    _emit(res.report, quiet, verbose, report_file)


def _solver(file, out, net_out, net_options, root, report_file, quiet, verbose) -> None:
    from netspec.caffe.convert_solver import SolverOptions, convert_solver_file
    from netspec.caffe.report import write_text_atomic

    net_options.out_path = None
    res = convert_solver_file(file, SolverOptions(net_options, out, Path(net_out) if net_out else None, root))
    for path, converted in res.nets:
        write_text_atomic(path, converted.text)
    if out is not None:
        write_text_atomic(out, res.text)
    else:
        click.echo(res.text, nl=False)
    _emit(res.report, quiet, verbose, report_file)


def _weights(file, suffix, out, net_file, net_options, report_file, quiet, verbose) -> None:
    from netspec.caffe import caffemodel as C
    from netspec.caffe.report import Report, write_bytes_atomic
    from netspec.spec.load import display_name

    if not net_file:
        raise click.UsageError("converting weights needs the net they belong to: --net NET.prototxt or NET.yaml")
    if out is None:
        raise click.UsageError("give the file to write with -o")
    net_options.out_path = None
    net_options.check = False
    net = _load_net(net_file, net_options)
    report = Report(display_name(file), "weights" if suffix == ".caffemodel" else "export")
    report.output = str(out)
    if suffix == ".caffemodel":
        tensors = C.import_weights(file, net, report)
        C.save_safetensors(tensors, out, {"format": "netspec-weights", "converted_from": Path(file).name})
    else:
        data = C.export_weights(C.load_safetensors(file), net, report, display_name(file))
        write_bytes_atomic(out, data)
    _emit(report, quiet, verbose, report_file)


COMMANDS = [convert]
