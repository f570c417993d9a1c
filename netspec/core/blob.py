"""A Blob: a named N-D array and its gradient, both C-contiguous views the Net owns.

On a GPU both are device arrays (``netspec.core.device``); ``Blob.zeros`` allocates on the
current device."""

from __future__ import annotations

import numpy as np


class Blob:
    """``data`` and ``grad`` of one named tensor.  Shapes are fixed once the Net is built."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name: str, data: np.ndarray, grad: np.ndarray | None = None):
        self.name = name
        self.data = data
        self.grad = grad if grad is not None else np.zeros_like(data)

    @classmethod
    def zeros(cls, name: str, shape, dtype=np.float32) -> "Blob":
        from netspec.core.device import zeros

        return cls(name, zeros(shape, dtype), zeros(shape, dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self.data.shape}, {self.data.dtype})"
