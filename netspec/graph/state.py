"""Phase, level and stage filtering (Caffe's ``Net::FilterNet``).

A rule is met when every field it gives holds: the phase is equal, ``min_level <= level <=
max_level``, the state has all of ``stage`` and none of ``not_stage``.  A layer with include
rules is kept when any is met; one with exclude rules is dropped when any is met.  The output
net records its ``state`` and has no rules left, so filtering it again changes nothing.
"""

from __future__ import annotations

from typing import Iterable

from netspec.spec.model import LayerSpec, NetSpec, as_list

PHASES = ("TRAIN", "TEST")


def rule_met(rule: dict, phase: str, level: int, stages: Iterable[str]) -> bool:
    stages = set(stages)
    if "phase" in rule and rule["phase"] != phase:
        return False
    if "min_level" in rule and level < rule["min_level"]:
        return False
    if "max_level" in rule and level > rule["max_level"]:
        return False
    if not set(as_list(rule.get("stage"))) <= stages:
        return False
    if set(as_list(rule.get("not_stage"))) & stages:
        return False
    return True


def layer_kept(layer: LayerSpec, phase: str, level: int, stages: Iterable[str]) -> bool:
    stages = list(stages)
    if layer.get("include"):
        return any(rule_met(r, phase, level, stages) for r in as_list(layer["include"]))
    if layer.get("exclude"):
        return not any(rule_met(r, phase, level, stages) for r in as_list(layer["exclude"]))
    return True


def net_state(net: NetSpec, phase: str | None = None, level: int | None = None,
              stages: Iterable[str] | None = None) -> tuple[str, int, list[str]]:
    """The state to filter with: explicit arguments over the net's own ``state`` (TEST, 0, [])."""
    st = net.get("state", {})
    return (phase or st.get("phase", "TEST"),
            level if level is not None else st.get("level", 0),
            list(stages) if stages is not None else as_list(st.get("stage")))


def filter_net(net: NetSpec, phase: str | None = None, level: int | None = None,
               stages: Iterable[str] | None = None) -> NetSpec:
    """The layers of ``net`` active in the given state, with the state recorded."""
    phase, level, stages = net_state(net, phase, level, stages)
    kept = [l.derive(include=None, exclude=None) for l in net.layers if layer_kept(l, phase, level, stages)]
    state = {"phase": phase}
    if level:
        state["level"] = level
    if stages:
        state["stage"] = sorted(set(stages))
    return net.with_layers(kept, state=state)


def stage_sets(net: NetSpec, phase: str) -> list[list[str]]:
    """The stage combinations worth checking for ``phase``: one per distinct ``stage`` list
    in that phase's include rules, or just ``[]`` when the rules name no stages."""
    found: list[list[str]] = []
    for layer in net.layers:
        for rule in as_list(layer.get("include")):
            if rule.get("phase", phase) == phase and rule.get("stage"):
                s = sorted(as_list(rule["stage"]))
                if s not in found:
                    found.append(s)
    return found or [as_list(net.get("state", {}).get("stage"))]
