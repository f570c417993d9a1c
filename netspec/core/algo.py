"""Per-layer algorithm choice: measured once per shape, then cached in memory and on disk.

A layer with several ways to compute the same thing (Convolution: ``gemm_1x1``, ``winograd``,
``patch_gemm``, ``im2col_gemm``, ...) asks ``choose`` in its ``setup``.  The answer, by priority:

1. a layer field (``algorithm: winograd``), checked by the layer itself;
2. ``NETSPEC_ALGO=<name>``: that algorithm wherever it suits the shape;
3. the choice recorded for this key (layer type, shapes, parameters, dtype, and the machine:
   threads and CPU, or on a GPU the device's model) in memory, then in the cache file
   (``NETSPEC_ALGO_CACHE``, default ``$XDG_CACHE_HOME/netspec/algos.json`` or
   ``~/.cache/netspec/algos.json``; ``off`` keeps choices in memory only);
4. a measurement: each candidate runs a forward and backward pass on the layer's own blobs
   (best of a few), the fastest is recorded;
5. without measurement (``NETSPEC_AUTOTUNE=0``, layers below ``MIN_TUNE_FLOPS``, or the test
   suite, which sets ``NETSPEC_TEST``): the layer's default.

Algorithms of one layer give the same results up to float rounding, so a choice changes
speed, never meaning; the cache file makes it stable between runs (a resumed run makes the
same choice as the run it continues).  Delete the file to measure again.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

#: bump when the kernels change enough that old measurements mislead
ALGO_VERSION = 1

#: layers doing less work per forward pass than this are not worth a measurement
MIN_TUNE_FLOPS = 20e6

#: measurement: at least this many timed runs and this long per candidate (after one warm-up)
MIN_RUNS = 3
MAX_RUNS = 10
MIN_SECONDS = 0.05

_memory: dict[str, str] = {}
_disk: dict[str, dict] | None = None


def cache_path() -> Path | None:
    """Where choices are kept, or None for memory only."""
    env = os.environ.get("NETSPEC_ALGO_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env).expanduser()
    if os.environ.get("NETSPEC_TEST"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "netspec" / "algos.json"


def autotune_enabled() -> bool:
    env = os.environ.get("NETSPEC_AUTOTUNE")
    if env is not None:
        return env.lower() not in ("0", "off", "no", "false")
    # the test suite builds thousands of tiny layers: measure there only when asked to
    return not os.environ.get("NETSPEC_TEST") or bool(os.environ.get("NETSPEC_ALGO_CACHE"))


def cpu_name() -> str:
    """The CPU model and the number of CPUs (a choice measured on one machine kind)."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        import platform

        model = platform.processor() or platform.machine()
    return f"{model} x{os.cpu_count()}"


def gpu_name(index: int = 0) -> str:
    """The model of GPU ``index`` (a choice measured on one GPU kind)."""
    from netspec.kernels.cuda import runtime

    return runtime(index).name()


def make_key(family: str, **fields) -> str:
    """The cache key of one choice: the family, the given fields, the machine and versions.

    On the CPU the machine is the thread count and the CPU; on a GPU (the current device) it is
    the device kind and the GPU's model, so that CPU and GPU choices never stand for each other
    (CPU keys read as they did before GPUs, so their cached choices stay valid)."""
    from netspec import __version__
    from netspec.core.device import current

    dev = current()
    if dev.is_cuda:
        machine = {"device": dev.kind, "gpu": gpu_name(dev.index)}
    else:
        from netspec.kernels.jit import get_num_threads

        machine = {"threads": get_num_threads(), "cpu": cpu_name()}
    full = {"family": family, **fields, **machine, "version": f"{__version__}/{ALGO_VERSION}"}
    return json.dumps(full, sort_keys=True, default=str)


def _load() -> dict[str, dict]:
    global _disk
    if _disk is None:
        _disk = {}
        path = cache_path()
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if isinstance(data, dict) and isinstance(data.get("choices"), dict):
                    _disk = data["choices"]
            except (OSError, ValueError):
                _disk = {}   # a damaged cache is measured again, not an error
    return _disk


def _store(key: str, entry: dict) -> None:
    """Add one choice to the cache file: read again, merge, write a temp file and rename (other
    processes may be writing theirs)."""
    _load()[key] = entry
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        current: dict = {}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                current = data.get("choices", {}) if isinstance(data, dict) else {}
            except ValueError:
                current = {}
        current[key] = entry
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"netspec_algos": 1, "choices": current}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass   # a read-only home still runs, measuring once per process


def measure(run: Callable[[], None]) -> float:
    """Seconds of one call of ``run``: the best of a few, after one warm-up (which compiles)."""
    run()
    best = float("inf")
    total = 0.0
    n = 0
    while n < MIN_RUNS or (total < MIN_SECONDS and n < MAX_RUNS):
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        best = min(best, dt)
        total += dt
        n += 1
    return best


def choose(key: str, candidates: Sequence[str], default: str, trial: Callable[[str], Callable[[], None]],
           *, flops: float = float("inf")) -> str:
    """The algorithm for ``key`` among ``candidates`` (see the module docstring).

    ``trial(name)`` prepares algorithm ``name`` and returns a function that runs one pass with
    it; ``default`` is used when nothing is measured.
    """
    forced = os.environ.get("NETSPEC_ALGO")
    if forced in candidates:
        return forced
    if len(candidates) == 1:
        return candidates[0]
    # a new algorithm (or one that suits more shapes now) is measured again
    key = json.dumps([json.loads(key), sorted(candidates)], sort_keys=True)
    if key in _memory and _memory[key] in candidates:
        return _memory[key]
    entry = _load().get(key)
    if entry and entry.get("algo") in candidates:
        _memory[key] = entry["algo"]
        return entry["algo"]
    if not autotune_enabled() or flops < MIN_TUNE_FLOPS:
        return default
    times = {name: measure(trial(name)) for name in candidates}
    best = min(candidates, key=lambda n: times[n])
    _memory[key] = best
    _store(key, {"algo": best, "ms": {n: round(t * 1e3, 4) for n, t in times.items()}})
    return best


def forget() -> None:
    """Drop the choices held in memory (the cache file is read again on the next choice)."""
    global _disk
    _memory.clear()
    _disk = None
