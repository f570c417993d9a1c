"""Mixed precision: the rounding kernels against NumPy's float16 and PyTorch's bfloat16, the
net's rounding of activations and gradients (and of nothing else), the loss scale, and the
solver's skipped updates and exact resume."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from netspec.core.net import Net
from netspec.kernels.cpu.precision import round_bfloat16, round_float16
from netspec.solvers.precision import INIT_SCALE, LossScaler

sys.path.insert(0, str(Path(__file__).parent))
from test_train_loop import make  # noqa: E402


def _values() -> np.ndarray:
    """Every kind of float32: random bit patterns (NaNs, infinities, subnormals), values around
    float16's subnormal, normal and overflow ranges, and the exact ties and boundaries."""
    rng = np.random.default_rng(0)
    scales = (1e-9, 1e-7, 3e-6, 6e-5, 1e-3, 1.0, 300.0, 6e4, 7e4, 1e30)
    parts = [(rng.normal(size=20000) * s).astype(np.float32) for s in scales]
    parts.append(rng.integers(0, 2 ** 32, size=100000, dtype=np.uint64).astype(np.uint32).view(np.float32))
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.996, 65520, -65520, 65536, 2 ** -14,
             2 ** -24, 2 ** -25, 3 * 2 ** -25, 5 * 2 ** -25, 2 ** -26, -2 ** -25, 1 + 2 ** -11,
             1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-45, 3.4e38, -3.4e38]
    parts.append(np.array(edges, np.float32))
    return np.concatenate(parts)


def _same_bits(got: np.ndarray, want: np.ndarray) -> None:
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    bad = np.flatnonzero(got[~nan].view(np.uint32) != want[~nan].view(np.uint32))
    assert bad.size == 0, f"{bad.size} values differ, e.g. {want[~nan][bad[:4]]} -> {got[~nan][bad[:4]]}"


def test_float16_rounding_is_numpys():
    x = _values()
    got = x.copy()
    round_float16(got.view(np.uint32))
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    _same_bits(got, want)
    assert np.signbit(got[np.flatnonzero(x == 0)]).tolist() == np.signbit(x[x == 0]).tolist()


def test_bfloat16_rounding_is_torchs():
    torch = pytest.importorskip("torch")
    x = _values()
    got = x.copy()
    round_bfloat16(got.view(np.uint32))
    _same_bits(got, torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy())


NET = """\
layers:
  - {name: data, type: Input, top: [data, label], shape: [[4, 3, 6, 6], [4]]}
  - {name: conv, type: Convolution, bottom: data, num_output: 5, kernel_size: 3, weight_filler: {type: xavier}}
  - {name: bn, type: BatchNorm, bottom: conv, top: conv}
  - {name: relu, type: ReLU, bottom: conv, top: conv}
  - {name: flat, type: Flatten, bottom: conv}
  - {name: drop, type: Dropout, bottom: flat, top: flat}
  - {name: ip, type: InnerProduct, bottom: flat, num_output: 400, weight_filler: {type: xavier}}
  - {name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}
  - {name: acc, type: Accuracy, bottom: [ip, label]}
"""


def _net(precision: str, seed: int = 3) -> Net:
    from netspec.api import compile_net, load_net_text

    n = Net(compile_net(load_net_text(NET), "TRAIN"), seed=seed, precision=precision)
    rng = np.random.default_rng(1)
    n.set_input("data", rng.normal(size=(4, 3, 6, 6)).astype(np.float32) * 3)
    n.set_input("label", np.array([0, 7, 299, 333], np.float32))   # not bfloat16 values
    return n


def _rounded(a: np.ndarray, precision: str) -> np.ndarray:
    b = np.array(a, np.float32)
    (round_float16 if precision == "float16" else round_bfloat16)(b.reshape(-1).view(np.uint32))
    return b


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_the_net_rounds_activations_and_gradients_and_nothing_else(precision):
    ref = _net("float32")
    ref.forward_backward()
    n = _net(precision)
    data = n.blobs["data"].data.copy()
    n.forward_backward()
    for name in ("conv", "ip"):                                   # activations (and in-place tops)
        a = n.blobs[name].data
        np.testing.assert_array_equal(a, _rounded(a, precision))
        assert not np.array_equal(a, ref.blobs[name].data)
    for name in ("conv", "ip", "flat"):                           # the gradients backward propagated
        g = n.blobs[name].grad
        assert np.abs(g).max() > 0
        np.testing.assert_array_equal(g, _rounded(g, precision))
    np.testing.assert_array_equal(n.blobs["data"].data, data)    # the data, the labels (299 is no bfloat16)
    np.testing.assert_array_equal(n.blobs["label"].data, [0, 7, 299, 333])
    w = n.params["ip/weight"].grad                                # param gradients: float32 sums
    assert not np.array_equal(w, _rounded(w, precision))
    loss = float(n.blobs["loss"].data.sum())
    assert loss != float(_rounded(np.float32(loss), precision))


@pytest.mark.parametrize("precision,tol", [("float16", 2e-3), ("bfloat16", 2e-2)])
def test_half_gradients_follow_float32_ones(precision, tol):
    ref = _net("float32")
    ref.forward_backward()
    n = _net(precision)
    n.loss_scale = 1024.0                  # scaled by the loss scale, float32 values once unscaled
    n.forward_backward()
    got, want = n.param_grad / 1024.0, ref.param_grad
    assert np.linalg.norm(got - want) <= tol * np.linalg.norm(want)
    assert not np.array_equal(got, want)


def test_float16_without_a_scale_loses_small_gradients():
    # a loss whose gradients lie below float16's smallest subnormal (6e-8): they flush to zero
    # without a scale, and survive with one
    def grads(scale):
        n = _net("float16")
        n.params["ip/weight"].data[...] *= 1e-7
        n.loss_scale = scale
        n.forward_backward()
        return n.blobs["flat"].grad.copy() / scale

    tiny = grads(1.0)
    scaled = grads(65536.0)
    assert np.count_nonzero(tiny) < 0.02 * tiny.size and np.count_nonzero(scaled) > 0.5 * scaled.size


def test_dynamic_scale_skips_overflows_halves_and_grows():
    s = LossScaler({"precision": "float16", "loss_scale_window": 3})
    assert s.dynamic and s.scale == INIT_SCALE
    g = np.array([1.0, np.inf], np.float32)
    assert not s.unscale(g) and s.scale == INIT_SCALE / 2 and s.skipped == 1
    np.testing.assert_array_equal(g, [1.0, np.inf])             # left for no one: the update is skipped
    for k in range(3):
        g = np.full(4, 2 * s.scale, np.float32)
        assert s.unscale(g)
        np.testing.assert_array_equal(g, 2.0)                    # exact: the scale is a power of two
    assert s.scale == INIT_SCALE and s.clean == 0
    t = LossScaler({"precision": "float16", "loss_scale_window": 3})
    t.set_state(s.state())
    assert t.state() == s.state()
    assert not LossScaler({"precision": "bfloat16"}).active
    fixed = LossScaler({"precision": "bfloat16", "loss_scale": 8})
    g = np.array([8.0, np.inf], np.float32)
    assert fixed.active and fixed.unscale(g) and g[0] == 1.0 # a fixed scale never skips


def test_solver_skips_an_overflowing_update_and_logs_it(tmp_path):
    s, lines = make(tmp_path, max_iter=3, precision="float16", loss_scale="dynamic",
                    snapshot_after_train=False)
    s.scaler.scale = 2.0 ** 40             # backward overflows float16 at this scale
    before = s.net.param_data.copy()
    s.step(1)
    np.testing.assert_array_equal(s.net.param_data, before)
    assert s.scaler.skipped == 1 and s.scaler.scale == 2.0 ** 39
    assert any("a gradient overflowed at loss scale 1.09951e+12; update skipped, loss scale now "
               "5.49756e+11" in l for l in lines)
    while s.scaler.skipped == s.iter:      # halves until backward fits, then trains
        s.step(1)
    assert not np.array_equal(s.net.param_data, before) and np.isfinite(s.net.param_data).all()


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_training_resumes_exactly(tmp_path, precision):
    s, _ = make(tmp_path / "straight", max_iter=12, precision=precision, loss_scale_window=4,
                snapshot_after_train=False)
    s.solve()
    a, _ = make(tmp_path / "cut", max_iter=12, precision=precision, loss_scale_window=4, snapshot=6,
                snapshot_after_train=False)
    a.step(6)
    a.snapshot()
    state = a.scaler.state()
    b, _ = make(tmp_path / "cut", max_iter=12, precision=precision, loss_scale_window=4, snapshot=6,
                snapshot_after_train=False)
    b.restore(a.last_snapshot)
    assert b.scaler.state() == state and (precision != "float16" or state["scale"] > INIT_SCALE)
    b.solve()
    np.testing.assert_array_equal(b.net.param_data, s.net.param_data)


def test_precision_is_checked(tmp_path):
    from netspec.errors import SpecError

    with pytest.raises(SpecError, match="precision"):
        make(tmp_path / "a", precision="float8")
    with pytest.raises(SpecError, match="loss_scale"):
        make(tmp_path / "b", precision="float16", loss_scale=0)
    with pytest.raises(ValueError, match="float64"):
        from netspec.api import compile_net, load_net_text

        Net(compile_net(load_net_text(NET), "TRAIN"), np.float64, precision="float16")


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_netspec_test_evaluates_with_half_activations(precision):
    """`netspec test --precision`: the zoo's LeNet scores with half activations as with float32
    ones, to a few tenths of a percent, and the half run really rounds (its loss differs)."""
    import re

    from click.testing import CliRunner

    from netspec.cli.main import cli
    from netspec.data.catalog import builtin_files, parse_builtin
    from netspec.errors import DataError

    try:
        builtin_files(parse_builtin("fashion-mnist:test")[0], "test")
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    root = Path(__file__).resolve().parent.parent
    scores = {}
    for p in ("float32", precision):
        r = CliRunner().invoke(cli, ["test", str(root / "models/lenet/train_val.yaml"), "--weights",
                                     "zoo:lenet-fashion-mnist", "--iterations", "10", "--precision", p, "-q"])
        assert r.exit_code == 0, r.output
        scores[p] = (float(re.search(r"accuracy = ([\d.]+)", r.output).group(1)),
                     float(re.search(r"loss = ([\d.]+)", r.output).group(1)))
    (acc32, loss32), (acc16, loss16) = scores["float32"], scores[precision]
    assert acc32 > 0.85 and abs(acc16 - acc32) <= 0.01
    assert loss16 == pytest.approx(loss32, rel=2e-2) and loss16 != loss32
