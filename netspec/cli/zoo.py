"""``netspec zoo``: list, show, verify, add and reproduce trained models (see ``netspec.zoo``)."""

from __future__ import annotations

import sys

import click


def _progress() -> bool:
    return sys.stderr.isatty()


def _echo_log(msg: str) -> None:
    """Training log lines go to stdout, above a progress bar (tqdm redraws it below them)."""
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _metrics_text(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


@click.group(name="zoo")
def zoo_group():
    """Trained models: list, show, verify, package a run (add), re-train (reproduce).

    \b
    Entries are found in the built-in zoo, then in $NETSPEC_ZOO (folders separated by ':'),
    then in ~/.local/share/netspec/zoo.  Use one wherever a weights file goes:
      netspec train models/lenet_finetune/train_val.yaml --weights zoo:lenet-fashion-mnist
    """


@zoo_group.command(name="list")
def list_cmd():
    """A table of every entry: task, test data, metrics, weights size and location."""
    from netspec import zoo

    found = zoo.scan()
    rows = [("name", "task", "test data", "metrics", "size", "location")]
    bad = []
    for f in found:
        if f.shadowed_by is not None:
            rows.append((f.name, "", "", f"(hidden by {f.shadowed_by})", "", f.source))
            continue
        try:
            e = zoo.load_entry(f.folder)
        except zoo.NetspecError as err:
            bad.append(err)
            rows.append((f.name, "", "", "invalid manifest (netspec zoo show " + f.name + ")", "", f.source))
            continue
        weights = f.folder / str(e.get("weights"))
        size = _size(weights.stat().st_size) if weights.is_file() else "missing"
        rows.append((f.name, e.get("task", ""), (e.get("dataset") or {}).get("test", ""), _metrics_text(e.metrics),
                     size, f.source))
    if len(rows) == 1:
        click.echo("no zoo entries; looked in " + ", ".join(str(p) for p in zoo.locations()))
    else:
        for line in _table(rows):
            click.echo(line)
    for err in bad:
        click.echo(f"error: {err}", err=True)
    if bad:
        sys.exit(1)


@zoo_group.command()
@click.argument("name")
def show(name):
    """Everything the manifest of entry NAME says, and where its files are."""
    from netspec import zoo

    e = zoo.load_entry(name)
    d = e.data
    click.echo(f"{e.name}: {d.get('description', '(no description)')}")
    click.echo(f"  folder:     {e.folder}")
    if d.get("task"):
        click.echo(f"  task:       {d['task']}")
    inp = d.get("input") or {}
    if inp:
        shape = "x".join(map(str, inp.get("shape", []))) or "?"
        pre = ", ".join(f"{k}: {v}" for k, v in (inp.get("preprocessing") or {}).items())
        click.echo(f"  input:      {inp.get('blob', 'data')} {shape}" + (f"; preprocessing {{{pre}}}" if pre else ""))
        if inp.get("classes"):
            click.echo(f"  classes:    {', '.join(inp['classes'])}")
    ds = d.get("dataset") or {}
    if ds:
        click.echo("  dataset:    " + ", ".join(f"{k} {v}" for k, v in ds.items()))
    for key in ("net", "solver"):
        if d.get(key):
            click.echo(f"  {key + ':':<11} {e.folder / d[key]}")
    weights = e.folder / str(d["weights"])
    size = _size(weights.stat().st_size) if weights.is_file() else "missing"
    click.echo(f"  weights:    {weights} ({size})")
    click.echo(f"  sha256:     {d['sha256']}")
    if e.metrics:
        ev = e.evaluation
        click.echo(f"  metrics:    {_metrics_text(e.metrics)}")
        if ev.get("command"):
            how = f"{ev['command']}" + (f" ({ev['iterations']} test batches" if ev.get("iterations") else "")
            how += (f", stage {', '.join(zoo._stages(e) or [])}" if ev.get("stage") else "")
            how += ")" if ev.get("iterations") else ""
            click.echo(f"  measured:   {how}")
    tr = d.get("training") or {}
    if tr:
        parts = [f"{tr['iterations']:,} iterations" if "iterations" in tr else None,
                 f"seed {tr['seed']}" if "seed" in tr else None,
                 f"{tr['seconds']:.0f} s" if "seconds" in tr else None,
                 f"{tr['threads']} thread(s)" if "threads" in tr else None, tr.get("machine")]
        click.echo(f"  training:   {', '.join(p for p in parts if p)}")
        if tr.get("command"):
            click.echo(f"  re-train:   {tr['command']}")
    base = d.get("baseline")
    if base:
        click.echo(f"  baseline:   {_metrics_text(base['metrics'])}"
                   + (f" after {base['iterations']:,} iterations" if "iterations" in base else ""))
        if base.get("description"):
            click.echo(f"              ({base['description']})")
    if d.get("parent"):
        click.echo(f"  parent:     zoo:{d['parent']}")
    if d.get("licence"):
        click.echo(f"  licence:    {d['licence']}")
    if d.get("netspec_version"):
        click.echo(f"  netspec:    {d['netspec_version']}")


@zoo_group.command()
@click.argument("name", required=False)
@click.option("--evaluate", is_flag=True, help="also re-run the TEST phase and compare with the manifest's metrics")
@click.option("--tolerance", type=click.FloatRange(0), default=None,
              help="allowed |measured - recorded| / max(1, |recorded|) [default: the manifest's, else 0.001]")
def verify(name, evaluate, tolerance):
    """Check the sha256 and the params of entry NAME (default: every entry); with --evaluate,
    re-measure its metrics.  Exit status 1 when anything fails."""
    from netspec import zoo

    if name is not None:
        names = [zoo.ref_name(name)]
        zoo.find(names[0])
    else:
        names = list(zoo.entries())
        if not names:
            raise zoo.ZooError("no zoo entries to verify; looked in " + ", ".join(str(p) for p in zoo.locations()))
    failed = []
    for n in names:
        try:
            e = zoo.load_entry(n)
            check = zoo.verify(e)
            click.echo(f"{n}: sha256 ok, {check.params} params fit {e.get('net', 'the weights')} "
                       f"({_size(check.size)})")
            for note in check.notes:
                click.echo(f"  note: {note}")
            if evaluate:
                result = zoo.evaluate(e, tolerance=tolerance, progress=_progress())
                for line in result.lines():
                    click.echo(line)
                if not result.ok:
                    raise e.error(f"the metrics of zoo entry '{n}' differ from the manifest by more than the "
                                  f"tolerance {result.tolerance:g}")
        except zoo.NetspecError as err:
            if name is not None:
                raise
            failed.append(n)
            click.echo(f"{n}: FAILED", err=False)
            click.echo(f"error: {err}", err=True)
    if failed:
        raise zoo.ZooError(f"{len(failed)} of {len(names)} zoo entries failed verification: {', '.join(failed)}")
    click.echo(f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} verified"
               + (" and re-evaluated" if evaluate else ""))


@zoo_group.command()
@click.argument("run_dir", type=click.Path())
@click.option("--name", required=True, help="the entry's name (zoo:<name>)")
@click.option("--zoo", "zoo_dir", type=click.Path(file_okay=False), default=None,
              help="the zoo folder to add it to [default: ~/.local/share/netspec/zoo]")
@click.option("--description", help="what the model is")
@click.option("--licence", "--license", "licence", help="the licence of the weights")
@click.option("--task", type=click.Choice(["classification", "reconstruction", "regression", "other"]),
              help="[default: classification when the TEST net has an Accuracy layer]")
@click.option("--stage", "stages", multiple=True, metavar="NAME",
              help="the TEST net's stages to measure with [default: the run's first test net's]")
@click.option("--iter", "iteration", type=click.IntRange(0), default=None,
              help="package this snapshot instead of the last (the run need not be finished)")
@click.option("--baseline", type=click.Path(), metavar="RUN",
              help="a run of the same recipe trained from the fillers: its metrics are recorded beside the entry's")
@click.option("--threads", type=click.IntRange(1), help="the compute threads the run had (recorded)")
@click.option("--machine", metavar="TEXT", help="where the run trained, e.g. the CPU (recorded)")
@click.option("--force", is_flag=True, help="replace an entry of that name")
def add(run_dir, name, zoo_dir, description, licence, task, stages, iteration, baseline, threads, machine, force):
    """Package a finished training run (its folder, or a .solverstate.safetensors file) as a
    zoo entry: the resolved net and solver with the run's seed, the weights and their sha256,
    and the metrics measured as 'netspec zoo verify --evaluate' measures them."""
    from netspec import zoo

    folder = zoo.add_run(run_dir, name, zoo_dir=zoo_dir, description=description, licence=licence, task=task,
                         stages=list(stages) if stages else None, iteration=iteration, baseline=baseline,
                         threads=threads, machine=machine, force=force, progress=_progress(), echo=click.echo)
    e = zoo.load_entry(folder, check_name=True)
    click.echo(f"added zoo entry '{name}' in {folder}")
    click.echo(f"  metrics: {_metrics_text(e.metrics)}")
    if e.get("baseline"):
        click.echo(f"  baseline (from the fillers): {_metrics_text(e.data['baseline']['metrics'])}")
    if folder.parent.resolve() not in [p.resolve() for p in zoo.locations()]:
        click.echo(f"  note: {folder.parent} is not a zoo location; add it to $NETSPEC_ZOO to use zoo:{name}")


@zoo_group.command()
@click.argument("name")
@click.option("--run-dir", type=click.Path(file_okay=False), help="[default: runs/zoo-<name>/<timestamp>]")
@click.option("--baseline", is_flag=True, help="train the recipe without init_from (from the fillers) and compare "
              "with the manifest's baseline")
@click.option("--tolerance", type=click.FloatRange(0), default=None,
              help="allowed |measured - recorded| / max(1, |recorded|) [default: the manifest's, else 0.01]")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def reproduce(name, run_dir, baseline, tolerance, quiet):
    """Re-train entry NAME from its recipe (its net and solver, with the recorded seed) and
    compare the metrics with the manifest's.  Exit status 1 when they differ by more than the
    tolerance.  Bit-identical weights need the same thread settings as the original run."""
    from netspec import zoo

    e = zoo.load_entry(name)
    result = zoo.reproduce(e, run_dir=run_dir, baseline=baseline, tolerance=tolerance,
                           progress=not quiet and _progress(), echo=_echo_log)
    click.echo(f"re-trained {'the baseline of ' if baseline else ''}{e.name} in {result.run_dir}:")
    for line in result.comparison.lines("baseline" if baseline else "manifest"):
        click.echo(line)
    if result.identical:
        click.echo("  the weights are bit for bit the entry's")
    if not result.comparison.ok:
        raise zoo.ZooError(f"the re-trained model's metrics differ from the manifest's by more than the tolerance "
                           f"{result.comparison.tolerance:g}", hint="thread counts and BLAS builds change rounding; "
                           "see the manifest's training block for the original setting")
    click.echo("  reproduced within the tolerance " + f"{result.comparison.tolerance:g}")


COMMANDS = [zoo_group]
