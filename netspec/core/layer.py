"""The layer contract and the registry of layer types.

A layer type is a class registered with ``@register("Type")``.  Its class attributes say what a
net file may write for it (``schema``), how many blobs it takes and gives, and what it learns;
``reshape`` and ``param_shapes`` are pure shape inference (used by ``netspec check`` without
numba); ``setup``/``forward``/``backward`` run it.  The docstring carries an ``Example::``
block of YAML that the contract test validates against the schema.

Runtime rules every layer follows:
- ``forward`` writes ``top[i].data``; ``backward`` *overwrites* ``bottom[i].grad`` where
  ``propagate_down[i]`` and *accumulates* (``+=``) into ``self.params[p].grad``.
- In-place (``top[i] is bottom[i]``) must work for every layer with ``inplace = True``.
- No per-iteration allocation: scratch buffers are made once in ``setup``.
- Numba is reached only through ``netspec.core.device.kernels`` inside ``setup``/``forward``,
  never at import time, so that checking a net never imports it.
"""

from __future__ import annotations

import numpy as np

import textwrap
from typing import Any, ClassVar, Sequence

from netspec.errors import NetspecError, ShapeError, SpecError, suggestion
from netspec.spec.model import LayerSpec

Shape = tuple[int, ...]

SAME = "same"  # num_top sentinel: as many tops as bottoms

REGISTRY: dict[str, type["Layer"]] = {}
_PLUGIN_TYPES: dict[str, str] = {}  # type -> plugin file that registered it


def register(type_name: str):
    """Class decorator: make ``cls`` the implementation of layer type ``type_name``."""

    def deco(cls: type[Layer]) -> type[Layer]:
        if type_name in REGISTRY and REGISTRY[type_name] is not cls:
            prev = REGISTRY[type_name]
            if prev.__module__ != cls.__module__ or prev.__qualname__ != cls.__qualname__:
                raise NetspecError(f"layer type '{type_name}' is registered twice "
                                   f"({prev.__module__}.{prev.__qualname__} and "
                                   f"{cls.__module__}.{cls.__qualname__})")
        cls.type = type_name
        REGISTRY[type_name] = cls
        return cls

    return deco


def registry() -> dict[str, type["Layer"]]:
    """Every registered layer type (the built-in ones are imported on first use)."""
    import netspec.layers  # noqa: F401  (registers the built-in types)

    return REGISTRY


def layer_class(type_name: str, spec: LayerSpec | None = None) -> type["Layer"]:
    reg = registry()
    if type_name not in reg:
        msg = f"unknown layer type '{type_name}'" + suggestion(type_name, reg)
        if spec is not None:
            raise spec.error(SpecError, msg, field="type")
        raise SpecError(msg)
    return reg[type_name]


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    n = 1
    for d in list(shape)[start:end]:
        n *= int(d)
    return n


def wide_dtype(a) -> np.dtype:
    """The precision a layer sums in, and keeps its scratch, statistics, losses, counts and
    param-gradient partials in, for blob ``a``: the blob's own, but at least float32 (float16
    blobs are the half-width activations of ``precision: float16`` on a GPU, whose sums, and
    indices and counts above 2,048, need float32)."""
    return np.promote_types(a.dtype, np.float32)


def canonical_axis(axis: int, ndim: int) -> int | None:
    """Caffe's CanonicalAxisIndex: ``-1`` is the last axis; None when out of range."""
    if -ndim <= axis < ndim:
        return axis % ndim
    return None


class Layer:
    """Base of every layer type.  See the module docstring for the contract."""

    type: ClassVar[str] = ""
    #: this type's own fields as a JSON Schema object fragment: {"properties": ..., "required": [...]}
    schema: ClassVar[dict] = {}
    #: bottoms accepted: an int, or (min, max) with max None for "any number"
    num_bottom: ClassVar[int | tuple[int, int | None]] = 1
    #: tops given: an int, (min, max), or SAME (one per bottom)
    num_top: ClassVar[int | tuple[int, int | None] | str] = 1
    #: learnable params, in Caffe's blob order (weights files and snapshots use these names)
    param_names: ClassVar[tuple[str, ...]] = ()
    #: param name -> field holding its filler
    filler_fields: ClassVar[dict[str, str]] = {}
    #: params whose lr_mult is forced to this value (BatchNorm's statistics)
    fixed_lr_mult: ClassVar[dict[str, float]] = {}
    is_loss: ClassVar[bool] = False     # loss_weight defaults to 1 on top 0
    is_data: ClassVar[bool] = False     # reads a dataset; replaced by Input in the deploy net
    inplace: ClassVar[bool] = True      # top[i] may be bottom[i]
    view: ClassVar[bool] = False        # top 0 is a view of bottom 0 (Flatten, Reshape)
    differentiable: ClassVar[bool] = True  # False: no backward (Accuracy, ArgMax, Threshold)
    #: bottom indices that never receive a gradient (labels)
    no_grad_bottoms: ClassVar[tuple[int, ...]] = ()
    #: in the deploy net, a loss layer becomes this type (SoftmaxWithLoss -> Softmax) or goes
    deploy_as: ClassVar[str | None] = None

    def __init__(self, spec: LayerSpec, phase: str = "TRAIN"):
        self.spec = spec
        self.p: dict[str, Any] = spec
        self.name: str = spec.get("name", "?")
        self.phase: str = spec.get("phase") or phase
        self.params: dict = {}      # param name -> Blob (set by the Net)
        self.rng = None             # numpy Generator (set by the Net)
        self.base_dir = None        # folder of the net file (for relative paths)

    # ---- shape inference: pure, no numba ------------------------------------------------
    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """The top shapes for these bottom shapes; raise ``self.error`` when they do not fit."""
        raise NotImplementedError(f"{self.type}.reshape")

    def param_shapes(self, bottom_shapes: list[Shape]) -> dict[str, Shape]:
        """Shapes of the learnable params, by name, in ``param_names`` order."""
        return {}

    def flops(self, bottom_shapes: list[Shape], top_shapes: list[Shape]) -> int:
        """Forward floating-point operations (a multiply-add counts 2)."""
        return 0

    def fillers(self) -> dict[str, dict]:
        """The filler of each learnable param (Caffe's default: constant 0)."""
        return {p: dict(self.p.get(f) or {"type": "constant"}) for p, f in self.filler_fields.items()}

    @classmethod
    def normalize(cls, fields: dict) -> dict:
        """Rewrite shorthands of this type into its canonical fields (idempotent)."""
        return fields

    @classmethod
    def check_arity(cls, n_bottom: int, n_top: int) -> list[tuple[str, str]]:
        """Problems with these blob counts, as (field, message) pairs."""
        out = []
        lo, hi = _range(cls.num_bottom)
        if n_bottom < lo or (hi is not None and n_bottom > hi):
            out.append(("bottom", f"{cls.type} takes {_describe(lo, hi)} bottom{'s' if hi != 1 else ''}, "
                                  f"got {n_bottom}"))
        if cls.num_top == SAME:
            if n_top != n_bottom:
                out.append(("top", f"{cls.type} gives one top per bottom: {n_bottom} bottom(s) but {n_top} top(s)"))
        else:
            lo, hi = _range(cls.num_top)
            if n_top < lo or (hi is not None and n_top > hi):
                out.append(("top", f"{cls.type} gives {_describe(lo, hi)} top{'s' if hi != 1 else ''}, got {n_top}"))
        return out

    @classmethod
    def example(cls) -> str | None:
        """The YAML example from the docstring (the text after ``Example::``)."""
        doc = cls.__doc__ or ""
        if "Example::" not in doc:
            return None
        body = doc.split("Example::", 1)[1]
        return textwrap.dedent(body.split("\n\n\n")[0]).strip("\n")

    # ---- execution ---------------------------------------------------------------------
    def setup(self, bottom: list, top: list) -> None:
        """Called once after blobs and params are allocated: make scratch buffers, pick kernels."""

    def forward(self, bottom: list, top: list) -> None:
        raise NotImplementedError(f"{self.type}.forward")

    def backward(self, top: list, propagate_down: list[bool], bottom: list) -> None:
        raise NotImplementedError(f"{self.type}.backward")

    def fuse_next(self, nxt: "Layer", bottom: list, top: list, nxt_bottom: list, nxt_top: list) -> bool:
        """Share work with the next layer, which runs in place on this layer's top 0.

        Called by the Net once every layer is set up, for each such pair (and not when
        ``NETSPEC_FUSE=0``).  A layer that can do part of ``nxt``'s work more cheaply together
        with its own arranges it with ``nxt`` and returns True; both keep being called as
        before and split the work between their forward and backward calls.
        """
        return False

    # ---- resumable state (beyond params): data cursors, private RNGs ---------------------
    def get_state(self) -> dict:
        """State a snapshot must hold to resume this layer bit for bit (JSON-serializable
        values and numpy arrays).  Stateless layers return {}."""
        return {}

    def set_state(self, state: dict) -> None:
        """Restore what ``get_state`` returned."""

    def close(self) -> None:
        """Release background resources (prefetch threads, open files)."""

    # ---- helpers -----------------------------------------------------------------------
    def error(self, message: str, field: str | None = None, cls: type[NetspecError] = ShapeError,
              hint: str | None = None) -> NetspecError:
        return self.spec.error(cls, message, field=field, hint=hint)

    def axis(self, axis: int, ndim: int, field: str = "axis") -> int:
        a = canonical_axis(axis, ndim)
        if a is None and ndim == 0:
            raise self.error(f"axis {axis} is out of range: the input is a scalar (it has no axes)", field)
        if a is None:
            raise self.error(f"axis {axis} is out of range for a {ndim}-axis input "
                             f"(valid: {-ndim} to {ndim - 1})", field)
        return a

    def __repr__(self) -> str:
        return f"<{self.type} '{self.name}'>"


def _range(spec) -> tuple[int, int | None]:
    if isinstance(spec, tuple):
        return spec
    return spec, spec


def _describe(lo: int, hi: int | None) -> str:
    if hi is None:
        return f"at least {lo}"
    if lo == hi:
        return f"exactly {lo}"
    return f"{lo} to {hi}"
