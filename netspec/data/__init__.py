"""The data pipeline: what a source holds (``catalog``), reading it (``sources``, ``images``),
preprocessing (``transforms``), batching with a resumable cursor (``reader``) and prefetching in
a background thread (``prefetch``).

For the Python API, in-process arrays become a source with ``register_arrays``::

    import netspec.data
    netspec.data.register_arrays("toy", x, y)      # then  source: "memory:toy"
"""

from netspec.data.memory import register_arrays, unregister_arrays

__all__ = ["register_arrays", "unregister_arrays"]
