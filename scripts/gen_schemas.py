"""Regenerate the committed JSON Schemas in netspec/spec/schemas/ (for editors and docs).

    python scripts/gen_schemas.py           # rewrite the files
    python scripts/gen_schemas.py --check   # exit 1 when a committed file is out of date

Run it after adding or changing a layer type's schema (or the solver's); the tests fail until
the committed copies match what the code builds.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Each module that owns a committed schema: its committed_path(), write_committed() and the
# text it would write.
SCHEMAS = {
    "net": ("netspec.spec.schema", lambda m: m.dump(m.builtin_net_schema()), lambda m: m.committed_path("net")),
    "solver": ("netspec.spec.solver_schema", lambda m: m.dump(m.build_solver_schema()), lambda m: m.committed_path()),
    "manifest": ("netspec.zoo", lambda m: m.schema_text(), lambda m: m.committed_schema_path()),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report out-of-date files (exit 1 if any)")
    args = ap.parse_args(argv)
    stale = []
    for name, (module, build, path_of) in SCHEMAS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue  # that part of netspec is not there (yet)
        path, text = path_of(mod), build(mod)
        current = path.read_text() if path.exists() else None
        if current == text:
            print(f"{path.relative_to(ROOT)}: up to date")
            continue
        if args.check:
            stale.append(path)
            print(f"{path.relative_to(ROOT)}: out of date", file=sys.stderr)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{path.relative_to(ROOT)}: written")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
