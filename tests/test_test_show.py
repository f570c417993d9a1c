"""`netspec test --show` prints blobs item by item: the XOR truth table of the lecture."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from netspec.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent


def test_xor_truth_table(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", str(ROOT / "solvers/xor.yaml"), "-q", "--run-dir", str(run)])
    assert r.exit_code == 0, r.output
    weights = next(run.glob("XOR_iter_2000.safetensors"))
    r = CliRunner().invoke(cli, ["test", str(ROOT / "models/xor/train_val.yaml"), "--weights", str(weights),
                                 "--show", "data,out,label", "-q"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    head = lines.index(next(l for l in lines if l.split() == ["data", "out", "label"]))
    table = {}
    for line in lines[head + 1:head + 5]:
        m = re.match(r"\[(\d), (\d)\]\s+(\S+)\s+(\d)", line)
        assert m, line
        table[(int(m[1]), int(m[2]))] = (float(m[3]), int(m[4]))
    for (a, b), (out, label) in table.items():
        assert label == a ^ b
        assert abs(out - label) < 0.1, f"xor({a}, {b}) = {out}"


def test_show_unknown_blob_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    CliRunner().invoke(cli, ["train", str(ROOT / "solvers/xor.yaml"), "-q", "--run-dir", str(run)])
    weights = next(run.glob("XOR_iter_2000.safetensors"))
    r = CliRunner().invoke(cli, ["test", str(ROOT / "models/xor/train_val.yaml"), "--weights", str(weights),
                                 "--show", "dat", "-q"])
    assert r.exit_code == 1
    assert "no blob 'dat'; did you mean 'data'?" in r.output and "Traceback" not in r.output
