"""``netspec data list`` and ``netspec data preview`` through click's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli.main import cli

NET = """\
name: toy
layers:
  - {name: train_data, type: Data, top: [data, label], include: {phase: TRAIN}, source: toy.npz,
     batch_size: 4, transform: {crop_size: 6, mirror: true, rotate: 10, scale: 0.00390625}}
  - {name: test_data, type: Data, top: [data, label], include: {phase: TEST}, source: toy.npz,
     batch_size: 5, transform: {crop_size: 6, scale: 0.00390625}}
  - {name: ip, type: InnerProduct, num_output: 3}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}
"""


@pytest.fixture
def net_file(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "toy.npz", data=rng.integers(0, 256, (9, 3, 8, 8), dtype=np.uint8),
             label=np.array([0, 0, 0, 0, 1, 1, 2, 2, 2]))
    (tmp_path / "net.yaml").write_text(NET)
    return tmp_path / "net.yaml"


def test_preview_writes_a_grid_and_counts_classes(net_file, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    res = CliRunner().invoke(cli, ["data", "preview", str(net_file), "--phase", "TEST", "-o", str(out), "-n", "7"])
    assert res.exit_code == 0, res.output
    assert "test_data (Data, TEST)" in res.output and "samples [3, 6, 6]" in res.output
    lines = res.output.splitlines()
    assert any(ln.split()[:3] == ["0", "4", "44.4%"] for ln in lines)
    assert any(ln.split()[:3] == ["2", "3", "33.3%"] for ln in lines)
    assert "3 classes, 9 records" in res.output and "wrote" in res.output
    with Image.open(out) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_preview_train_phase_and_layer_choice(net_file, tmp_path):
    res = CliRunner().invoke(cli, ["data", "preview", str(net_file), "--layer", "train_data"])
    assert res.exit_code == 0, res.output
    assert "train_data (Data, TRAIN)" in res.output
    res = CliRunner().invoke(cli, ["data", "preview", str(net_file), "--layer", "nope"])
    assert res.exit_code == 1 and "no data layer named 'nope'" in res.output
    res = CliRunner().invoke(cli, ["data", "preview", str(net_file), "--phase", "DEPLOY"])
    assert res.exit_code == 2 and "no data layers" in res.output


def test_preview_of_vector_records(root, tmp_path):
    out = tmp_path / "xor.png"
    res = CliRunner().invoke(cli, ["data", "preview", str(root / "models" / "xor" / "train_val.yaml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "4 records, samples [2]" in res.output and "wrote" in res.output and out.stat().st_size > 0


def test_preview_reports_a_missing_file(tmp_path):
    (tmp_path / "net.yaml").write_text(NET)
    res = CliRunner().invoke(cli, ["data", "preview", str(tmp_path / "net.yaml")])
    assert res.exit_code == 1 and "toy.npz" in res.output and "net.yaml:3" in res.output


def test_data_list_names_install_commands():
    res = CliRunner().invoke(cli, ["data", "list"])
    assert res.exit_code == 0
    for name in ("fashion-mnist", "mnist-5k", "digits"):
        assert name in res.output
    assert "fashion-mnist:test (10,000)" in res.output
