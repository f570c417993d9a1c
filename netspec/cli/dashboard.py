"""``netspec dashboard``: a local web page with the curves, net, solver and snapshots of runs."""

from __future__ import annotations

import click


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(), metavar="[RUN_DIR]...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="the address to listen on (0.0.0.0 lets other machines read your runs)")
@click.option("--port", type=click.IntRange(1, 65535), default=8750, show_default=True)
@click.option("--open", "open_browser", is_flag=True, help="open the page in a web browser")
def dashboard(folders, host, port, open_browser):
    """Follow training runs in a browser: loss, accuracy, learning rate and throughput as each
    run's log.jsonl grows, several runs overlaid, with the net's drawing, the solver and the
    snapshots.  RUN_DIR is a run folder or a folder of runs [default: runs].  It only reads
    these folders.  Needs the [dashboard] extra."""
    from netspec.dashboard.server import serve

    serve(list(folders) or ["runs"], host=host, port=port, open_browser=open_browser, echo=click.echo)


COMMANDS = [dashboard]
