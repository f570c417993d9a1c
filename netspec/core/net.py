"""A runnable net: every blob allocated, every param a view into one flat arena, layers set up.

``Net(plan)`` allocates; ``forward()`` returns the weighted loss; ``backward()`` seeds each loss
top's gradient with its loss weight and runs the layers that need it in reverse.  All learnable
values live in ``param_data`` and their gradients in ``param_grad`` (one flat array each), so
clearing gradients, a solver update and a snapshot are each one operation over one buffer.
A test net shares the train net's params by ``layer/param`` key (``share_from=``).

``device=`` puts the net on a GPU: every blob, both arenas and the layers' scratch buffers
live there (params are filled on the host from the same generator, then copied over once, so
a CPU and a GPU net with one seed start from the same weights).

``precision=`` ``float16`` or ``bfloat16`` keeps activations and their gradients at that
precision.  On a GPU with float16 they live in float16 buffers (half the memory and memory
traffic; see ``half_storage``).  Elsewhere each layer's tops are rounded to it after the
layer's forward, and each gradient it propagates after its backward (the value a half-precision
buffer would hold: the numbers are the same, the memory is not halved).  Params, their
gradients and the kernels' sums stay float32 (the master weights and the accumulation of mixed
precision training).  Data, labels, losses and metrics stay float32 (a label of 300 is not a
bfloat16 value).  ``loss_scale`` multiplies the loss gradient that backward starts from, so that
small float16 gradients do not flush to zero (the solver divides it out of the param gradients).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from netspec.core import device as D
from netspec.core.blob import Blob
from netspec.core.fillers import fill
from netspec.graph.plan import LayerPlan, ParamInfo, Plan


#: layers whose blobs hold fewer values than this run their kernels on one thread
PARALLEL_GRAIN = 32768

#: layer types that split their work between threads themselves, by its size
_SPLITS_ITSELF = frozenset({"Convolution", "Deconvolution", "InnerProduct"})

#: storage precisions of activations (``Net(precision=...)``) and the kernel that rounds to each
PRECISIONS = {"float32": None, "float16": "round_float16", "bfloat16": "round_bfloat16"}


def half_storage(precision: str, device: "D.Device", dtype=np.float32) -> bool:
    """Whether a net of this precision keeps activations in float16 buffers: with
    ``precision: float16`` on a GPU (whose kernels compile for float16 arrays, and whose GEMMs
    sum them in float32), unless ``NETSPEC_HALF_STORAGE=0`` asks for float32 buffers rounded to
    float16 values, as on the CPU.  bfloat16 is always rounded in float32 buffers: neither
    NumPy, CuPy's GEMMs nor numba-cuda's array loads have a bfloat16 element type here."""
    return (precision == "float16" and device.is_cuda and np.dtype(dtype) == np.float32
            and os.environ.get("NETSPEC_HALF_STORAGE", "1") != "0")


def holds_half(layer, has_bottoms: bool, loss_weight: float) -> bool:
    """Whether a top of ``layer`` (a Layer or its class) holds half-precision values under
    ``precision: float16|bfloat16``: a differentiable layer's top that is made from bottoms,
    but not a data layer's and not a loss top.  These are the tops that are float16 buffers
    on a GPU, or are rounded after forward elsewhere."""
    return has_bottoms and not layer.is_data and layer.differentiable and not loss_weight


def _loss_weight(lp: LayerPlan, j: int) -> float:
    return lp.loss_weights[j] if j < len(lp.loss_weights) else 0.0


@dataclass
class Param:
    """One learnable param as the solver sees it: the storage and its settings."""

    info: ParamInfo
    blob: Blob
    offset: int          # into the arenas (of the net that owns the storage)

    @property
    def key(self) -> str:
        return self.info.key

    @property
    def lr_mult(self) -> float:
        return self.info.lr_mult

    @property
    def decay_mult(self) -> float:
        return self.info.decay_mult


class Net:
    def __init__(self, plan: Plan, dtype=np.float32, seed: int = 0, share_from: "Net | None" = None,
                 device: "str | D.Device | None" = None, precision: str = "float32"):
        if device is None:
            device = share_from.device if share_from is not None else D.current()
        self.device = D.resolve(device)
        self._half = np.dtype(np.float16) if half_storage(precision, self.device, dtype) else None
        with D.use(self.device):
            self._build(plan, dtype, seed, share_from)
            self._set_precision(precision)

    def _build(self, plan: Plan, dtype, seed: int, share_from: "Net | None") -> None:
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.phase = plan.phase
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.blobs: dict[str, Blob] = {}
        self.params: dict[str, Blob] = {}       # every "layer/param" key, sharers included
        self.learnable: list[Param] = []        # params whose storage this net owns, in order
        self._alloc_params(share_from)
        self._steps: list[tuple[LayerPlan, list[Blob], list[Blob]]] = []
        self._alloc_blobs()
        for lp, bottoms, tops in self._steps:
            lp.layer.rng = self.rng
            lp.layer.params = {p.name: self.params[p.key] for p in lp.params}
            # what backward will be asked for, so that setup can prepare (and measure) just that
            lp.layer.need_backward = lp.need_backward
            lp.layer.propagate_down = list(lp.bottom_need_backward)
            lp.layer.setup(bottoms, tops)
        self.fused: list[tuple[str, str]] = []    # (layer, next layer) pairs that share work
        if os.environ.get("NETSPEC_FUSE", "1") != "0":
            for (lp, b, t), (nxt, nb, nt) in zip(self._steps, self._steps[1:]):
                if (t and nb and nxt.inplace and nxt.inplace[0] and nb[0] is t[0]
                        and not any(lp.loss_weights) and lp.layer.fuse_next(nxt.layer, b, t, nb, nt)):
                    self.fused.append((lp.name, nxt.name))
        # layers with little work run their kernels on one thread: a parallel region there
        # costs more than it saves, and waits for the second core whenever the machine's
        # scheduler gives it to another process (PyTorch likewise runs ops of fewer than
        # 32,768 elements serially)
        self._serial = [lp.type not in _SPLITS_ITSELF and not self.device.is_cuda
                        and max([b.count for b in bottoms + tops] or [0]) < PARALLEL_GRAIN
                        for lp, bottoms, tops in self._steps]
        if self.device.is_cuda:   # GPU kernels: the CPU thread count is not theirs to change
            self._threads = (lambda: 1, lambda n: None)
        else:
            from netspec.kernels.jit import get_num_threads, set_num_threads

            self._threads = (get_num_threads, set_num_threads)

    # ---- allocation --------------------------------------------------------------------
    def _alloc_params(self, share_from: "Net | None") -> None:
        own: list[ParamInfo] = []
        for p in self.plan.params:
            if share_from is not None and p.key in share_from.params and p.owner is None:
                other = share_from.params[p.key]
                if other.data.shape != tuple(p.shape):
                    from netspec.errors import GraphError

                    raise GraphError(f"param {p.key} has shape {list(p.shape)} here but "
                                     f"{list(other.data.shape)} in the net it shares weights with")
                self.params[p.key] = other
            elif p.owner is None:
                own.append(p)
        total = sum(p.size for p in own)
        host = np.zeros(total, dtype=self.dtype)    # filled here, then copied to the device once
        offset = 0
        for p in own:
            fill(host[offset:offset + p.size].reshape(p.shape), p.filler, self.rng)
            offset += p.size
        dev = self.device
        self.param_data = dev.asarray(host) if dev.is_cuda else host
        self.param_grad = dev.zeros(total, self.dtype)
        offset = 0
        for p in own:
            n = p.size
            blob = Blob(p.key, self.param_data[offset:offset + n].reshape(p.shape),
                        self.param_grad[offset:offset + n].reshape(p.shape))
            self.params[p.key] = blob
            self.learnable.append(Param(p, blob, offset))
            offset += n
        for p in self.plan.params:
            if p.owner is not None:
                self.params[p.key] = self.params[p.owner]

    def _alloc_blobs(self) -> None:
        for lp in self.plan.layers:
            bottoms = [self.blobs[b] for b in lp.bottoms]
            tops: list[Blob] = []
            for j, (t, shape) in enumerate(zip(lp.tops, lp.top_shapes)):
                if lp.inplace[j]:
                    blob = bottoms[j]
                elif lp.layer.view and j == 0:
                    src = bottoms[0]
                    blob = Blob(t, src.data.reshape(shape), src.grad.reshape(shape))
                elif lp.type == "Split":
                    src = bottoms[0]
                    blob = Blob(t, src.data, self.device.zeros(shape, src.grad.dtype))
                else:
                    blob = Blob.zeros(t, shape, self._half if self._stores_half(lp, j) else self.dtype)
                self.blobs[t] = blob
                tops.append(blob)
            self._steps.append((lp, bottoms, tops))

    def _stores_half(self, lp: LayerPlan, j: int) -> bool:
        """Whether top ``j`` of ``lp`` is a half-width buffer (data and gradient): the tops that
        the rounding of ``_set_precision`` would round, that is every top of a differentiable
        layer that has bottoms, but for a data layer's and a loss top."""
        return self._half is not None and holds_half(lp.layer, bool(lp.bottoms), _loss_weight(lp, j))

    def _set_precision(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
        if precision != "float32" and self.dtype != np.float32:
            raise ValueError(f"precision {precision} rounds float32 activations; this net is {self.dtype}")
        self.precision = precision
        self.loss_scale = 1.0
        self._round = None
        self._round_fwd: list[list] = [[] for _ in self._steps]   # per step: bits of tops to round
        self._round_bwd: list[list] = [[] for _ in self._steps]   # per step: bits of bottom grads
        if PRECISIONS[precision] is None:
            return
        self._round = getattr(D.kernels("precision"), PRECISIONS[precision])

        def bits(a):
            return a.reshape(-1).view(np.uint32)

        def wide(a):            # float32 memory (half-width buffers need no rounding)
            return a.dtype == np.float32

        for k, (lp, bottoms, tops) in enumerate(self._steps):
            layer = lp.layer
            if not bottoms or layer.is_data or lp.type == "Split" or (layer.view and len(tops) == 1):
                continue     # sources (data, labels), and tops that are their bottoms' memory
            seen: list = []
            for j, t in enumerate(tops):
                if (holds_half(layer, True, _loss_weight(lp, j)) and wide(t.data)
                        and not any(t.data is a for a in seen)):
                    seen.append(t.data)
                    self._round_fwd[k].append(bits(t.data))
            if lp.need_backward:
                seen = []
                for i, b in enumerate(bottoms):
                    if lp.bottom_need_backward[i] and wide(b.grad) and not any(b.grad is a for a in seen):
                        seen.append(b.grad)
                        self._round_bwd[k].append(bits(b.grad))

    def activation_bytes(self) -> tuple[int, int]:
        """(bytes of every blob's data and gradient, the part of it in half-width buffers)."""
        seen: set[int] = set()
        total = half = 0
        for blob in self.blobs.values():
            for a in (blob.data, blob.grad):
                base = D.address(a)
                if base in seen:
                    continue
                seen.add(base)
                total += a.nbytes
                if a.dtype == np.float16:
                    half += a.nbytes
        return total, half

    # ---- running -----------------------------------------------------------------------
    def forward(self) -> float:
        """Run every layer; the weighted sum of the loss tops."""
        if self.device.is_cuda:   # what layers allocate while they run goes to this net's GPU
            with D.use(self.device):
                return self._forward()
        return self._forward()

    def _forward(self) -> float:
        loss = 0.0
        get, put = self._threads
        threads = cur = get()
        rnd, rounding = self._round, self._round_fwd
        try:
            for k, ((lp, bottoms, tops), serial) in enumerate(zip(self._steps, self._serial)):
                want = 1 if serial else threads
                if want != cur:
                    put(want)
                    cur = want
                lp.layer.forward(bottoms, tops)
                for b in rounding[k]:
                    rnd(b)
                for j, w in enumerate(lp.loss_weights):
                    if w:
                        loss += w * float(tops[j].data.sum())   # (a GPU waits for its result here)
        finally:
            if cur != threads:
                put(threads)
        return loss

    def backward(self) -> None:
        """Gradients of the loss: bottoms overwritten, params accumulated into ``param_grad``."""
        if self.device.is_cuda:
            with D.use(self.device):
                return self._backward()
        return self._backward()

    def _backward(self) -> None:
        for lp, bottoms, tops in self._steps:
            for j, w in enumerate(lp.loss_weights):
                if w:
                    tops[j].grad[...] = w * self.loss_scale
        get, put = self._threads
        threads = cur = get()
        rnd, rounding, last = self._round, self._round_bwd, len(self._steps) - 1
        try:
            for k, ((lp, bottoms, tops), serial) in enumerate(zip(reversed(self._steps), reversed(self._serial))):
                if lp.need_backward:
                    want = 1 if serial else threads
                    if want != cur:
                        put(want)
                        cur = want
                    lp.layer.backward(tops, lp.bottom_need_backward, bottoms)
                    for b in rounding[last - k]:
                        rnd(b)
        finally:
            if cur != threads:
                put(threads)

    def forward_backward(self) -> float:
        loss = self.forward()
        self.backward()
        return loss

    def clear_param_grads(self) -> None:
        """Zero the gradients of the params this net owns (one operation on one buffer)."""
        self.param_grad[...] = 0

    # ---- access ------------------------------------------------------------------------
    @property
    def layers(self) -> list[LayerPlan]:
        return self.plan.layers

    @property
    def steps(self):
        return self._steps

    def outputs(self) -> dict[str, np.ndarray]:
        return {name: self.blobs[name].data for name in self.plan.outputs}

    def set_input(self, name: str, value) -> None:
        D.copy_in(self.blobs[name].data, value)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every param this net owns, by ``layer/param`` key (views, not copies: device arrays
        on a GPU; ``netspec.core.device.to_host`` copies one to the host)."""
        return {p.key: p.blob.data for p in self.learnable}

    @property
    def num_params(self) -> int:
        return int(self.param_data.size)
