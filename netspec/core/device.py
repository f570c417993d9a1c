"""The one switch between devices: kernel namespaces, array allocation, copies, synchronisation.

A layer never imports a kernel module directly; it asks ``kernels("conv")`` in ``setup`` and
gets ``netspec.kernels.cpu.conv`` (or, on a GPU device, ``netspec.kernels.cuda.conv`` with the
same names and signatures).  Importing a kernel module is what imports numba, so nothing that
only checks a net ever does.

Arrays follow the device too.  On the CPU they are NumPy arrays; on a GPU they are CuPy arrays
(under ``NUMBA_ENABLE_CUDASIM=1``, NumPy arrays of a strict subclass that, like CuPy, refuses
to be mixed with host arrays, so that the simulator finds the same mistakes a GPU would).
NumPy functions called on device arrays dispatch to the device (NEP 13/18), so layers keep
writing ``np.dot(a, b, out=c)``; what cannot dispatch goes through this module:

- making arrays: ``empty``, ``zeros``, ``full``, ``asarray`` (a host array to the device);
- crossing between host and device: ``to_host`` (always a NumPy array) and ``copy_in``
  (a host array into a device array);
- ``address`` (where an array's data starts, to tell buffers apart) and ``synchronize``.

The current device is process-wide, like Caffe's ``Caffe::mode()``: the Net makes its device
current while it allocates and sets up its layers, and layers take what they need in ``setup``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from types import ModuleType
from typing import Iterator

import numpy as np

from netspec.errors import DeviceError


class Device:
    """A place where arrays live and kernels run: ``cpu`` or ``cuda:N``."""

    def __init__(self, kind: str = "cpu", index: int = 0):
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {kind!r}")
        self.kind = kind
        self.index = int(index)
        self._xp = np if kind == "cpu" else None

    # ---- identity ------------------------------------------------------------------------
    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    def __repr__(self) -> str:
        return f"Device({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and (self.kind, self.index) == (other.kind, other.index)

    def __hash__(self) -> int:
        return hash((self.kind, self.index))

    # ---- namespaces ----------------------------------------------------------------------
    @property
    def xp(self) -> ModuleType:
        """The array module of this device: numpy, cupy, or the simulator's stand-in."""
        if self._xp is None:
            from netspec.kernels.cuda import runtime

            self._xp = runtime(self.index).xp
        return self._xp

    def kernels(self, family: str) -> ModuleType:
        if self.kind == "cuda":
            self.xp  # noqa: B018  (checks that the GPU is usable before any kernel compiles)
        return importlib.import_module(f"netspec.kernels.{self.kind}.{family}")

    # ---- arrays --------------------------------------------------------------------------
    def empty(self, shape, dtype=np.float32):
        with self.selected():
            return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape, dtype=np.float32):
        with self.selected():
            return self.xp.zeros(shape, dtype=dtype)

    def full(self, shape, value, dtype=np.float32):
        with self.selected():
            return self.xp.full(shape, value, dtype=dtype)

    def asarray(self, host, dtype=None):
        """A device copy of a host array (on the CPU: the array itself when it already fits)."""
        if self.kind == "cpu":
            return np.asarray(host, dtype=dtype)
        if self.owns(host):
            return host if dtype is None else host.astype(dtype, copy=False)
        with self.selected():
            return self.xp.asarray(np.ascontiguousarray(host, dtype=dtype))

    def host_empty(self, shape, dtype=np.float32) -> np.ndarray:
        """A host array that batches are made in before they are copied to this device:
        page-locked (pinned) memory on a GPU, which the copy engine reads by DMA at the bus's
        full rate (pageable memory is first staged by the driver); plain NumPy memory on the
        CPU and under the simulator.  Either way a ``numpy.ndarray``."""
        if self.kind == "cuda":
            from netspec.kernels.cuda import runtime

            if not runtime(self.index).sim:
                import cupyx

                with self.selected():
                    return cupyx.empty_pinned(shape, dtype=dtype)
        return np.empty(shape, dtype=dtype)

    def owns(self, a) -> bool:
        """Whether ``a`` is an array of this device."""
        if self.kind == "cpu":
            return isinstance(a, np.ndarray) and not hasattr(a, "__netspec_device__")
        return is_device_array(a)

    def synchronize(self) -> None:
        if self.kind == "cuda":
            from netspec.kernels.cuda import runtime

            runtime(self.index).synchronize()

    @contextlib.contextmanager
    def selected(self) -> Iterator[None]:
        """Make this GPU the one CuPy and numba-cuda work on (no-op on the CPU)."""
        if self.kind == "cpu":
            yield
            return
        from netspec.kernels.cuda import runtime

        with runtime(self.index).selected():
            yield


# ---- host <-> device, whatever the array ------------------------------------------------------
def is_device_array(a) -> bool:
    """True for GPU arrays (CuPy's, or the simulator's stand-in), False for NumPy arrays."""
    return hasattr(a, "__cuda_array_interface__") or hasattr(a, "__netspec_device__")


def to_host(a) -> np.ndarray:
    """A NumPy array with the values of ``a`` (a copy for device arrays; ``a`` itself on the CPU)."""
    if isinstance(a, np.ndarray) and not hasattr(a, "__netspec_device__"):
        return a
    if hasattr(a, "get"):                  # CuPy
        return a.get()
    if hasattr(a, "__netspec_device__"):   # the simulator's stand-in
        return np.array(a, copy=True).view(np.ndarray)
    if hasattr(a, "copy_to_host"):         # numba-cuda device array
        return a.copy_to_host()
    return np.asarray(a)


def copy_in(dst, src) -> None:
    """``dst[...] = src`` where ``dst`` may be a device array and ``src`` a host array."""
    if isinstance(dst, np.ndarray) and not hasattr(dst, "__netspec_device__"):
        np.copyto(dst, to_host(src), casting="unsafe")
        return
    if is_device_array(src):
        dst[...] = src
        return
    src = np.asarray(src)
    if hasattr(dst, "set") and dst.flags.c_contiguous and src.shape == dst.shape and src.dtype == dst.dtype:
        dst.set(np.ascontiguousarray(src))
        return
    from netspec.kernels.cuda import runtime

    dst[...] = runtime().xp.asarray(np.ascontiguousarray(src, dtype=dst.dtype)).reshape(dst.shape)


def address(a) -> int:
    """Where the data of ``a`` starts (host or device memory): tells buffers apart."""
    if hasattr(a, "__cuda_array_interface__"):
        return int(a.__cuda_array_interface__["data"][0])
    return int(a.ctypes.data)


# ---- the current device ------------------------------------------------------------------------
CPU = Device("cpu")
_CURRENT = CPU


def parse(text: "str | Device | None") -> Device:
    """``cpu``, ``cuda``, ``cuda:N`` (also ``gpu``/``gpu:N``) -> a Device (not yet checked)."""
    if isinstance(text, Device):
        return text
    if text is None:
        return CPU
    t = str(text).strip().lower()
    m = re.fullmatch(r"(cpu|cuda|gpu)(?::(\d+))?", t)
    if not m or (m.group(1) == "cpu" and m.group(2) not in (None, "0")):
        raise DeviceError(f"unknown device '{text}': use cpu, cuda or cuda:N (N the GPU's number, from 0)")
    if m.group(1) == "cpu":
        return CPU
    return Device("cuda", int(m.group(2) or 0))


def resolve(text: "str | Device | None") -> Device:
    """``parse`` and, for a GPU, check that it can be used now (a DeviceError says what is missing)."""
    dev = parse(text)
    if dev.is_cuda:
        dev.xp  # noqa: B018
    return dev


def current() -> Device:
    return _CURRENT


def set_device(dev: "str | Device") -> None:
    global _CURRENT
    _CURRENT = parse(dev)


@contextlib.contextmanager
def use(dev: "str | Device | None") -> Iterator[Device]:
    """Make ``dev`` current inside the block (and the GPU selected)."""
    global _CURRENT
    prev, _CURRENT = _CURRENT, parse(dev) if dev is not None else _CURRENT
    try:
        with _CURRENT.selected():
            yield _CURRENT
    finally:
        _CURRENT = prev


def device() -> str:
    """The current device's kind: ``cpu`` or ``cuda``."""
    return _CURRENT.kind


def kernels(family: str) -> ModuleType:
    """The kernel module of ``family`` for the current device."""
    return _CURRENT.kernels(family)


# shortcuts on the current device, for layers' setup
def empty(shape, dtype=np.float32):
    return _CURRENT.empty(shape, dtype)


def zeros(shape, dtype=np.float32):
    return _CURRENT.zeros(shape, dtype)


def full(shape, value, dtype=np.float32):
    return _CURRENT.full(shape, value, dtype)


def host_empty(shape, dtype=np.float32) -> np.ndarray:
    """A host staging array for copies to the current device (pinned on a GPU)."""
    return _CURRENT.host_empty(shape, dtype)


def asarray(host, dtype=None):
    return _CURRENT.asarray(host, dtype)


def xp() -> ModuleType:
    return _CURRENT.xp


def env_device() -> str | None:
    """``NETSPEC_DEVICE`` from the environment (used when no --device is given)."""
    return os.environ.get("NETSPEC_DEVICE") or None
