"""CUDA kernels: numba-cuda kernels with thin launchers, the same public names and signatures
as ``netspec.kernels.cpu`` (one module per family), and the GPU runtime they share.

``runtime(index)`` checks, once, that a GPU can be used and says exactly what is missing when
it cannot (numba-cuda, the driver, CuPy, the device number): a ``DeviceError``, never a silent
fall back to the CPU.  Under ``NUMBA_ENABLE_CUDASIM=1`` numba's simulator runs the kernels on
the CPU and ``netspec.kernels.cuda._sim`` stands in for CuPy.  Importing this package does not
import numba; the family modules do.
"""

from __future__ import annotations

import contextlib
import os
from types import ModuleType
from typing import Iterator

from netspec.errors import DeviceError

INSTALL = 'pip install -e ".[cuda]"'


def simulated() -> bool:
    """Whether numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


class Runtime:
    """One usable GPU: its array module and how to select and synchronise it."""

    def __init__(self, index: int, xp: ModuleType, sim: bool):
        self.index = index
        self.xp = xp
        self.sim = sim

    @contextlib.contextmanager
    def selected(self) -> Iterator[None]:
        if self.sim:
            yield
            return
        with self.xp.cuda.Device(self.index):
            yield

    def synchronize(self) -> None:
        if not self.sim:
            self.xp.cuda.Device(self.index).synchronize()

    def name(self) -> str:
        if self.sim:
            return "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
        props = self.xp.cuda.runtime.getDeviceProperties(self.index)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


_RUNTIMES: dict[int, Runtime] = {}


def runtime(index: int = 0) -> Runtime:
    """The runtime of GPU ``index``, checked on first use (DeviceError when it cannot be used)."""
    rt = _RUNTIMES.get(index)
    if rt is None:
        rt = _RUNTIMES[index] = _open(index)
    return rt


def device_count() -> int:
    """GPUs that numba-cuda sees (1 under the simulator, 0 without numba-cuda or a driver)."""
    if simulated():
        return 1
    try:
        from numba import cuda

        return len(cuda.gpus) if cuda.is_available() else 0
    except Exception:  # noqa: BLE001  (no package, no driver: no GPU)
        return 0


def _open(index: int) -> Runtime:
    if index < 0:
        raise DeviceError(f"cuda:{index}: a GPU number is 0 or more")
    if not simulated():
        # the packages first: without numba-cuda, `numba.cuda` is numba's own retired target, which
        # would report a missing driver even where the GPU is fine and only the extra is missing
        import importlib.util

        missing = [name for module, name in (("numba_cuda", "numba-cuda"), ("cupy", "CuPy"))
                   if importlib.util.find_spec(module) is None]
        if missing:
            raise DeviceError(f"--device cuda needs {' and '.join(missing)}, which "
                              f"{'is' if len(missing) == 1 else 'are'} not installed; install the CUDA "
                              f"extra with {INSTALL}, or train on the CPU (--device cpu)")
    try:
        from numba import cuda
    except ImportError as e:
        raise DeviceError(f"--device cuda needs numba-cuda, which cannot be imported ({e}); install the "
                          f"CUDA extra with {INSTALL}, or train on the CPU (--device cpu)") from None
    if simulated():
        if index != 0:
            raise DeviceError(f"cuda:{index}: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) has one "
                              f"device, cuda:0")
        from netspec.kernels.cuda import _sim

        return Runtime(0, _sim.xp, True)
    try:
        usable = cuda.is_available()
    except Exception as e:  # noqa: BLE001
        usable, why = False, str(e)
    else:
        why = ""
    if not usable:
        if not why:
            try:
                cuda.cudadrv.driver.driver.get_device_count()
            except Exception as e:  # noqa: BLE001
                why = str(e)
        why = " ".join(why.split()).strip(" :")   # one paragraph
        raise DeviceError("--device cuda: no usable NVIDIA GPU: the CUDA driver was not found or "
                          "found no device" + (f" ({why.strip()})" if why else "") + "; check "
                          "nvidia-smi, or train on the CPU (--device cpu)")
    count = len(cuda.gpus)
    if index >= count:
        raise DeviceError(f"cuda:{index}: this machine has {count} GPU{'s' if count != 1 else ''} "
                          f"(cuda:0 to cuda:{count - 1})")
    try:
        import cupy
    except ImportError as e:
        raise DeviceError(f"--device cuda needs CuPy (cuBLAS and GPU arrays), which cannot be imported "
                          f"({e}); install the CUDA extra again with {INSTALL}") from None
    try:
        with cupy.cuda.Device(index):
            cupy.zeros(1, dtype=cupy.float32).sum().item()
    except Exception as e:  # noqa: BLE001
        raise DeviceError(f"cuda:{index}: CuPy cannot use this GPU ({e}); check that the installed "
                          f"CuPy build matches the CUDA driver (nvidia-smi shows its version)") from None
    # one process, one GPU (MPI runs one rank per GPU): make it current for CuPy and numba-cuda,
    # which share its primary context
    cupy.cuda.Device(index).use()
    cuda.select_device(index)
    return Runtime(index, cupy, False)
