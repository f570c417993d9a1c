"""Commands that run nets: train, test, and plot a run's curves."""

from __future__ import annotations

import sys

import click

from netspec.cli import options as opt


def _echo(msg: str) -> None:
    """Log lines go to stdout, above the progress bar (tqdm redraws it below them)."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--solver", type=click.Path(dir_okay=False), help="the solver file, instead of the one the net names")
@click.option("--weights", metavar="W", help="start from these weights: a .safetensors file or zoo:<name> "
              "(several, comma-separated, are applied in order)")
@click.option("--resume", metavar="STATE", help="continue from a .solverstate.safetensors file, or 'latest' "
              "(the newest in the run folder)")
@click.option("--run-dir", type=click.Path(file_okay=False), help="where logs and snapshots go, even when "
              "the solver sets snapshot_prefix (its file name part is kept) [default: runs/<net name>/<timestamp>]")
@opt.stage
@opt.level
@click.option("--seed", type=int, default=None, help="override the solver's random_seed")
@opt.device
@click.option("--on-snapshot-failure", "snapshot_failure", type=click.Choice(["stop", "continue"]), default=None,
              help="when a snapshot cannot be written (disk full, read-only folder): stop with an error, or "
                   "log it and train on [default: the solver's snapshot_failure, else stop]")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def train(file, solver, weights, resume, run_dir, stages, level, seed, device, snapshot_failure, quiet):
    """Train a net: FILE is a solver file, or a net file whose 'solver:' names one or holds it.

    \b
    Logs go to stdout in Caffe's format and to <run dir>/train.log; every displayed and
    tested value also goes to <run dir>/log.jsonl ('netspec plot' draws it).  Ctrl-C or
    SIGTERM finishes the iteration, snapshots and exits with status 130; resume with
    --resume latest (the newest snapshot that reads back whole; a snapshot write cut short
    by a crash is never taken).  --stage/--level set the train net's state.
    """
    from netspec.solvers.run import train as run_train

    status = run_train(file, solver=solver, weights=weights, resume=resume, run_dir=run_dir,
                       stages=list(stages) if stages else None, level=level, seed=seed,
                       progress=_progress(quiet), echo=_echo, device=device, snapshot_failure=snapshot_failure)
    if status:
        sys.exit(status)


@click.command("test")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights", metavar="W", required=True, help="a .safetensors weights file or zoo:<name>")
@click.option("--iterations", type=click.IntRange(1), default=None,
              help="batches to run [default: one full pass when the data size is known, else 50]")
@opt.stage
@opt.level
@click.option("--show", metavar="BLOBS", default="",
              help="comma-separated blobs to print item by item, e.g. data,prob,label")
@click.option("--rows", type=click.IntRange(1), default=20, show_default=True, help="items printed by --show")
@opt.precision
@opt.device
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def test_cmd(file, weights, iterations, stages, level, show, rows, precision, device, quiet):
    """Evaluate the TEST phase of a net (or of a solver's net) with trained weights, and print
    the mean of every output over the batches, in Caffe's format; --show prints chosen blobs
    item by item (inputs, predictions, labels)."""
    from netspec.solvers.run import evaluate

    evaluate(file, weights, iterations=iterations, stages=list(stages) if stages else None, level=level,
             progress=_progress(quiet), echo=click.echo, show=[s.strip() for s in show.split(",") if s.strip()],
             show_rows=rows, device=device, precision=precision)


@click.command()
@click.argument("run", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="the PNG to write [default: <run>/curves.png]")
def plot(run, output):
    """Draw a run's loss, accuracy and learning-rate curves (from its log.jsonl) to a PNG."""
    from netspec.solvers.plot import plot_run

    path = plot_run(run, output)
    click.echo(f"wrote {path}")


COMMANDS = [train, test_cmd, plot]
