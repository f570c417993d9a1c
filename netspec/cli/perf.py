"""Commands about speed: ``time`` (per-layer timings, like ``caffe time``) and ``warmup``."""

from __future__ import annotations

from pathlib import Path

import click

from netspec.cli import options as opt


@click.command(name="time")
@opt.net_file
@opt.phase
@opt.stage
@opt.level
@click.option("-n", "--iterations", type=click.IntRange(1), default=20, show_default=True,
              help="timed forward/backward passes (after one warm-up pass)")
@click.option("--threads", type=click.IntRange(1), default=None, help="threads for kernels and BLAS")
@click.option("--dummy-data", is_flag=True, help="replace data layers by random data of the same shapes")
@click.option("--seed", type=int, default=0, show_default=True)
@opt.precision
@opt.device
def time_cmd(file, phase, stages, level, iterations, threads, dummy_data, seed, precision, device):
    """Per-layer forward and backward milliseconds, and the totals (like 'caffe time').
    On a GPU (--device cuda) each layer is timed on the device with CUDA events."""
    from netspec import api
    from netspec.core.device import env_device, resolve
    from netspec.core.threads import set_threads

    set_threads(threads)
    dev = resolve(device or env_device())
    net = api.load_net(file)
    n = api.build_net(net, phase, level=level, stages=stages or None, seed=seed, dummy_data=dummy_data,
                      device=dev, precision=precision)
    try:
        rows = api.time_net(n, iterations=iterations)
    finally:
        for lp in n.layers:
            lp.layer.close()
    head = ("layer", "type", "algorithm", "forward ms", "backward ms")
    table = [head] + [(r["layer"], r["type"], r["algo"] or "-", f"{r['forward_ms']:.3f}",
                       "-" if r["backward_ms"] is None else f"{r['backward_ms']:.3f}") for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    click.echo(f"{net.get('name', Path(file).stem)} ({n.phase}), {iterations} iterations, on {_device_name(dev)}")
    if precision != "float32":
        total, half = n.activation_bytes()
        click.echo(f"{precision} activations: " + (f"float16 buffers; the blobs take {_size(total)} "
                   f"({_size(total + half)} in float32)" if half else "float32 buffers rounded to it"))
    for k, r in enumerate(table):
        click.echo("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            click.echo("  ".join("-" * w for w in widths))
    f = sum(r["forward_ms"] for r in rows)
    b = sum(r["backward_ms"] or 0.0 for r in rows)
    click.echo(f"Average Forward pass: {f:.3f} ms.")
    click.echo(f"Average Backward pass: {b:.3f} ms.")
    click.echo(f"Average Forward-Backward: {f + b:.3f} ms.")
    click.echo(f"Total Time: {(f + b) * iterations:.3f} ms.")


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n / 1024:.1f} KiB"


def _device_name(dev) -> str:
    if not dev.is_cuda:
        return "the CPU"
    from netspec.kernels.cuda import runtime

    return f"{dev} ({runtime(dev.index).name()})"


@click.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
def warmup(files):
    """Compile the kernels the given nets use (default: every net under models/) into numba's
    cache, so that later runs start in well under a second."""
    import time

    from netspec import api

    paths = [Path(f) for f in files]
    if not paths:
        root = Path(__file__).resolve().parents[2] / "models"
        paths = sorted(root.glob("*/train_val.yaml"))
        if not paths:
            raise click.UsageError("give the net files to warm up (no models/ folder next to the package)")
    for p in paths:
        t0 = time.perf_counter()
        net = api.load_net(p)
        for phase in ("TRAIN", "TEST"):
            for dtype in ("float32",):
                n = api.build_net(net, phase, dummy_data=True, dtype=dtype)
                n.forward()
                n.backward()
        click.echo(f"{p}: kernels ready ({time.perf_counter() - t0:.1f} s)")


COMMANDS = [time_cmd, warmup]
