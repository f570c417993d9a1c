"""Batches from a source: the record order, the cursor, and the transform.

The stream of records is the concatenation of the epochs' orders (the identity, or a
permutation drawn from ``PCG64([shuffle_seed, epoch])``), cut into batches of ``batch_size``
(a batch may run over into the next epoch, as Caffe's reader wraps around).  Batch ``k``'s
transform draws from ``PCG64([transform_seed, k])``.  So a batch depends only on the seeds and
its ``Cursor`` (epoch, position, batch number): three integers are the whole resumable state,
and a prefetch thread that runs ahead never changes what a resumed run sees.

Data-parallel training (``part=(rank, size)``): the stream is cut into global batches of
``size * batch_size`` records, and rank ``rank`` reads records ``[rank * batch_size, (rank + 1) *
batch_size)`` of each, with the random transform draws the whole global batch would get.  The
cursor stays global (it advances by the global batch, its batch number counts global batches),
so the records and augmentations of an update are the same for any number of ranks that
makes the same global batch, and a snapshot resumes with any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from netspec.data.sources import Source
from netspec.data.transforms import Transform


@dataclass(frozen=True)
class Cursor:
    epoch: int = 0          # epochs completed before ``pos``
    pos: int = 0            # next record's position in this epoch's order
    batch: int = 0          # batches made so far (numbers the transform's random stream)


class Reader:
    """Fills batch buffers from a cursor; owns scratch buffers, so one thread uses it at a time."""

    def __init__(self, source: Source, batch_size: int, shuffle: bool, shuffle_seed: int, transform_seed: int,
                 transform: Transform | None, dtype, part: tuple[int, int] = (0, 1)):
        self.source = source
        self.batch_size = batch_size
        rank, size = int(part[0]), int(part[1])
        if not 0 <= rank < size:
            raise ValueError(f"part {part}: the rank must be in [0, size)")
        self.part = (rank, size)
        self.shuffle = shuffle
        self.shuffle_seed = int(shuffle_seed)
        self.transform_seed = int(transform_seed)
        self.transform = transform
        self.raw = [np.empty((batch_size,) + tuple(s), dtype=d) for s, d in zip(source.shapes, source.dtypes)]
        self.work = None
        if transform is not None and not transform.is_identity:
            self.work = np.empty((batch_size,) + tuple(source.shapes[0]), dtype=dtype)
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        """The record indices of one epoch, in reading order."""
        if not self.shuffle:
            epoch = 0
        if epoch not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            n = self.source.size
            if not self.shuffle:
                o = np.arange(n)
            else:
                rng = np.random.Generator(np.random.PCG64([self.shuffle_seed, epoch]))
                blocks = self.source.blocks
                if blocks:
                    # HDF5Data, as Caffe: shuffle the files' order, then the rows within each file
                    starts = np.concatenate([[0], np.cumsum(blocks)[:-1]])
                    o = np.concatenate([starts[f] + rng.permutation(blocks[f]) for f in rng.permutation(len(blocks))])
                else:
                    o = rng.permutation(n)
            self._orders[epoch] = o
        return self._orders[epoch]

    def _skip(self, epoch: int, pos: int, k: int) -> tuple[int, int]:
        """The (epoch, position) ``k`` records after (epoch, pos)."""
        n = self.source.size
        pos += k
        return epoch + pos // n, pos % n

    def indices(self, cur: Cursor) -> tuple[np.ndarray, Cursor]:
        """The record indices of this rank's part of the batch at ``cur`` and the cursor after the
        whole (global) batch."""
        n = self.source.size
        rank, size = self.part
        epoch, pos = self._skip(cur.epoch, cur.pos, rank * self.batch_size)
        after = self._skip(cur.epoch, cur.pos, size * self.batch_size)
        need = self.batch_size
        parts = []
        while need:
            take = min(need, n - pos)
            parts.append(self.order(epoch)[pos:pos + take])
            pos += take
            need -= take
            if pos == n:
                epoch, pos = epoch + 1, 0
        idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return idx, Cursor(after[0], after[1], cur.batch + 1)

    def fill(self, outs: Sequence[np.ndarray], cur: Cursor) -> Cursor:
        """Write the batch at ``cur`` into ``outs`` (one array per field); the cursor after it."""
        idx, nxt = self.indices(cur)
        self.source.read(idx, self.raw)
        for k, out in enumerate(outs):
            raw = self.raw[k]
            if k == 0 and self.transform is not None and not self.transform.is_identity:
                rng = None
                if self.transform.random:
                    rng = np.random.Generator(np.random.PCG64([self.transform_seed, cur.batch]))
                rank, size = self.part
                self.transform.apply(raw, out, rng, self.work, part=(rank * self.batch_size, size * self.batch_size))
            else:
                np.copyto(out, raw.reshape(out.shape), casting="unsafe")
        return nxt
