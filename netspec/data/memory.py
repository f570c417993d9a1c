"""In-process arrays as a data source (Caffe's MemoryData, done simply).

    import netspec.data
    netspec.data.register_arrays("toy", x, y)        # x: (N, C, H, W) or (N, D); y: (N,) class indices
    # in the net file:  {type: Data, source: "memory:toy", batch_size: 32}

The arrays are used as given (not copied): change them only between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from netspec.data.info import SourceInfo, sample_shape
from netspec.errors import DataError, suggestion


@dataclass
class Arrays:
    name: str
    x: object                       # numpy array (N, ...)
    y: object | None                # numpy array (N,) or None
    num_classes: int | None
    class_names: list[str] | None

    def info(self) -> SourceInfo:
        shape = self.x.shape
        return SourceInfo(sample_shape(shape[1:]) if len(shape) > 1 else (1,), (), int(shape[0]), self.num_classes,
                          {"class_names": self.class_names} if self.class_names else {})


_REGISTRY: dict[str, Arrays] = {}


def register_arrays(name: str, x, y=None, *, num_classes: int | None = None,
                    class_names: list[str] | None = None) -> None:
    """Make ``x`` (and labels ``y``) readable as ``source: "memory:<name>"``; replaces an earlier one."""
    import numpy as np

    x = np.asarray(x)
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"register_arrays('{name}'): x must hold at least one record, got shape {list(x.shape)}")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"register_arrays('{name}'): y must have shape ({x.shape[0]},) to match x, "
                            f"got {list(y.shape)}")
    if class_names is not None and num_classes is None:
        num_classes = len(class_names)
    _REGISTRY[name] = Arrays(name, x, y, num_classes, list(class_names) if class_names else None)


def unregister_arrays(name: str) -> None:
    _REGISTRY.pop(name, None)


def lookup(name: str) -> Arrays:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise DataError(f"no arrays are registered as 'memory:{name}'" + suggestion(name, _REGISTRY)
                        + f"; call netspec.data.register_arrays('{name}', x, y) before building the net "
                          f"(registered: {known})")
    return _REGISTRY[name]
