"""A background thread that makes batches ahead of the training step.

The thread fills a fixed ring of batch buffers (allocated once) and hands each one over with
the cursor *after* it; the consumer copies a batch into its tops and gives the buffer back.
Reading files and numpy/numba work release the GIL, so a thread overlaps with the step.
The thread holds no reference to the layer, so an unclosed layer can still be collected
(and its thread stopped, see ``Data.setup``).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import numpy as np

from netspec.data.reader import Cursor, Reader

_POLL = 0.5  # seconds between checks that the thread is still alive while waiting


class Prefetcher:
    def __init__(self, reader: Reader, cursor: Cursor, depth: int, make_buffers: Callable[[], list[np.ndarray]]):
        self.slots = [make_buffers() for _ in range(max(1, depth))]
        self.free: queue.Queue = queue.Queue()
        self.full: queue.Queue = queue.Queue()
        for i in range(len(self.slots)):
            self.free.put(i)
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.fill_times: list[float] = []     # seconds per batch (the first 64), appended by the thread
        self.thread = threading.Thread(target=_produce, name="netspec-prefetch", daemon=True,
                                       args=(reader, cursor, self.slots, self.free, self.full, self.stop_event,
                                             self.fill_times))
        self.thread.start()

    def get(self) -> tuple[int, list[np.ndarray], Cursor]:
        """The next batch: (slot to release, its buffers, the cursor after it)."""
        if self.error is not None:
            raise self.error
        while True:
            try:
                item = self.full.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.full.empty():
                    from netspec.errors import DataError

                    self.error = DataError("the data prefetch thread stopped without a batch")
                    raise self.error from None
        slot, payload = item
        if slot is None:
            self.error = payload
            raise payload
        return slot, self.slots[slot], payload

    def release(self, slot: int) -> None:
        self.free.put(slot)

    def stop(self) -> None:
        self.stop_event.set()
        self.free.put(None)            # wakes a thread waiting for a free buffer
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=30)


def _produce(reader: Reader, cursor: Cursor, slots, free: queue.Queue, full: queue.Queue,
             stop: threading.Event, fill_times: list[float]) -> None:
    while not stop.is_set():
        slot = free.get()
        if slot is None or stop.is_set():
            return
        try:
            t0 = time.perf_counter()
            cursor = reader.fill(slots[slot], cursor)
            if len(fill_times) < 64:
                fill_times.append(time.perf_counter() - t0)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
            full.put((None, e))
            return
        full.put((slot, cursor))
