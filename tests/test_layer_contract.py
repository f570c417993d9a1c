"""The layer contract, checked for every registered type (Keras-style: one test for all layers).

For each case in ``tests/cases``: the schema accepts it, forward gives the shapes ``reshape``
promised, float64 gradients match central differences, param gradients accumulate over two
backward passes, ``propagate_down: false`` leaves a bottom's gradient alone, in-place runs
give the same numbers, and float32 agrees with float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from netspec.core.layer import registry
from netspec.testing import LayerHarness, check_gradients, validate_layer
from tests.cases import Case, all_cases

CASES = all_cases()


def _bottoms(case: Case, seed: int = 0):
    return [np.asarray(b, dtype=np.float64) for b in case.bottoms(np.random.default_rng(seed))]


def _harness(case: Case, **kw) -> LayerHarness:
    kw.setdefault("phase", case.phase)
    kw.setdefault("params", case.params)
    kw.setdefault("random_params", case.random_params)
    return LayerHarness(case.fields, _bottoms(case), **kw)


def test_every_registered_type_has_a_case():
    covered = {c.type for c in CASES}
    missing = sorted(set(registry()) - covered)
    assert not missing, f"layer types without a contract case in tests/cases: {missing}"


@pytest.mark.parametrize("ltype", sorted(registry()))
def test_docstring_example_is_valid(ltype):
    cls = registry()[ltype]
    example = cls.example()
    assert example, f"{ltype} has no 'Example::' block in its docstring"
    fields = yaml.safe_load(example)
    assert fields["type"] == ltype
    validate_layer(fields)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_schema_accepts_case(case):
    validate_layer({"name": "layer", **case.fields})


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_forward_shapes_match_reshape(case):
    h = _harness(case)
    tops = h.forward()
    assert [t.shape for t in tops] == [tuple(s) for s in h.top_shapes]
    for t in tops:
        assert np.all(np.isfinite(t)), "forward produced NaN or Inf"


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=lambda c: c.name)
def test_gradient(case):
    check_gradients(case.fields, _bottoms(case), phase=case.phase, params=case.params,
                    random_params=case.random_params, step=case.step, threshold=case.threshold,
                    kink=case.kink, kink_range=case.kink_range, check_bottoms=case.check_bottoms,
                    check_tops=case.check_tops)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=lambda c: c.name)
def test_param_grads_accumulate(case):
    h = _harness(case)
    if not h.params:
        pytest.skip("no params")
    tops = h.forward()
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=t.shape) for t in tops]
    _, once = h.backward(grads)
    h.forward()
    _, twice = h.backward(grads, clear_params=False)
    for name in once:
        np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("case", [c for c in CASES if c.grad], ids=lambda c: c.name)
def test_propagate_down_false_leaves_bottom_alone(case):
    h = _harness(case)
    tops = h.forward()
    sentinel = [np.full(b.grad.shape, 7.25) for b in h.bottom]
    for b, s in zip(h.bottom, sentinel):
        b.grad[...] = s
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=t.shape) for t in tops]
    if any(t is b or np.shares_memory(t.grad, b.grad) for t in h.top for b in h.bottom):
        pytest.skip("in place or a view (Flatten, Reshape): the top gradient is the bottom gradient")
    bgrads, _ = h.backward(grads, propagate_down=[False] * len(h.bottom))
    for g, s in zip(bgrads, sentinel):
        np.testing.assert_array_equal(g, s)


@pytest.mark.parametrize("case", [c for c in CASES if c.inplace], ids=lambda c: c.name)
def test_inplace_matches(case):
    ref = _harness(case)
    ip = _harness(case, inplace=True)
    top_ref, top_ip = ref.forward(), ip.forward()
    for a, b in zip(top_ref, top_ip):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    if case.grad:
        rng = np.random.default_rng(5)
        grads = [rng.normal(size=t.shape) for t in top_ref]
        g_ref, p_ref = ref.backward(grads)
        g_ip, p_ip = ip.backward(grads)
        np.testing.assert_allclose(g_ip[0], g_ref[0], rtol=1e-10, atol=1e-12)
        for k in p_ref:
            np.testing.assert_allclose(p_ip[k], p_ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float32_matches_float64(case):
    h64 = _harness(case, dtype=np.float64)
    params = {k: p.data for k, p in h64.params.items()}
    h32 = _harness(case, dtype=np.float32, params=params)
    for a, b in zip(h64.forward(), h32.forward()):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)
