"""`netspec time` prints Caffe's per-layer table for the shipped nets; `netspec warmup` fills
the kernel cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from netspec.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("model", ["lenet", "cifar10_quick", "autoencoder"])
def test_time_prints_per_layer_table(model):
    r = CliRunner().invoke(cli, ["time", str(ROOT / "models" / model / "train_val.yaml"), "-n", "1", "--dummy-data"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[1].split()[:3] == ["layer", "type", "algorithm"]
    body = lines[3:lines.index(next(l for l in lines if l.startswith("Average Forward pass")))]
    assert len(body) >= 5
    for line in body:
        cols = line.split()
        assert float(cols[-2]) >= 0  # forward ms
    for key in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward", "Total Time"):
        assert any(l.startswith(key) for l in lines)
    if model != "autoencoder":
        assert any("Convolution" in l and ("gemm" in l or "winograd" in l or "direct" in l) for l in body)


def test_time_test_phase_has_no_backward_for_accuracy():
    r = CliRunner().invoke(cli, ["time", str(ROOT / "models/lenet/train_val.yaml"), "-n", "1", "--dummy-data",
                                 "--phase", "TEST"])
    assert r.exit_code == 0, r.output
    acc = next(l for l in r.output.splitlines() if l.startswith("accuracy"))
    assert acc.split()[-1] == "-"


def test_warmup_named_net():
    r = CliRunner().invoke(cli, ["warmup", str(ROOT / "models/xor/train_val.yaml")])
    assert r.exit_code == 0, r.output
    assert "kernels ready" in r.output
