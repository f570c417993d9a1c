"""netspec: a Caffe-style declarative neural-network trainer.

Describe a network in YAML or JSON, check it with ``netspec check``, train it with
``netspec train``.  Importing this package is cheap: it pulls in neither numpy kernels nor
numba; those load when a net is allocated.

For plugin authors, the layer contract is importable from here::

    import netspec
    from netspec.spec import types as T

    @netspec.register("Gain")
    class Gain(netspec.Layer):
        '''y = gain * x'''
        schema = {"properties": {"gain": T.number(default=2.0)}}
        def reshape(self, bottom_shapes): return [bottom_shapes[0]]
        ...
"""

import os as _os

__version__ = "0.1.0"

# OpenBLAS's idle workers busy-wait for about 2^28 cycles after each GEMM.  Numba's parallel
# kernels that run next (im2col, pooling, ...) then share the cores with the spinning threads:
# with 2 numba and 2 BLAS threads a LeNet conv2 step ran 6x slower and a CIFAR-10 conv2 step
# 13x slower than on 1 thread.  A short timeout lets the workers sleep at once.  OpenBLAS reads
# it when it loads, so this works when netspec is imported before numpy (as the CLI is).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

_LAZY = {
    "Layer": ("netspec.core.layer", "Layer"),
    "register": ("netspec.core.layer", "register"),
    "SAME": ("netspec.core.layer", "SAME"),
    "NetspecError": ("netspec.errors", "NetspecError"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'netspec' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
