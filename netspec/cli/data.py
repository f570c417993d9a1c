"""Commands about datasets: ``data list`` (the built-in datasets) and ``data preview``."""

from __future__ import annotations

import math
from pathlib import Path

import click

from netspec.cli import options as opt


@click.group(name="data")
def data_group():
    """Datasets: list the built-in ones, preview what a net's data layer feeds it."""


@data_group.command(name="list")
def list_cmd():
    """The built-in datasets, whether each is installed, and the command that installs it."""
    from netspec.data.catalog import BUILTINS, builtin_files
    from netspec.errors import DataError

    for b in BUILTINS.values():
        try:
            where = str(builtin_files(b, next(iter(b.splits)))[0].parent)
        except DataError:
            where = f"not installed: {b.install}"
        splits = ", ".join(f"{b.name}:{s} ({n:,})" for s, n in b.splits.items())
        click.echo(f"{b.name:<14} {b.description}")
        click.echo(f"{'':<14} {splits}; samples {'x'.join(map(str, b.sample_shape))}, {b.num_classes} classes")
        click.echo(f"{'':<14} {where}")


@data_group.command()
@opt.net_file
@opt.phase
@opt.stage
@opt.level
@click.option("--layer", "layer_name", metavar="NAME", help="the data layer to preview (default: the first)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="write the grid picture here (.png, .jpg, .pdf, .svg)")
@click.option("-n", "--count", type=click.IntRange(1, 400), default=32, show_default=True,
              help="samples to show (whole batches are read)")
@click.option("--seed", type=int, default=0, show_default=True, help="the net's seed (shuffle and augmentation)")
def preview(file, phase, stages, level, layer_name, output, count, seed):
    """Show transformed samples of a net's data layer, with their labels, and count the classes.

    The samples are exactly what the layer feeds the net in that phase (shuffle, crop, mirror,
    augmentation, mean and scale applied); each is stretched to its own range for display.
    """
    from netspec import api
    from netspec.errors import NetspecError

    if phase == "DEPLOY":
        raise click.BadParameter("the deploy net has no data layers; use TRAIN or TEST", param_hint="--phase")
    net = api.load_net(file)
    plan = api.compile_net(net, phase, level, stages or None)
    candidates = [lp for lp in plan.layers if lp.layer.is_data]
    if layer_name is not None:
        candidates = [lp for lp in candidates if lp.name == layer_name]
    if not candidates:
        what = f"no data layer named '{layer_name}'" if layer_name else "no data layer"
        raise NetspecError(f"the {phase} net of {file} has {what}")
    lp = candidates[0]
    images, labels, layer = _read_samples(lp, count, seed)
    try:
        source = layer.source
        names = source.class_names
        click.echo(f"{lp.name} ({lp.type}, {phase}): {source.name}, {source.size:,} records, "
                   f"samples {list(images.shape[1:])}, values {images.min():.4g} .. {images.max():.4g}")
        counts = _class_counts(source)
        if counts is not None:
            click.echo("class  count  share  name" if names else "class  count  share")
            total = counts.sum()
            for k, c in enumerate(counts):
                name = f"  {names[k]}" if names and k < len(names) else ""
                click.echo(f"{k:>5}  {c:>5}  {100 * c / total:4.1f}%{name}".rstrip())
            click.echo(f"{len(counts)} classes, {int(total):,} records")
        if output:
            _grid(images, labels, names, output, f"{lp.name} ({phase})", layer.p.get("channel_order", "RGB"))
            click.echo(f"wrote {output} ({len(images)} samples)")
    finally:
        layer.close()


def _read_samples(lp, count: int, seed: int):
    import numpy as np

    from netspec.core.blob import Blob

    layer = lp.layer
    tops = [Blob.zeros(t, s, np.float32) for t, s in zip(lp.tops, lp.top_shapes)]
    layer.rng = np.random.Generator(np.random.PCG64(seed))
    layer.setup([], tops)
    count = min(count, layer.num_records)   # one pass at most: repeats would only confuse
    batches = math.ceil(count / tops[0].data.shape[0])
    xs, ys = [], []
    for _ in range(batches):
        layer.forward([], tops)
        xs.append(tops[0].data.copy())
        ys.append(tops[1].data.copy() if len(tops) > 1 else np.full(tops[0].data.shape[0], np.nan))
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count], layer


def _class_counts(source):
    import numpy as np

    y = source.labels()
    if y is None or y.size == 0:
        return None
    y = np.asarray(y)
    if not np.all(y == np.floor(y)) or y.min() < 0:
        return None
    return np.bincount(y.astype(np.int64), minlength=source.num_classes or 0)


def _grid(images, labels, names, output: str, title: str, channel_order: str) -> None:
    """Tiles with their labels; non-image samples become one heat-map row each."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def label_text(v) -> str:
        if np.isnan(v):
            return ""
        if v == int(v) and names and 0 <= int(v) < len(names):
            return f"{int(v)} {names[int(v)]}"
        return f"{int(v)}" if v == int(v) else f"{v:.3g}"

    n = len(images)
    image_like = images.ndim == 4 and images.shape[1] in (1, 3)
    if image_like:
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(1.6 * cols, 1.75 * rows + 0.4))
        for k in range(n):
            ax = fig.add_subplot(rows, cols, k + 1)
            x = images[k]
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            if x.shape[0] == 1:
                ax.imshow(x[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                rgb = x.transpose(1, 2, 0)
                ax.imshow(rgb[..., ::-1] if channel_order == "BGR" else rgb, interpolation="nearest")
            ax.set_title(label_text(labels[k]), fontsize=7)
            ax.axis("off")
    else:
        flat = images.reshape(n, -1)
        fig = Figure(figsize=(min(12, 2 + 0.15 * flat.shape[1]), 1 + 0.25 * n))
        ax = fig.add_subplot(1, 1, 1)
        im = ax.imshow(flat, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(n))
        ax.set_yticklabels([label_text(v) for v in labels], fontsize=7)
        ax.set_xlabel("value index")
        fig.colorbar(im, ax=ax)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    FigureCanvasAgg(fig).print_figure(str(tmp), dpi=100)
    tmp.replace(out)


COMMANDS = [data_group]
