"""The package layering of shared/ARCHITECTURE.md, checked on the source: every import of every
netspec module (function-level ones too, since they run as soon as that function does) forms a
graph without circles; the file format (``netspec/spec/``) imports no training code; numba's
compile flags are chosen in ``kernels/jit.py`` only."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "netspec"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def imports_of(name: str) -> set[str]:
    """The netspec modules ``name`` imports anywhere in its file."""
    f = MODULES[name]
    pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    out = set()
    for t in found:
        while t and t not in MODULES:
            t = t.rpartition(".")[0]
        if t and t not in (name, "netspec"):
            out.add(t)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycle_from(start: str) -> list[str] | None:
    """One import circle through ``start``, or None."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_the_graph_reader_sees_imports():
    # the check below must be able to fail: it sees the arrows it is about
    assert "netspec.data.memory" in GRAPH["netspec.data.catalog"]
    assert "netspec.solvers.run" in GRAPH["netspec.zoo"]
    assert "netspec.zoo_registry" in GRAPH["netspec.solvers.run"]
    assert "netspec.spec.solver_schema" in GRAPH["netspec.spec.schema"]


def test_no_import_circles():
    circles = [c for c in (_cycle_from(m) for m in sorted(GRAPH)) if c]
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:5])


def test_catalog_memory_and_run_zoo_run_one_way():
    assert "netspec.data.catalog" not in GRAPH["netspec.data.memory"]
    assert "netspec.zoo" not in GRAPH["netspec.solvers.run"]


def test_the_format_imports_no_training_code():
    bad = {m: sorted(t for t in GRAPH[m] if t.startswith(("netspec.solvers", "netspec.kernels", "netspec.cli")))
           for m in GRAPH if m.startswith("netspec.spec")}
    assert not {m: t for m, t in bad.items() if t}, bad


JIT_NAMES = {"njit", "jit", "pjit", "rjit", "ijit", "vectorize", "guvectorize"}
FLAG_NAMES = {"fastmath", "parallel", "cache", "nogil", "error_model", "boundscheck", "inline", "looplift"}


def flag_settings(source: str) -> list[int]:
    """Lines that choose a numba flag: a flag keyword in a call, a flag name as a dict key (options
    passed on with ``**``), an assignment to ``numba.config``, or a decorator made from numba."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            callee = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if callee in JIT_NAMES and any(k.arg in FLAG_NAMES for k in node.keywords):
                out.append(node.lineno)
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "numba" \
                    and f.attr in ("njit", "jit", "vectorize", "guvectorize"):
                out.append(node.lineno)
        elif isinstance(node, ast.Dict):
            if any(isinstance(k, ast.Constant) and k.value in FLAG_NAMES for k in node.keys):
                out.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any("numba.config" in ast.unparse(x) for x in targets):
                out.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "numba":
            if any(a.name in ("njit", "jit", "vectorize", "guvectorize") for a in node.names):
                out.append(node.lineno)
    return sorted(set(out))


def test_the_flag_finder_finds_flags():
    assert flag_settings('opts = {"fastmath": {"reassoc"}}\n@njit(**opts)\ndef f(): pass\n') == [1]
    assert flag_settings("@njit(parallel=True)\ndef f(): pass\n") == [1]
    assert flag_settings("import numba\nnumba.config.THREADING_LAYER = 'omp'\n") == [2]
    assert flag_settings("from numba import njit\n") == [1]
    assert flag_settings('@njit(inline="always")\ndef f(): pass\n') == [1]
    assert flag_settings("build_schema(inline=True)\n") == []
    assert flag_settings('"""fastmath={"reassoc"} in a docstring"""\n@njit\ndef f(): pass\n') == []


def test_numba_flags_are_set_in_jit_py_only():
    offenders = []
    for name, f in MODULES.items():
        if not name.startswith("netspec.") or name == "netspec.kernels.jit":
            continue
        lines = f.read_text(encoding="utf-8").splitlines()
        for i in flag_settings("\n".join(lines)):
            offenders.append(f"{f.relative_to(PKG.parent)}:{i}: {lines[i - 1].strip()}")
    assert not offenders, "\n".join(offenders)
