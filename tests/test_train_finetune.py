"""Fine-tuning: copy by layer name, the transfer table, shape mismatches, reinit, freeze,
init_from/weights, zoo references, and clear errors for bad weights files."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from netspec.errors import WeightsError, ZooError
from netspec.io.weights import copy_weights, read_safetensors, write_safetensors
from netspec.solvers import run

LAYERS = """\
layers:
  - {name: data, type: DummyData, top: [data, label], shape: [[8, 5], [8]],
     data_filler: [{type: gaussian, std: 1}, {type: constant, value: 1}]}
  - {name: ip1, type: InnerProduct, num_output: 6, weight_filler: {type: xavier}}
  - {name: relu1, type: ReLU, top: ip1}
  - {name: HEAD, type: InnerProduct, num_output: OUT, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [HEAD, label]}
"""


def net(tmp_path: Path, name: str, head: str = "ip2", out: int = 3, solver: dict | None = None,
        top: str = "") -> Path:
    cfg = {"base_lr": 0.1, "lr_policy": "fixed", "max_iter": 3, "random_seed": 9}
    cfg.update(solver or {})
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\n{top}solver: {json.dumps(cfg)}\n" +
                 LAYERS.replace("HEAD", head).replace("OUT", str(out)))
    return p


@pytest.fixture
def source(tmp_path) -> Path:
    """Weights of a trained 'base' net."""
    assert run.train(net(tmp_path, "base"), run_dir=tmp_path / "base_run", progress=False) == 0
    return tmp_path / "base_run" / "base_iter_3.safetensors"


def train(tmp_path, path, **kw) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = run.train(path, run_dir=tmp_path / f"run_{path.stem}", progress=False, echo=lines.append, **kw)
    return status, lines


def params_after(tmp_path, path, it=3) -> dict:
    return read_safetensors(tmp_path / f"run_{path.stem}" / f"{path.stem}_iter_{it}.safetensors")[0]


def test_copy_by_name_and_the_transfer_table(tmp_path, source):
    src = read_safetensors(source)[0]
    target = net(tmp_path, "ft", head="ip2_new", out=4, solver={"base_lr": 0.0})
    status, lines = train(tmp_path, target, weights=str(source))
    assert status == 0
    table = lines[lines.index(f"Weights from {source}:"):]
    text = "\n".join(table)
    assert any(l.split()[:3] == ["ip1/weight", "6x5", "copied"] for l in table)
    assert any(l.split()[:4] == ["ip2_new/weight", "4x6", "not", "in"] for l in table)
    assert "ignoring source layer ip2 (not in this net)" in text
    assert "2 copied, 2 not in source, 0 reinitialized, 0 frozen" in text
    after = params_after(tmp_path, target)
    assert np.array_equal(after["ip1/weight"], src["ip1/weight"])   # base_lr 0: the copy is all


def test_a_shape_mismatch_stops_with_caffes_hint(tmp_path, source):
    target = net(tmp_path, "ft", out=4)
    with pytest.raises(WeightsError) as e:
        train(tmp_path, target, weights=str(source))
    msg = str(e.value)
    assert "cannot copy param 'weight' of layer 'ip2': the source has shape [3, 6] (18 values), this net needs " \
           "[4, 6] (24)" in msg
    assert "rename the layer, or list it under reinit: (reinit: [ip2])" in msg


def test_reinit_keeps_the_fillers(tmp_path, source):
    target = net(tmp_path, "ft", out=4, solver={"reinit": ["ip*2"], "base_lr": 0.0})
    status, lines = train(tmp_path, target, weights=str(source))
    assert status == 0
    assert any(l.split()[:3] == ["ip2/weight", "4x6", "reinit"] and "(source 3x6)" in l for l in lines)
    fresh, _ = train(tmp_path / "fresh", net(tmp_path, "fresh", out=4, solver={"base_lr": 0.0}))
    a = params_after(tmp_path, target)
    b = params_after(tmp_path / "fresh", tmp_path / "fresh.yaml")
    assert np.array_equal(a["ip2/weight"], b["ip2/weight"])          # the same seed, the same filler
    assert np.array_equal(a["ip1/weight"], read_safetensors(source)[0]["ip1/weight"])


def test_net_level_reinit_and_freeze(tmp_path, source):
    target = net(tmp_path, "ft", out=4, top="reinit: ip2\nfreeze: [ip1]\n")
    status, lines = train(tmp_path, target, weights=str(source))
    assert status == 0
    after = params_after(tmp_path, target)
    assert np.array_equal(after["ip1/weight"], read_safetensors(source)[0]["ip1/weight"])
    assert any(l.split()[:4] == ["ip1/weight", "6x5", "copied", "frozen"] for l in lines)


def test_freeze_glob_leaves_params_unchanged_after_training(tmp_path, source):
    target = net(tmp_path, "ft", solver={"freeze": ["ip1"], "weight_decay": 0.01})
    status, lines = train(tmp_path, target, weights=str(source))
    assert status == 0
    src, after = read_safetensors(source)[0], params_after(tmp_path, target)
    assert np.array_equal(after["ip1/weight"], src["ip1/weight"]) and np.array_equal(after["ip1/bias"], src["ip1/bias"])
    assert not np.array_equal(after["ip2/weight"], src["ip2/weight"])
    assert "2 frozen" in "\n".join(lines)


def test_init_from_and_weights_in_the_solver(tmp_path, source):
    rel = Path("base_run") / source.name
    a = net(tmp_path, "a", solver={"init_from": str(rel), "base_lr": 0.0})
    assert train(tmp_path, a)[0] == 0
    assert np.array_equal(params_after(tmp_path, a)["ip2/weight"], read_safetensors(source)[0]["ip2/weight"])
    # several files apply in order; the later one wins
    other = tmp_path / "other.safetensors"
    write_safetensors(other, {"ip2/bias": np.full(3, 7.0, np.float32)})
    b = net(tmp_path, "b", solver={"weights": [str(rel), "other.safetensors"], "base_lr": 0.0})
    assert train(tmp_path, b)[0] == 0
    after = params_after(tmp_path, b)
    assert np.array_equal(after["ip2/bias"], np.full(3, 7.0, np.float32))
    assert np.array_equal(after["ip2/weight"], read_safetensors(source)[0]["ip2/weight"])


def test_legacy_4d_shapes_are_accepted(tmp_path):
    from netspec import api
    from netspec.core.net import Net

    n = Net(api.compile_net(api.load_net_text("name: t\n" + LAYERS.replace("HEAD", "ip2").replace("OUT", "3"))))
    w = np.arange(18, dtype=np.float32).reshape(1, 1, 3, 6)
    report = copy_weights(n, {"ip2/weight": w}, "caffe")
    assert report.rows[2].status == "copied"
    assert np.array_equal(n.params["ip2/weight"].data, w.reshape(3, 6))


@pytest.mark.parametrize("damage", ["truncated", "empty", "header", "caffemodel"])
def test_a_damaged_weights_file_is_a_clear_error(tmp_path, source, damage):
    raw = source.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes({"truncated": raw[:-10], "empty": b"", "header": struct.pack("<Q", 20) + b"{not json at all..}" + raw,
                     "caffemodel": b"\x0a\x05LeNet" + b"\x00" * 40}[damage])
    with pytest.raises(WeightsError) as e:
        train(tmp_path, net(tmp_path, "ft"), weights=str(bad))
    msg = str(e.value)
    assert msg.startswith(f"{bad}:") or msg.startswith("bad.safetensors:") or str(bad) in msg
    assert {"truncated": "is truncated: tensor", "empty": "too short to hold its header",
            "header": "header is not valid JSON", "caffemodel": "Caffe .caffemodel"}[damage] in msg


def test_weights_and_resume_do_not_mix(tmp_path, source):
    from netspec.errors import SolverError

    with pytest.raises(SolverError, match="cannot be combined with --resume"):
        train(tmp_path, net(tmp_path, "ft"), weights=str(source), resume="latest")


def _zoo(tmp_path: Path, source: Path, sha: str | None = None) -> Path:
    zoo = tmp_path / "zoo"
    entry = zoo / "tinynet"
    entry.mkdir(parents=True)
    (entry / "weights.safetensors").write_bytes(source.read_bytes())
    digest = sha or hashlib.sha256(source.read_bytes()).hexdigest()
    (entry / "manifest.yaml").write_text(f"name: tinynet\nweights: weights.safetensors\nsha256: {digest}\n")
    return zoo


def test_zoo_references(tmp_path, source, monkeypatch):
    monkeypatch.setenv("NETSPEC_ZOO", str(_zoo(tmp_path, source)))
    status, lines = train(tmp_path, net(tmp_path, "ft"), weights="zoo:tinynet")
    assert status == 0 and "Weights from zoo:tinynet:" in lines
    with pytest.raises(ZooError, match="no zoo entry named 'tinynt'; did you mean 'tinynet'"):
        train(tmp_path, net(tmp_path, "ft2"), weights="zoo:tinynt")


def test_zoo_weights_failing_verification(tmp_path, source, monkeypatch):
    monkeypatch.setenv("NETSPEC_ZOO", str(_zoo(tmp_path, source, sha="0" * 64)))
    with pytest.raises(ZooError, match="fail verification"):
        train(tmp_path, net(tmp_path, "ft"), weights="zoo:tinynet")
