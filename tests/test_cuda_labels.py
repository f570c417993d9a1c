"""Labels on CUDA: a bad label is the same located DataError as on the CPU, and a loss forward
reads back from the device only the label check's answer.

The check runs on the device (the first bad position, by an atomic minimum); the host sees one
int, and the label's value only when there is an error to report.  The loss is summed and
normalized on the device, VALID's count of non-ignored positions included.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec.core import device as D
from netspec.errors import DataError
from netspec.testing import LayerHarness

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module", autouse=True)
def _gpu():
    from netspec.errors import DeviceError

    try:
        D.resolve("cuda")
    except DeviceError as e:
        pytest.skip(f"no CUDA device (set NUMBA_ENABLE_CUDASIM=1 for the simulator): {e}")


def _scores_labels(rng, *inner):
    x = rng.normal(size=(4, 3) + inner)
    lab = rng.integers(0, 3, size=(4,) + inner).astype(np.float64)
    return x, lab


def _probs(rng):
    p = rng.uniform(0.1, 1.0, size=(8, 3))
    return p / p.sum(axis=1, keepdims=True)


# (layer, bottoms but the label, label shape); every layer has 3 classes
LAYERS = {
    "SoftmaxWithLoss": ({"type": "SoftmaxWithLoss"}, lambda rng: [rng.normal(size=(4, 3, 2))], (4, 2)),
    "SoftmaxWithLoss-ignore": ({"type": "SoftmaxWithLoss", "ignore_label": 7}, lambda rng: [rng.normal(size=(4, 3, 2))],
                               (4, 2)),
    "InfogainLoss": ({"type": "InfogainLoss"}, lambda rng: [rng.normal(size=(4, 3, 2))], (4, 2)),
    "HingeLoss": ({"type": "HingeLoss"}, lambda rng: [rng.normal(size=(8, 3))], (8,)),
    "MultinomialLogisticLoss": ({"type": "MultinomialLogisticLoss"}, lambda rng: [_probs(rng)], (8,)),
    "Accuracy": ({"type": "Accuracy", "ignore_label": 7}, lambda rng: [rng.normal(size=(4, 3, 2))], (4, 2)),
}


def _bottoms(name, label):
    fields, make, _ = LAYERS[name]
    rng = np.random.default_rng(0)
    bottoms = make(rng)
    if fields["type"] == "InfogainLoss":
        return [bottoms[0], label, rng.uniform(0.0, 2.0, size=(3, 3))]
    return [bottoms[0], label]


def _error(name, device, label):
    fields = LAYERS[name][0]
    h = LayerHarness(fields, _bottoms(name, label), device=device)
    with pytest.raises(DataError) as e:
        h.forward()
    return str(e.value)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("bad, where", [(3.0, 5), (-1.0, 1), (1.5, 6), (np.nan, 3)], ids=["3", "-1", "1.5", "nan"])
def test_a_bad_label_is_located_on_cuda_as_on_the_cpu(name, bad, where):
    shape = LAYERS[name][2]
    label = (np.arange(int(np.prod(shape))) % 3).astype(np.float64).reshape(shape)
    if LAYERS[name][0].get("ignore_label") is not None:
        label.flat[0] = 7.0                  # ignored: not a bad label
    label.flat[where] = bad
    label.flat[-1] = 4.0                     # a later bad label: the first one is reported
    cpu, gpu = _error(name, "cpu", label), _error(name, "cuda", label)
    assert gpu == cpu
    assert f"at position {where} of the batch" in gpu and f"label {bad:g} " in gpu


class _Reads:
    """Counts device-to-host copies (to_host) and host reads of simulated device arrays."""

    def __init__(self, monkeypatch):
        import netspec.layers.loss as loss_layers

        self.copies = 0
        self.reads = 0
        real = D.to_host

        def counted(a):
            if D.is_device_array(a):
                self.copies += 1
            return real(a)

        monkeypatch.setattr(D, "to_host", counted)
        monkeypatch.setattr(loss_layers, "to_host", counted)
        from netspec.kernels.cuda import simulated

        if simulated():   # a bare float(), int(), bool() or item() on a device value
            from netspec.kernels.cuda._sim import SimArray

            for attr in ("__float__", "__int__", "__bool__", "__index__", "item", "tolist"):
                monkeypatch.setattr(SimArray, attr, self._read(getattr(np.ndarray, attr)))

            # a whole-array sum stays a (0-d) device array, as CuPy's does, not a NumPy scalar
            def device_sum(arr, *args, **kwargs):
                return np.asarray(np.ndarray.sum(arr.view(np.ndarray), *args, **kwargs)).view(SimArray)

            monkeypatch.setattr(SimArray, "sum", device_sum)

    def _read(self, fn):
        def read(arr, *args):
            self.reads += 1
            return fn(arr, *args)

        return read


FORWARDS = {
    "VALID with ignore_label": {"type": "SoftmaxWithLoss", "ignore_label": 2},
    "FULL": {"type": "SoftmaxWithLoss", "ignore_label": 2, "normalization": "FULL"},
    "Infogain": {"type": "InfogainLoss", "ignore_label": 2},
    "Accuracy per class": {"type": "Accuracy", "ignore_label": 2, "top": ["acc", "per_class"]},
}


@pytest.mark.parametrize("name", FORWARDS)
def test_a_forward_reads_back_only_the_label_check(name, monkeypatch):
    fields = FORWARDS[name]
    rng = np.random.default_rng(1)
    x, lab = _scores_labels(rng, 3)
    lab[0, 0], lab[1, 2] = 2.0, 0.0
    bottoms = [x, lab] + ([rng.uniform(0.0, 2.0, size=(3, 3))] if fields["type"] == "InfogainLoss" else [])
    cpu = LayerHarness(fields, bottoms).forward()
    h = LayerHarness(fields, bottoms, device="cuda")
    reads = _Reads(monkeypatch)
    with D.use(h.device):
        h.layer.forward(h.bottom, h.top)
    assert (reads.copies, reads.reads) == (1, 0), name
    monkeypatch.undo()
    for a, b in zip(cpu, [D.to_host(t.data) for t in h.top]):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11)
