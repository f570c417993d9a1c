"""The predict command: a trained net's top-k classes for one's own files."""

from __future__ import annotations

import json
import sys

import click

from netspec.cli import options as opt

# more inputs than this get a progress bar (on a terminal)
PROGRESS_FROM = 256


@click.command()
@click.argument("model", metavar="NET|zoo:NAME")
@click.argument("files", nargs=-1, metavar="[FILES]...")
@click.option("--weights", metavar="W", help="a .safetensors weights file or zoo:<name> (a net file needs it; "
              "for a zoo entry it replaces the entry's weights)")
@click.option("--images", metavar="SOURCE[:N]", help="predict records of a dataset or data file, e.g. "
              "fashion-mnist:test:100 (the first 100 test images)")
@click.option("-k", "--top-k", type=click.IntRange(1), default=3, show_default=True,
              help="classes printed per input")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True,
              help="inputs per forward pass")
@click.option("--output", "output_blob", metavar="BLOB", default=None,
              help="the blob to rank [default: the deploy net's Softmax/Sigmoid output, or its only output]")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of a table")
@opt.stage
@opt.level
@opt.device
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def predict(model, files, weights, images, top_k, batch_size, output_blob, as_json, stages, level, device, quiet):
    """Run the deploy net derived from NET (or zoo entry NAME) on FILES and print each input's
    top-k classes with their probabilities.

    \b
    FILES: images (PNG, JPEG, ...; any size: converted to the net's channels and resized
    to its input), folders of images, IDX/NPZ/CSV files and image lists (.txt), one input
    per record.  The preprocessing is the zoo manifest's, else the TEST data layer's
    transform.  Class names come from the manifest's classes or the training dataset.
    An input that cannot be read is reported on stderr and the others are predicted;
    the exit status is then 1.

    \b
    Example:  netspec predict zoo:lenet-fashion-mnist shirt.png boot.jpg
              netspec predict zoo:lenet-fashion-mnist --images fashion-mnist:test:10
    """
    from netspec import predict as P
    from netspec.errors import SpecError

    if not files and not images:
        raise SpecError("give the inputs: image or data files, or --images SOURCE[:N] "
                        "(e.g. --images fashion-mnist:test:10)")
    predictor = P.load_predictor(model, weights, batch=batch_size, device=device,
                                 stages=list(stages) if stages else None, level=level, output=output_blob)
    try:
        inputs, _ = P.read_inputs(files, predictor, images)
        count = sum(isinstance(x, P.Item) for x in inputs)
        bar = None
        if not quiet and sys.stderr.isatty() and count > PROGRESS_FROM:
            from tqdm import tqdm

            bar = tqdm(total=count, unit="input", leave=False, dynamic_ncols=True)
        results = P.predict(predictor, inputs, top_k, progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
    finally:
        predictor.close()
    if as_json:
        click.echo(json.dumps(P.as_json(predictor, results), indent=1))
    else:
        for line in P.table(predictor, results):
            click.echo(line)
    failed = [r for r in results if isinstance(r, P.Failure)]
    for f in failed:
        click.echo(f"error: {f.error}", err=True)
    if failed:
        if len(failed) == len(results):
            click.echo(f"no input could be predicted ({len(failed)} failed)", err=True)
        else:
            click.echo(f"{len(failed)} of {len(results)} inputs failed; the others are printed above", err=True)
        sys.exit(1)


COMMANDS = [predict]
