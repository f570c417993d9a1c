"""The layer contract on CUDA: every case of ``tests/cases`` gives the CPU's numbers on the GPU.

Run under the simulator on any machine (``NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cuda``),
and on a real GPU as they are.  Each case runs forward and backward on both devices, in float64
(where the kernels do the same operations the CPU's do, the results agree to rounding) and in
float32; the kernel-twin test checks that every public CPU kernel has a CUDA launcher of the
same name and signature.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

from netspec.core.layer import registry
from netspec.testing import LayerHarness
from tests.cases import Case, all_cases

pytestmark = pytest.mark.cuda

CASES = all_cases()

#: float64 and float32 tolerances of CPU == CUDA (math functions and summation order may
#: differ in the last bits; everything else is the same operations)
TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.core.device import resolve
    from netspec.errors import DeviceError

    try:
        resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def _cpu_modules():
    import netspec.kernels.cpu as cpu

    return sorted(m.name for m in pkgutil.iter_modules(cpu.__path__))


def _public(mod):
    out = {}
    for name, obj in vars(mod).items():
        if name.startswith("_") or not callable(obj) or isinstance(obj, type):
            continue
        fn = getattr(obj, "py_func", obj)
        if getattr(fn, "__module__", None) == mod.__name__:
            out[name] = fn
    return out


@pytest.mark.parametrize("family", _cpu_modules())
def test_every_cpu_kernel_has_a_cuda_twin(family):
    cpu = importlib.import_module(f"netspec.kernels.cpu.{family}")
    exempt = set(getattr(cpu, "CPU_ONLY", ()))
    assert exempt <= set(_public(cpu)), f"CPU_ONLY names unknown kernels: {exempt - set(_public(cpu))}"
    want = {n: f for n, f in _public(cpu).items() if n not in exempt}
    if not want:
        return
    cuda = importlib.import_module(f"netspec.kernels.cuda.{family}")
    have = _public(cuda)
    missing = sorted(set(want) - set(have))
    assert not missing, f"kernels/cuda/{family}.py lacks {missing}"
    for name, fn in want.items():
        a = list(inspect.signature(fn).parameters)
        b = list(inspect.signature(have[name]).parameters)
        assert a == b, f"{family}.{name}: CPU takes {a}, CUDA takes {b}"


def _bottoms(case: Case):
    return [np.asarray(b, dtype=np.float64) for b in case.bottoms(np.random.default_rng(0))]


def _run(case: Case, device: str, dtype, params=None):
    h = LayerHarness(case.fields, _bottoms(case), phase=case.phase, dtype=dtype,
                     params=params if params is not None else case.params,
                     random_params=case.random_params, device=device)
    tops = h.forward()
    out = {"tops": tops, "params": {k: h.params[k] for k in h.params}}
    if case.grad and h.layer.differentiable:
        rng = np.random.default_rng(4)
        grads = [rng.normal(size=t.shape) for t in tops]
        if case.check_tops is not None:
            grads = [g if j in case.check_tops else np.zeros_like(g) for j, g in enumerate(grads)]
        out["bottom_grads"], out["param_grads"] = h.backward(grads)
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_layer_cpu_equals_cuda(case, dtype):
    from netspec.core.device import to_host

    cpu = _run(case, "cpu", dtype)
    params = {k: to_host(p.data) for k, p in cpu["params"].items()}
    gpu = _run(case, "cuda", dtype, params=params or None)
    tol = TOL[dtype]
    for j, (a, b) in enumerate(zip(cpu["tops"], gpu["tops"])):
        assert b.dtype == a.dtype
        np.testing.assert_allclose(b, a, **tol, err_msg=f"top {j}")
    if "bottom_grads" in cpu:
        for j, (a, b) in enumerate(zip(cpu["bottom_grads"], gpu["bottom_grads"])):
            np.testing.assert_allclose(b, a, **tol, err_msg=f"bottom {j} gradient")
        for k in cpu["param_grads"]:
            np.testing.assert_allclose(gpu["param_grads"][k], cpu["param_grads"][k], **tol,
                                       err_msg=f"param {k} gradient")


def test_every_registered_type_runs_on_cuda():
    covered = {c.type for c in CASES}
    assert set(registry()) <= covered
