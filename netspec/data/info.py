"""What a probe tells about a source before its records are read: ``SourceInfo``.

Its own module so that every kind of source can describe itself (``catalog`` for files and
built-in datasets, ``memory`` for registered arrays) without one importing the other both ways:
``catalog`` finds a ``memory:`` source through ``memory``, and both import this.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceInfo:
    sample_shape: tuple[int, ...]          # one record, e.g. (1, 28, 28)
    label_shape: tuple[int, ...] = ()      # one label; () for a class index
    size: int | None = None                # number of records, when known
    num_classes: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


def sample_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One record's shape as a blob sees it: grey images (H, W) gain a channel axis."""
    sample = tuple(int(d) for d in shape)
    return (1,) + sample if len(sample) == 2 else sample
