"""A Blob: a named N-D array and its gradient, both C-contiguous views the Net owns."""

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
        return cls(name, np.zeros(shape, dtype=dtype), np.zeros(shape, dtype=dtype))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def count(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self.data.shape}, {self.data.dtype})"
