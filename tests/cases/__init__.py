"""Layer test cases, one module per layer family; the contract test runs them all.

Each module defines ``CASES: list[Case]``.  Every registered layer type needs at least one
case (the contract test fails otherwise).  ``bottoms`` is a function of a seeded numpy
Generator returning float64 arrays, so each case gets fresh, reproducible inputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


@dataclass
class Case:
    fields: dict                                    # the layer as written in a net file (type + fields)
    bottoms: Callable[[np.random.Generator], Sequence[np.ndarray]]
    phase: str = "TRAIN"
    params: dict | None = None                      # initial param values by name (default: random normal)
    random_params: bool = True
    grad: bool = True                               # run the numerical gradient check
    kink: float | None = None                       # skip elements near a non-differentiable point
    kink_range: float = -1.0
    step: float = 1e-3
    threshold: float = 1e-4
    check_bottoms: Sequence[int] | None = None      # bottoms to check (default: all that get gradients)
    check_tops: Sequence[int] | None = None         # tops whose gradient flows back (default: all)
    inplace: bool = False                           # also run with top 0 == bottom 0 and compare
    id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.fields["type"]

    @property
    def name(self) -> str:
        return f"{self.type}-{self.id}" if self.id else self.type


def all_cases() -> list[Case]:
    out: list[Case] = []
    for m in pkgutil.iter_modules(__path__):
        mod = importlib.import_module(f"{__name__}.{m.name}")
        out.extend(getattr(mod, "CASES", []))
    return out
