"""Each compiler pass as YAML-in/YAML-out fixtures, plus idempotence.

``tests/fixtures/passes/<pass>/<case>.in.yaml`` is a net file; ``<case>.out.yaml`` is what the
pass must give for it, compared as data:

- normalize: the out file is the normalized net exactly, every default written out;
- filter, splits, deploy: the out file is a net too, normalized before comparing, so it may
  leave defaults out (the in file's ``state:`` chooses the phase, level and stages);
- plan: the out file lists, per layer, its top shapes, param shapes and backward needs, and
  the net's inputs, outputs (sorted, as Caffe) and parameter count.

Applying a pass to its own output changes nothing, and every output survives ``render``
(dump, then load) unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec import api
from netspec.graph.deploy import derive_deploy
from netspec.graph.plan import Plan, plan
from netspec.graph.splits import insert_splits
from netspec.graph.state import filter_net, stage_sets
from netspec.spec.dump import dump
from netspec.spec.load import load_file, load_text
from netspec.spec.model import NetSpec, to_plain

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "passes"


def _cases(name: str) -> list:
    folder = FIXTURES / name
    ins = sorted(folder.glob("*.in.yaml"))
    assert ins, f"no fixtures in {folder}"
    return [pytest.param(p, p.with_name(p.name.replace(".in.yaml", ".out.yaml")), id=p.name[:-8]) for p in ins]


def _net(path: Path) -> NetSpec:
    return api.load_net(path)


def _plain(net: NetSpec) -> dict:
    return to_plain(net)


def _rendered(net: NetSpec) -> dict:
    """The net as ``netspec render`` writes it, read back."""
    return load_text(dump(net)).data


def plan_table(p: Plan) -> dict:
    """A plan as data: what the plan fixtures state."""
    layers = []
    for lp in p.layers:
        row: dict = {"name": lp.name, "type": lp.type,
                     "tops": {t: list(s) for t, s in zip(lp.tops, lp.top_shapes)}}
        if lp.params:
            row["params"] = {q.name: list(q.shape) for q in lp.params}
        row["backward"] = lp.need_backward
        if lp.bottoms:
            row["bottom_backward"] = list(lp.bottom_need_backward)
        layers.append(row)
    return {"phase": p.phase, "inputs": list(p.inputs), "outputs": list(p.outputs),
            "params": p.num_params, "layers": layers}


# ---- normalize --------------------------------------------------------------------------

@pytest.mark.parametrize("src, expected", _cases("normalize"))
def test_normalize(src, expected):
    out = _plain(_net(src))
    assert out == load_file(expected).data


@pytest.mark.parametrize("src, expected", _cases("normalize"))
def test_normalize_is_idempotent(src, expected):
    once = _net(src)
    twice = api.load_net_text(dump(once))
    assert _plain(twice) == _plain(once)
    assert _rendered(once) == _plain(once)


def test_normalize_keeps_source_lines():
    net = _net(FIXTURES / "normalize" / "defaults.in.yaml")
    conv = net.layers[1]
    assert conv.line("num_output") == 7
    assert conv.line("pad") == 5  # a filled-in default points at its layer
    assert conv.src.file.endswith("defaults.in.yaml")


# ---- phase, level and stage filtering ---------------------------------------------------

@pytest.mark.parametrize("src, expected", _cases("filter"))
def test_filter(src, expected):
    out = filter_net(_net(src))
    assert _plain(out) == _plain(_net(expected))
    assert _rendered(out) == _plain(out)


@pytest.mark.parametrize("src, expected", _cases("filter"))
def test_filter_is_idempotent(src, expected):
    once = filter_net(_net(src))
    assert _plain(filter_net(once)) == _plain(once)


def test_filter_arguments_override_the_file_state():
    net = _net(FIXTURES / "filter" / "phase_train.in.yaml")
    assert _plain(filter_net(net, "TEST")) == _plain(_net(FIXTURES / "filter" / "phase_test.out.yaml"))
    net = _net(FIXTURES / "filter" / "stages.in.yaml")
    names = [l["name"] for l in filter_net(net, stages=["c"]).layers]
    assert names == ["c_or_b", "not_b", "not_z"]


# ---- split insertion --------------------------------------------------------------------

@pytest.mark.parametrize("src, expected", _cases("splits"))
def test_splits(src, expected):
    out = insert_splits(filter_net(_net(src)))
    assert _plain(out) == _plain(_net(expected))
    assert _rendered(out) == _plain(out)


@pytest.mark.parametrize("src, expected", _cases("splits"))
def test_splits_are_idempotent(src, expected):
    once = insert_splits(filter_net(_net(src)))
    assert _plain(insert_splits(once)) == _plain(once)


# ---- shape inference and backward need --------------------------------------------------

@pytest.mark.parametrize("src, expected", _cases("plan"))
def test_plan(src, expected):
    p = plan(insert_splits(filter_net(_net(src))))
    assert plan_table(p) == load_file(expected).data


@pytest.mark.parametrize("src, expected", _cases("plan"))
def test_plan_of_the_rendered_net_is_the_same(src, expected):
    """Planning is a function of the net's data: render the split net, load it, plan again."""
    split = insert_splits(filter_net(_net(src)))
    again = api.load_net_text(dump(split))
    assert plan_table(plan(insert_splits(again))) == plan_table(plan(split))


# ---- deploy derivation -------------------------------------------------------------------

@pytest.mark.parametrize("src, expected", _cases("deploy"))
def test_deploy(src, expected):
    out = derive_deploy(_net(src))
    assert _plain(out) == _plain(_net(expected))
    assert _rendered(out) == _plain(out)
    plan(insert_splits(out))  # the deploy net itself plans


@pytest.mark.parametrize("src, expected", _cases("deploy"))
def test_deploy_is_idempotent(src, expected):
    once = derive_deploy(_net(src))
    assert _plain(derive_deploy(once)) == _plain(once)


# ---- the shipped models -------------------------------------------------------------------

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.mark.parametrize("path", sorted(MODELS.glob("*/train_val.yaml")), ids=lambda p: p.parent.name)
def test_shipped_models_survive_every_pass_twice(path):
    net = api.load_net(path)
    assert _plain(api.load_net_text(dump(net))) == _plain(net)
    for phase in ("TRAIN", "TEST"):
        one = filter_net(net, phase, stages=stage_sets(net, phase)[0])
        assert _plain(filter_net(one)) == _plain(one)
        split = insert_splits(one)
        assert _plain(insert_splits(split)) == _plain(split)
        assert plan(split).layers
    deploy = derive_deploy(net)
    assert _plain(derive_deploy(deploy)) == _plain(deploy)
