"""What stands in for CuPy under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

Device arrays are NumPy arrays of the subclass ``SimArray``.  Like CuPy's arrays they refuse to
be mixed with host (plain NumPy) arrays in NumPy functions and ufuncs, and kernel launches
refuse host arrays (``netspec.kernels.cuda._launch``), so a layer that keeps a scratch buffer on
the host, or writes a host batch into a blob without ``netspec.core.device.copy_in``, fails
under the simulator as it would on a GPU, not only there.
"""

from __future__ import annotations

import types

import numpy as np


class SimArray(np.ndarray):
    """A simulated device array (NumPy memory, CuPy's rules about mixing with the host)."""

    __netspec_device__ = True

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(inputs, ufunc.__name__)
        if out is not None:
            _refuse_host(out, ufunc.__name__)
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(args, func.__name__)
        _refuse_host(tuple(kwargs.values()), func.__name__)
        return super().__array_function__(func, types_, args, kwargs)

    def get(self) -> np.ndarray:
        """A host copy (CuPy's ``ndarray.get``)."""
        return np.array(self, copy=True).view(np.ndarray)

    def set(self, host) -> None:
        """Copy a host array in (CuPy's ``ndarray.set``)."""
        np.copyto(self.view(np.ndarray), host)


def _plain(x):
    return x.view(np.ndarray) if isinstance(x, SimArray) else x


def _wrap(x):
    if isinstance(x, np.ndarray) and not isinstance(x, SimArray):
        return x.view(SimArray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    return x


def is_host(x) -> bool:
    return isinstance(x, np.ndarray) and not isinstance(x, SimArray) and x.ndim > 0


def _refuse_host(values, what: str) -> None:
    for v in values:
        if isinstance(v, (list, tuple)):
            _refuse_host(v, what)
        elif is_host(v):
            raise TypeError(f"{what}: a host (NumPy) array {v.shape} {v.dtype} was mixed with device "
                            f"arrays; allocate it with netspec.core.device or copy it with copy_in")


def _maker(fn):
    def make(*args, **kwargs):
        return _wrap(fn(*args, **kwargs))

    make.__name__ = fn.__name__
    return make


class _SimXP(types.ModuleType):
    """``xp`` under the simulator: NumPy, with array-making functions giving SimArrays."""

    def __getattr__(self, name):
        return getattr(np, name)


xp = _SimXP("netspec.kernels.cuda._sim.xp")
for _name in ("empty", "zeros", "ones", "full", "arange", "empty_like", "zeros_like", "ones_like",
              "full_like", "linspace", "eye"):
    setattr(xp, _name, _maker(getattr(np, _name)))


def _asarray(a, dtype=None):
    if isinstance(a, SimArray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    return np.array(a, dtype=dtype, copy=True).view(SimArray)


xp.asarray = _asarray
xp.array = lambda a, dtype=None, copy=True: _asarray(a, dtype) if not copy else np.array(a, dtype=dtype).view(SimArray)
xp.ascontiguousarray = lambda a, dtype=None: _wrap(np.ascontiguousarray(a, dtype=dtype))
xp.asnumpy = lambda a: np.array(a, copy=True).view(np.ndarray)
