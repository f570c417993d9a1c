"""Learning-rate policies against hand-computed values (CAFFE-REFERENCE section 2.5)."""

from __future__ import annotations

import math

import pytest

from netspec.solvers.schedules import LearningRate


def rates(cfg: dict, iters) -> list[float]:
    lr = LearningRate(cfg)
    return [lr(it) for it in iters]


def test_fixed():
    assert rates({"lr_policy": "fixed", "base_lr": 0.1}, range(5)) == [0.1] * 5


def test_step_sets_current_step():
    lr = LearningRate({"lr_policy": "step", "base_lr": 1.0, "gamma": 0.5, "stepsize": 3})
    got = [lr(it) for it in range(8)]
    assert got == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert lr.current_step == 2


def test_exp():
    assert rates({"lr_policy": "exp", "base_lr": 2.0, "gamma": 0.9}, [0, 1, 2, 10]) == pytest.approx(
        [2.0, 1.8, 1.62, 2.0 * 0.9 ** 10])


def test_inv_matches_caffes_lenet_value():
    """examples/mnist/readme.md: at iteration 100 the LeNet solver's rate is 0.00992565."""
    lr = LearningRate({"lr_policy": "inv", "base_lr": 0.01, "gamma": 1e-4, "power": 0.75})
    assert lr(0) == 0.01
    assert round(lr(100), 8) == 0.00992565
    assert lr(5000) == pytest.approx(0.01 * 1.5 ** -0.75)


def test_multistep_advances_one_step_per_iteration():
    """Caffe moves current_step at most once per call: a run that starts past two boundaries
    (as after changing stepvalue) catches up one iteration at a time."""
    cfg = {"lr_policy": "multistep", "base_lr": 1.0, "gamma": 0.1, "stepvalue": [2, 4, 5]}
    got = rates(cfg, range(8))
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001, 0.001])
    lag = LearningRate(cfg)
    # the first call is at iteration 6, past all three boundaries: one step per call
    assert [lag(6), lag(7), lag(8), lag(9)] == pytest.approx([0.1, 0.01, 0.001, 0.001])
    assert lag.current_step == 3


def test_multistep_continues_from_a_restored_step():
    lr = LearningRate({"lr_policy": "multistep", "base_lr": 1.0, "gamma": 0.5, "stepvalue": [10, 20]})
    lr.current_step = 1            # as restored from a snapshot taken at iteration 15
    assert lr(15) == 0.5
    assert lr(20) == 0.25


def test_poly():
    cfg = {"lr_policy": "poly", "base_lr": 0.1, "power": 2.0, "max_iter": 100}
    assert rates(cfg, [0, 50, 100, 150]) == pytest.approx([0.1, 0.025, 0.0, 0.0])


def test_sigmoid():
    cfg = {"lr_policy": "sigmoid", "base_lr": 1.0, "gamma": -0.1, "stepsize": 10}
    got = rates(cfg, [0, 10, 20])
    assert got == pytest.approx([1 / (1 + math.exp(-1)), 0.5, 1 / (1 + math.exp(1))])
    # far from the centre the value saturates instead of overflowing
    assert rates({"lr_policy": "sigmoid", "base_lr": 1.0, "gamma": 10.0, "stepsize": 0}, [-1000, 1000]) == \
        pytest.approx([0.0, 1.0])


def test_cosine_reaches_min_lr_at_max_iter():
    cfg = {"lr_policy": "cosine", "base_lr": 1.0, "min_lr": 0.1, "max_iter": 100}
    got = rates(cfg, [0, 50, 100, 200])
    assert got == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert rates({"lr_policy": "cosine", "base_lr": 2.0, "max_iter": 4}, [1]) == \
        pytest.approx([2.0 * 0.5 * (1 + math.cos(math.pi / 4))])


def test_warmup_composes_with_any_policy():
    base = {"lr_policy": "step", "base_lr": 1.0, "gamma": 0.1, "stepsize": 3}
    warm = dict(base, warmup_iter=4, warmup_start_factor=0.2)
    plain, warmed = rates(base, range(7)), rates(warm, range(7))
    factors = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0]
    assert warmed == pytest.approx([p * f for p, f in zip(plain, factors)])


def test_warmup_defaults_to_start_at_zero():
    got = rates({"lr_policy": "fixed", "base_lr": 0.4, "warmup_iter": 4}, range(6))
    assert got == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
