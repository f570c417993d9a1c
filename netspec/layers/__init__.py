"""Built-in layer types: importing this package registers every module in it.

A module here holds one type or one family of types; each registers itself with
``@register``.  Modules whose names start with ``_`` are shared helpers.
"""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")
