"""The JSON Schema (Draft 2020-12) of solver files: Caffe's ``SolverParameter`` names, plus ``net:``.

Every field Caffe's solver message has is accepted under its own name, with Caffe's default,
and a few additions are marked as such (``cosine``, ``warmup_iter``, ``AdamW``, ``min_lr``,
``clip_after_normalize``, ``init_from``, ``reinit``, ``freeze``, and the data-parallel
``global_batch``, ``lr_scaling``, ``lr_base_batch``, ``batch_norm_stats``, and the snapshot
``snapshot_keep`` and ``snapshot_failure``).  Unlike Caffe, ``base_lr``,
``lr_policy`` and ``max_iter`` are required, and so is every parameter the chosen policy reads
(``step`` needs ``gamma`` and ``stepsize``, ...), so a missing one is an error at load time
instead of a silent zero.  The schema is committed as ``netspec/spec/schemas/solver.schema.json``
for editors (a test keeps it current); a net file's inline ``solver:`` mapping is checked by
the same schema, less the net reference.

This is the file format only (``netspec/spec/`` imports no training code); the training code
reads it through ``netspec.solvers.schema``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netspec.spec import types as T

SOLVER_VERSION = 1

RULES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam", "AdamW")
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid", "cosine")
#: Caffe's deprecated solver_type enum, upgraded to ``type``
LEGACY_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}

#: what each lr policy reads besides base_lr (and max_iter, which is always required)
POLICY_FIELDS: dict[str, tuple[str, ...]] = {
    "fixed": (),
    "step": ("gamma", "stepsize"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("gamma", "stepvalue"),
    "poly": ("power",),
    "sigmoid": ("gamma", "stepsize"),
    "cosine": (),
}
#: optional fields that only some policies read (a warning when given to another)
POLICY_OPTIONAL: dict[str, tuple[str, ...]] = {"cosine": ("min_lr",)}

#: the rules that take no momentum (Caffe checks it is 0)
NO_MOMENTUM = ("AdaGrad", "RMSProp")

#: keys that name files, resolved relative to the solver file's folder
PATH_KEYS = ("net", "train_net", "test_net", "snapshot_prefix", "weights", "init_from")

_STATE = {
    "type": "object",
    "description": "a NetState: the phase, level and stages a net is filtered with",
    "properties": {"phase": T.enum(T.PHASES), "level": T.integer(), "stage": T.strings()},
    "additionalProperties": False,
}


def _one_or_many(item: dict, desc: str) -> dict:
    types = item["type"] if isinstance(item["type"], list) else [item["type"]]
    out = {k: v for k, v in item.items() if k not in ("type", "description", "default")}
    out["type"] = types + ["array"]
    out["items"] = {k: v for k, v in item.items() if k not in ("description", "default")}
    out["description"] = desc
    return out


def _globs(desc: str) -> dict:
    return {"type": ["string", "array"], "items": T.string(), "minLength": 1, "description": desc}


PROPERTIES: dict[str, dict] = {
    "netspec": {"type": "integer", "const": SOLVER_VERSION,
                "description": "the format version; omit for the current one"},
    "description": {"type": "string"},
    # -- the nets
    "net": T.string(desc="the net file (relative to this file), used for the train net and "
                         "every generic test net"),
    "net_param": {"type": "object", "description": "the net, inline (instead of net:)"},
    "train_net": T.string(desc="a train-only net file"),
    "train_net_param": {"type": "object", "description": "a train-only net, inline"},
    "test_net": _one_or_many(T.string(), "test-only net files"),
    "test_net_param": {"type": ["object", "array"], "items": {"type": "object"},
                       "description": "test-only nets, inline"},
    "train_state": dict(_STATE, description="the state of the train net (phase TRAIN)"),
    "test_state": {"type": ["object", "array"], "items": _STATE, "properties": _STATE["properties"],
                   "additionalProperties": False,
                   "description": "the state of each test net (phase TEST): none, or one per test net"},
    # -- testing
    "test_iter": _one_or_many(T.integer(1), "forward batches per test, one entry per test net"),
    "test_interval": T.integer(0, default=0, desc="test every this many iterations (0: never)"),
    "test_compute_loss": T.boolean(False, "also print the mean test loss"),
    "test_initialization": T.boolean(True, "test before the first iteration"),
    # -- the schedule
    "base_lr": T.number(0, desc="the base learning rate"),
    "lr_policy": T.enum(POLICIES, desc="how the learning rate changes (no default, as in Caffe)"),
    "gamma": T.number(desc="step, exp, inv, multistep, sigmoid: the policy's gamma"),
    "power": T.number(desc="inv, poly: the policy's power"),
    "stepsize": T.integer(1, desc="step: iterations per step; sigmoid: the centre"),
    "stepvalue": _one_or_many(T.integer(0), "multistep: the iterations where the rate drops"),
    "min_lr": T.number(0, default=0.0, desc="cosine: the rate reached at max_iter (netspec)"),
    "warmup_iter": T.integer(0, default=0, desc="rise linearly to the policy's rate over this many "
                                                "iterations (netspec; Goyal et al.)"),
    "warmup_start_factor": T.number(0, 1, default=0.0, desc="the warm-up starts at this fraction "
                                                            "of the rate (netspec)"),
    "max_iter": T.integer(0, desc="the number of parameter updates"),
    # -- the update
    "type": T.enum(RULES, default="SGD", desc="the update rule"),
    "solver_type": T.enum(tuple(LEGACY_TYPES), desc="deprecated Caffe enum; use type"),
    "momentum": T.number(0, 1, default=0.0, desc="SGD/Nesterov momentum, AdaDelta decay, Adam beta1"),
    "momentum2": T.number(0, 1, default=0.999, desc="Adam beta2"),
    "rms_decay": T.number(0, exclusive_maximum=1, default=0.99, desc="RMSProp rho"),
    "delta": T.number(exclusive_minimum=0, default=1e-8, desc="AdaGrad/RMSProp/AdaDelta/Adam epsilon"),
    "weight_decay": T.number(0, default=0.0, desc="regularization strength"),
    "regularization_type": T.enum(("L2", "L1"), default="L2"),
    "clip_gradients": T.number(default=-1.0, desc="clip the global L2 norm of the gradient to this "
                                                  "(negative: off)"),
    "clip_after_normalize": T.boolean(False, "clip after dividing by iter_size instead of before, as "
                                             "Caffe does (netspec)"),
    "iter_size": T.integer(1, default=1, desc="accumulate gradients over this many batches per update"),
    # -- data parallel (mpiexec -n S netspec train ...; netspec)
    "global_batch": T.integer(1, desc="records per update over all ranks: each rank's data layers read "
                                      "global_batch / (ranks x iter_size) (default: ranks x batch_size x "
                                      "iter_size) (netspec)"),
    "lr_scaling": T.enum(("none", "linear"), default="none",
                         desc="linear: base_lr x global batch / lr_base_batch (Goyal et al.) (netspec)"),
    "lr_base_batch": T.integer(1, desc="the global batch base_lr was chosen for (lr_scaling: linear) (netspec)"),
    "batch_norm_stats": T.enum(("local", "allreduce"), default="local",
                               desc="data parallel: BatchNorm normalizes by each rank's batch; before tests "
                                    "and snapshots its running statistics are rank 0's (local) or the mean "
                                    "over the ranks (allreduce) (netspec)"),
    # -- mixed precision (netspec)
    "precision": T.enum(("float32", "float16", "bfloat16"), default="float32",
                        desc="storage precision of activations and their gradients: each layer's tops "
                             "and propagated gradients are rounded to it, while weights, their gradients "
                             "and the kernels' sums stay float32 (netspec)"),
    "loss_scale": {"description": "multiply the loss gradient by this before backward and divide it out "
                                  "of the param gradients; 'dynamic' (the default with float16, 1 otherwise) "
                                  "starts at 65536, halves it and skips the update when a gradient overflows, "
                                  "and doubles it after loss_scale_window clean steps (netspec)",
                   "anyOf": [{"const": "dynamic"}, {"type": "number", "exclusiveMinimum": 0}]},
    "loss_scale_window": T.integer(1, default=2000, desc="dynamic loss_scale: clean steps before the scale "
                                                         "doubles (netspec)"),
    "average_loss": T.integer(1, default=1, desc="display the mean loss of the last this many iterations"),
    # -- output
    "display": T.integer(0, default=0, desc="log every this many iterations (0: never)"),
    "debug_info": T.boolean(False, "log per-layer data and gradient magnitudes when displaying"),
    "snapshot": T.integer(0, default=0, desc="snapshot every this many iterations (0: never)"),
    "snapshot_prefix": T.string(desc="snapshot files start with this (default <run dir>/<net name>; netspec train --run-dir keeps the name and moves them there)"),
    "snapshot_diff": T.boolean(False, "also save the gradients in the weights file"),
    "snapshot_format": T.enum(("BINARYPROTO", "HDF5"), desc="accepted for Caffe files; netspec always "
                                                            "writes safetensors"),
    "snapshot_after_train": T.boolean(True, "snapshot at the end unless the last iteration just did"),
    "snapshot_keep": T.integer(0, default=0, desc="keep only the newest this many snapshots of the prefix, "
                                                  "removing older ones as new ones are written (0: keep all) "
                                                  "(netspec)"),
    "snapshot_failure": T.enum(("stop", "continue"), default="stop",
                               desc="when a snapshot cannot be written (disk full, folder read-only): stop "
                                    "with an error, or log it and train on, trying again at the next "
                                    "snapshot; the previous snapshot stays valid either way, and a failed "
                                    "final snapshot always stops with an error (netspec)"),
    # -- environment
    "solver_mode": T.enum(("CPU", "GPU"), default="CPU", desc="GPU trains on cuda:<device_id> (the "
                          "[cuda] extra); --device on the command line wins"),
    "device_id": T.integer(0, default=0, desc="the GPU of solver_mode GPU"),
    "random_seed": T.integer(-1, default=-1, desc="seeds fillers, dropout and data shuffling "
                                                  "(-1: from the clock)"),
    "layer_wise_reduce": T.boolean(True, "accepted for Caffe files (multi-GPU); no effect"),
    # -- fine-tuning
    "weights": _one_or_many(T.string(), "weights files to start from, applied in order (Caffe's "
                                        "weights; comma-separated lists work too)"),
    "init_from": T.string(desc="a weights file or zoo:<name> to start from (netspec; like --weights)"),
    "reinit": _globs("layer-name globs whose params start from their fillers even when the weights "
                     "file has them with another shape (netspec)"),
    "freeze": _globs("layer-name globs whose params are not updated (lr_mult 0) (netspec)"),
}

REQUIRED = ("base_lr", "lr_policy", "max_iter")
NET_KEYS = ("net", "net_param", "train_net", "train_net_param")


def _conditions() -> list[dict]:
    out = []
    for policy, fields in POLICY_FIELDS.items():
        for f in fields:  # one condition per field, so each missing field is its own error
            out.append({"if": {"properties": {"lr_policy": {"const": policy}}, "required": ["lr_policy"]},
                        "then": {"required": [f]}})
    out.append({"if": {"properties": {"type": {"enum": list(NO_MOMENTUM)}}, "required": ["type"]},
                "then": {"properties": {"momentum": {"const": 0}}}})
    out.append({"not": {"required": ["type", "solver_type"]}})
    return out


def build_solver_schema(inline: bool = False) -> dict:
    """The solver-file schema; ``inline=True`` gives the form a net file's ``solver:`` takes
    (no net reference: the net is the file that holds it)."""
    props: dict[str, Any] = dict(PROPERTIES)
    if inline:
        for k in NET_KEYS + ("test_net", "test_net_param", "netspec"):
            props.pop(k)
    schema: dict[str, Any] = {
        "type": "object",
        "description": "A Caffe-style solver: the nets, the learning-rate schedule, the update rule.",
        "properties": props,
        "required": list(REQUIRED),
        "additionalProperties": False,
        "allOf": _conditions(),
    }
    if not inline:
        schema["anyOf"] = [{"required": [k]} for k in NET_KEYS]
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"urn:netspec:solver:{SOLVER_VERSION}", "title": "netspec solver", **schema}
    return schema


def dump(schema: dict) -> str:
    return json.dumps(schema, indent=1) + "\n"


def committed_path() -> Path:
    return Path(__file__).resolve().parent / "schemas" / "solver.schema.json"


def write_committed() -> Path:
    """Regenerate ``netspec/spec/schemas/solver.schema.json``."""
    p = committed_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dump(build_solver_schema()))
    return p
