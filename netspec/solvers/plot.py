"""``netspec plot RUN``: a run's curves from its ``log.jsonl``, drawn with matplotlib (Agg).

Three panels share the iteration axis: losses (the smoothed train loss and every test net's
loss-weighted outputs), accuracies (outputs whose name contains ``acc``), and the learning
rate.  Panels with nothing to show are left out.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from netspec.errors import NetspecError
from netspec.solvers.runlog import LOG_JSONL, read_jsonl


def _log_path(run: str | os.PathLike) -> Path:
    p = Path(run)
    if p.is_dir():
        p = p / LOG_JSONL
    if not p.exists():
        raise NetspecError(f"no {LOG_JSONL} here; give a run folder (runs/<net>/<timestamp>) or its log.jsonl",
                           file=str(run))
    return p


def curves(run: str | os.PathLike) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{"loss"|"accuracy"|"lr": {series label: [(iter, value), ...]}} from a run's log."""
    out: dict[str, dict[str, list]] = {"loss": defaultdict(list), "accuracy": defaultdict(list), "lr": defaultdict(list)}
    lr_seen: dict[int, float] = {}
    for rec in read_jsonl(_log_path(run)):
        it, name, value = rec.get("iter"), rec.get("name"), rec.get("value")
        if not isinstance(it, int) or not isinstance(name, str) or not isinstance(value, (int, float)):
            continue
        phase = rec.get("phase", "TRAIN")
        label = f"train {name}" if phase == "TRAIN" else f"test#{rec.get('test_net', 0)} {name}"
        if "acc" in name.lower():
            out["accuracy"][label].append((it, float(value)))
        elif "loss" in name.lower():
            out["loss"][label].append((it, float(value)))
        if phase == "TRAIN" and isinstance(rec.get("lr"), (int, float)):
            lr_seen[it] = float(rec["lr"])
    if lr_seen:
        out["lr"]["learning rate"] = sorted(lr_seen.items())
    for kind in out:
        for label in out[kind]:
            # a resumed run may log an iteration twice: keep the last value of each
            out[kind][label] = sorted(dict(out[kind][label]).items())
    return {k: dict(v) for k, v in out.items()}


def plot_run(run: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(run)
    panels = [k for k in ("loss", "accuracy", "lr") if data[k]]
    if not panels:
        raise NetspecError("the log has no loss, accuracy or learning-rate values yet (display: 0 and no "
                           "test nets?)", file=str(_log_path(run)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.8 * len(panels)), sharex=True, squeeze=False)
    titles = {"loss": "loss", "accuracy": "accuracy", "lr": "learning rate"}
    for ax, kind in zip(axes[:, 0], panels):
        for label, pts in sorted(data[kind].items()):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=label, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_ylabel(titles[kind])
        if kind == "loss" and all(v > 0 for pts in data[kind].values() for _, v in pts):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("iteration")
    run_path = Path(run)
    fig.suptitle(run_path.name if run_path.is_dir() else run_path.parent.name)
    fig.tight_layout()
    out = Path(output) if output is not None else _log_path(run).parent / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
