"""netspec: a Caffe-style declarative neural-network trainer.

Describe a network in YAML or JSON, check it with ``netspec check``, train it with
``netspec train``.  Importing this package is cheap: it pulls in neither numpy kernels nor
numba; those load when a net is allocated.
"""

__version__ = "0.1.0"
