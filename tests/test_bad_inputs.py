"""Malformed net files, as a new user would write them, through ``netspec check``.

Each file in ``tests/bad/`` starts with its expectations, one per line::

    # expect: LINE LAYER FIELD "MESSAGE FRAGMENT"

(``-`` for no layer or no field; a JSON file, which cannot hold comments, keeps them in
``<file>.expect``).  ``netspec check`` must exit 1 without a traceback and print, for each
expectation, one error line that starts with ``<file>:<LINE>:``, names ``layer 'LAYER'``
with its type in parentheses (unless the type itself is what is missing) and
``field 'FIELD'``, and contains the fragment.  A layer without a name is ``#<position>``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "bad"
FILES = sorted(p for p in BAD.iterdir() if p.suffix in (".yaml", ".json"))


@dataclass
class Expect:
    line: int
    layer: str | None
    field: str | None
    fragment: str


def expectations(path: Path) -> list[Expect]:
    if path.suffix == ".json":
        lines = path.with_name(path.name + ".expect").read_text().splitlines()
    else:
        lines = [l[len("# expect:"):] for l in path.read_text(errors="replace").splitlines()
                 if l.startswith("# expect:")]
    out = []
    for text in lines:
        line, layer, field, rest = text.split(maxsplit=3)
        out.append(Expect(int(line), None if layer == "-" else layer, None if field == "-" else field,
                          shlex.split(rest)[0]))
    assert out, f"{path.name} states no expectation"
    return out


def _relative(path: Path) -> str:
    return os.path.relpath(path)


def _matches(err_line: str, shown: str, e: Expect) -> bool:
    if not err_line.startswith(f"{shown}:{e.line}:"):
        return False
    if e.layer is not None:
        if e.field == "type" or e.layer.startswith("#"):  # no type to name, or the type is the mistake
            if f"layer '{e.layer}'" not in err_line:
                return False
        elif not re.search(rf"layer '{re.escape(e.layer)}' \(\w+\)", err_line):
            return False
    elif "layer '" in err_line:
        return False
    if e.field is not None and f"field '{e.field}'" not in err_line:
        return False
    return e.fragment in err_line


def check_output(path: Path, output: str) -> None:
    shown = _relative(path)
    assert "Traceback" not in output, output
    lines = [l[len("error: "):] if l.startswith("error: ") else l for l in output.splitlines()]
    err_lines = [l for l in lines if l.startswith(shown + ":")]
    assert err_lines, f"no error names {shown}:\n{output}"
    for e in expectations(path):
        assert any(_matches(l, shown, e) for l in err_lines), f"{path.name}: nothing matches {e}:\n{output}"
    # one line per error, each starting with the file name, in file order
    numbers = [int(l[len(shown) + 1:].split(":", 1)[0]) for l in err_lines]
    assert numbers == sorted(numbers), output


def test_there_are_enough_bad_files():
    assert len(FILES) >= 30


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_check_reports_the_mistake(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(cli, ["check", _relative(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    check_output(path, result.output)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_api_raises_located_errors(path):
    """``netspec.api.check`` raises a NetspecError whose every error has a file and a line."""
    from netspec import api
    from netspec.errors import NetspecError

    with pytest.raises(NetspecError) as info:
        api.check(path)
    errors = getattr(info.value, "errors", [info.value])
    assert errors
    for e in errors:
        assert e.file and e.line, str(e)


SUBPROCESS = ["tab_indent.yaml", "field_typo.yaml", "kernel_too_large.yaml", "json_trailing_comma.json",
              "binary.yaml"]


@pytest.mark.parametrize("name", SUBPROCESS)
def test_real_process(name):
    path = BAD / name
    proc = subprocess.run([sys.executable, "-m", "netspec.cli.main", "check", _rel_to_root(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    out = proc.stderr
    assert out.startswith("error:")
    with _chdir(ROOT):
        check_output(path, out)


def _rel_to_root(path: Path) -> str:
    return str(path.relative_to(ROOT))


class _chdir:
    def __init__(self, where: Path):
        self.where, self.old = where, None

    def __enter__(self):
        self.old = os.getcwd()
        os.chdir(self.where)

    def __exit__(self, *exc):
        os.chdir(self.old)


def test_every_error_of_a_file_is_reported_at_once(monkeypatch):
    monkeypatch.chdir(ROOT)
    for name, n in (("schema_errors_together.yaml", 3), ("graph_errors_together.yaml", 3)):
        result = CliRunner().invoke(cli, ["check", f"tests/bad/{name}"])
        assert result.exit_code == 1
        assert f"{n} errors in tests/bad/{name}" in result.output, result.output


def test_schema_errors_come_before_graph_errors(tmp_path, monkeypatch):
    """A file with both kinds reports its schema errors; graph checks need a valid file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.yaml").write_text(
        "layers:\n  - {name: data, type: Input, top: data, shape: [2, 4]}\n"
        "  - {name: ip, type: InnerProduct, bottom: nope, num_output: 3, weight_filer: {type: xavier}}\n")
    result = CliRunner().invoke(cli, ["check", "net.yaml"])
    assert result.exit_code == 1
    assert "net.yaml:3: layer 'ip' (InnerProduct), field 'weight_filer': unknown field" in result.output
    assert "did you mean 'weight_filler'?" in result.output
    assert "unknown bottom" not in result.output
