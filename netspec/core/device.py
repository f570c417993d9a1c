"""Where layers find their compute kernels.

A layer never imports a kernel module directly; it asks ``kernels("conv")`` in ``setup`` and
gets ``netspec.kernels.cpu.conv`` (or, on a GPU device, ``netspec.kernels.cuda.conv`` with the
same names and signatures).  Importing a kernel module is what imports numba, so nothing that
only checks a net ever does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_DEVICE = "cpu"


def set_device(name: str) -> None:
    global _DEVICE
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}")
    _DEVICE = name


def device() -> str:
    return _DEVICE


def kernels(family: str) -> ModuleType:
    """The kernel module of ``family`` for the current device."""
    return importlib.import_module(f"netspec.kernels.{_DEVICE}.{family}")
