"""User layer plugins: Python files, named by a net's ``plugins:`` list, that register layer types.

A plugin file defines classes with ``@netspec.register("MyType")`` on a ``netspec.Layer``
subclass, exactly like the built-in layers, and so gets the same schema checks, shape
inference, gradient checker (``netspec.testing``) and CLI support.  Each file is imported once
per process, under a module name derived from its absolute path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from netspec.errors import NetspecError, PluginError

_LOADED: dict[Path, object] = {}


def load_plugins(paths: list[str], base_dir: Path | None, file: str | None = None,
                 lines: list[int | None] | None = None) -> list[str]:
    """Import each plugin file; return the layer types each registered.  Errors are located
    at the ``plugins:`` entry of the net file (``file``, ``lines``)."""
    from netspec.core.layer import REGISTRY, registry

    registry()
    new_types: list[str] = []
    for i, raw in enumerate(paths):
        line = lines[i] if lines and i < len(lines) else None
        p = Path(raw).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        p = p.resolve()
        if p in _LOADED:
            continue
        if not p.exists():
            raise PluginError(f"plugin file '{raw}' does not exist (looked for {p})", file=file, line=line,
                              field="plugins")
        before = set(REGISTRY)
        name = "netspec_plugin_" + hashlib.sha1(str(p).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, p)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin '{raw}' is not a Python file", file=file, line=line, field="plugins")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except NetspecError as e:
            sys.modules.pop(name, None)
            raise PluginError(f"plugin '{raw}' failed to load: {e}", file=file, line=line, field="plugins") from None
        except Exception as e:  # a user's code: report where it broke, without a traceback dump
            sys.modules.pop(name, None)
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"{Path(fr.filename).name}:{fr.lineno}" for fr in reversed(tb)
                          if Path(fr.filename).resolve() == p), p.name)
            raise PluginError(f"plugin '{raw}' raised {type(e).__name__} at {where}: {e}", file=file,
                              line=line, field="plugins") from None
        _LOADED[p] = module
        added = sorted(set(REGISTRY) - before)
        if not added:
            raise PluginError(f"plugin '{raw}' registers no layer type (decorate a Layer subclass with "
                              f"@netspec.register(\"MyType\"))", file=file, line=line, field="plugins")
        new_types.extend(added)
    return new_types
