"""netspec visualize / netspec adversarial on the zoo LeNet (Fashion-MNIST): the input gradient
against finite differences, activation maximization reaching its class, attacks fooling the
net, the pictures' sizes, and located errors for bad arguments."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from netspec.cli.main import cli
from netspec.data import catalog
from netspec.errors import GraphError, NetspecError, SpecError

ZOO = "zoo:lenet-fashion-mnist"


def _have_fashion_mnist() -> bool:
    try:
        catalog.builtin_files(catalog.BUILTINS["fashion-mnist"], "test")
        return True
    except NetspecError:
        return False


pytestmark = pytest.mark.skipif(not _have_fashion_mnist(), reason="fashion-mnist is not installed")


@pytest.fixture(scope="module")
def model():
    from netspec.probe.model import open_model

    m = open_model(ZOO)
    yield m
    m.close()


@pytest.fixture(scope="module")
def test200(model):
    from netspec.probe.inputs import load_set

    return load_set(model, "fashion-mnist:test:200", 200)


def _run(args):
    return CliRunner().invoke(cli, args)


# ---- the model and its gradients -----------------------------------------------------------------

def test_model_reads_the_manifest(model, test200):
    assert model.input == "data" and model.sample_shape == (1, 28, 28)
    assert model.scores == "ip2" and model.prob == "prob" and model.num_classes == 10
    assert model.lo == 0.0 and model.hi == pytest.approx(255 / 256)
    assert model.classes[9] == "Ankle boot"
    # the records go through the manifest's preprocessing (scale 1/256): the zoo's accuracy
    pred = model.forward(test200.x)["prob"].argmax(axis=1)
    assert (pred == test200.labels).mean() > 0.88


def _check_fd(f, x, g, n=0, count=4, h=1e-3):
    """Central differences of ``f`` (a number of the batch x) against the gradient g of sample n,
    on the pixels of largest |g| that are inside the object (not the flat black background, where
    max pooling ties make the function non-differentiable) and where the two one-sided
    differences agree (no ReLU or pooling switch within h)."""
    f0 = f(x)
    inside = np.where(x[n].ravel() > 0.05, np.abs(g.ravel()), 0)
    checked = 0
    for flat in np.argsort(inside)[::-1][:4 * count]:
        idx = (n,) + np.unravel_index(flat, g.shape)
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        right, left = (f(xp) - f0) / h, (f0 - f(xm)) / h
        if abs(right - left) > 0.05 * max(abs(right), abs(left)):
            continue
        assert g.ravel()[flat] == pytest.approx((right + left) / 2, rel=2e-2, abs=float(1e-3 * np.abs(g).max()))
        checked += 1
        if checked == count:
            break
    assert checked == count


def test_saliency_equals_finite_differences(model, test200):
    from netspec.probe.visualize import saliency_map

    x = test200.x[:1].copy()
    k = 3
    g, _ = saliency_map(model, x, k, "logit")
    assert g.shape == (1, 28, 28) and np.abs(g).max() > 0
    _check_fd(lambda z: float(model.forward(z)["scores"][0, k]), x, g)


def test_log_probability_gradient_equals_finite_differences(model, test200):
    from netspec.probe.visualize import class_seed

    x = test200.x[3:5].copy()
    # a class the net does not predict: its log-probability moves by more than float32 resolution
    ks = np.argsort(model.forward(x)["prob"], axis=1)[:, -2]
    g, _ = model.gradient(x, model.scores, class_seed(ks, "logprob"))
    for n in range(2):
        _check_fd(lambda z: float(np.log(model.forward(z)["prob"][n, ks[n]])), x, g[n], n, count=3)


def test_neuron_gradient_seeds_an_inner_blob(model, test200):
    """The gradient of one conv2 unit reaches only the input pixels in its receptive field."""
    seed = np.zeros((1, 50, 8, 8), np.float32)
    seed[0, 4, 0, 0] = 1.0
    g, _ = model.gradient(test200.x[:1], "conv2", seed)
    # conv2 (5x5) over pool1 (2x2) over conv1 (5x5): unit (0, 0) sees input rows/cols 0..15
    assert np.abs(g[0, 0, :16, :16]).max() > 0
    assert np.abs(g[0, 0, 16:, :]).max() == 0 and np.abs(g[0, 0, :, 16:]).max() == 0


# ---- activation maximization, attacks, fooling images -------------------------------------------

def test_class_visualization_reaches_every_class(model):
    from netspec.probe import visualize as V

    pic = V.class_images(model, list(range(10)), V.Ascent())
    p = np.array(pic.figures["probability"])
    assert p.shape == (10,) and (p >= 0.99).all(), p
    assert pic.figures["predicted"] == list(range(10))
    # clipped to the data range
    assert pic.arrays.min() >= model.lo and pic.arrays.max() <= model.hi


def test_neuron_ascent_raises_the_activation(model):
    from netspec.probe import visualize as V

    pic = V.neuron_images(model, "conv2", [0, 1, 2], V.Ascent(iterations=60))
    f = pic.figures
    assert all(a > a0 + 0.2 for a, a0 in zip(f["activation"], f["start_activation"])), f


def test_iterative_attack_fools_and_epsilon_zero_fools_none(model, test200):
    from netspec.probe import adversarial as A

    t = A.fooling_table(model, test200.x, test200.labels,
                        A.Attack(methods=("fgsm", "iterative"), epsilons=(0.0, 0.1)))
    assert t.fooling_rate["fgsm"][0] == 0.0 and t.fooling_rate["iterative"][0] == 0.0
    assert t.fooling_rate["iterative"][1] >= 0.9, t.fooling_rate
    assert t.fooling_rate["fgsm"][1] < t.fooling_rate["iterative"][1]
    # the perturbation stays inside the epsilon ball and the data range
    e, adv, _ = t.shown["iterative"]
    d = adv - test200.x[:len(adv)]
    assert e == 0.1 and np.abs(d).max() <= 0.1 + 1e-6
    assert adv.min() >= model.lo and adv.max() <= model.hi


def test_targeted_attack_reaches_the_target(model, test200):
    from netspec.probe import adversarial as A

    x, y = test200.x[:50], test200.labels[:50]
    t = A.fooling_table(model, x, y, A.Attack(methods=("iterative",), epsilons=(0.2,), target="next"))
    assert t.fooling_rate["iterative"][0] >= 0.9
    p = model.forward(t.shown["iterative"][1])["prob"].argmax(axis=1)
    assert (p == t.targets[:len(p)]).mean() >= 0.85


def test_fooling_images_are_confident_noise(model):
    from netspec.probe import adversarial as A

    f = A.fooling_images(model, per_class=1, confidence=0.99)
    assert list(f.classes) == list(range(10))
    assert (f.confidence >= 0.99).all() and (f.steps >= 0).all()
    # still noise: far from every class's mean image in the test set
    assert f.images.std() > 0.2


# ---- the commands and their pictures ----------------------------------------------------------------

def _json(r):
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_cli_class_picture_and_probability(tmp_path):
    from netspec.probe.pictures import grid_size

    out = tmp_path / "class.png"
    f = _json(_run(["visualize", ZOO, "--what", "class", "--class", "2,5", "--iterations", "120",
                    "-o", str(out), "--json"]))
    assert f["classes"] == [2, 5] and all(p >= 0.99 for p in f["probability"])
    assert f["grid"] == [1, 2]
    assert _png_size(out) == tuple(f["size"]) == grid_size(1, 2, 28, 28, 3, 2, 1)
    one = _json(_run(["visualize", ZOO, "--what", "class", "--class", "Trouser", "--iterations", "80",
                      "-o", str(out), "--json"]))
    assert one["classes"] == [1] and isinstance(one["probability"], float) and one["probability"] >= 0.99


def test_cli_filters_features_saliency_neuron(tmp_path):
    from netspec.probe.pictures import grid_size

    f = _json(_run(["visualize", ZOO, "--what", "filters", "-o", str(tmp_path / "f.png"), "--json"]))
    assert f["layer"] == "conv1" and f["shape"] == [20, 1, 5, 5] and f["grid"] == [4, 5]
    assert _png_size(tmp_path / "f.png") == grid_size(4, 5, 5, 5, 8, 1, 1)
    f = _json(_run(["visualize", ZOO, "--what", "filters", "--layer", "conv2", "-o", str(tmp_path / "f2.png"),
                    "--json"]))
    assert f["grid"] == [50, 20] and _png_size(tmp_path / "f2.png") == grid_size(50, 20, 5, 5, 8, 0, 2)
    f = _json(_run(["visualize", ZOO, "--what", "features", "--input", "fashion-mnist:test:0", "--blobs",
                    "conv1,pool2", "-o", str(tmp_path / "feat.png"), "--json"]))
    assert f["predicted"] == 9 and list(f["blobs"]) == ["conv1", "pool2"] and f["grid"] == [2, 16]
    assert f["blobs"]["conv1"]["shape"] == [20, 24, 24]
    assert (tmp_path / "feat.png").is_file()
    f = _json(_run(["visualize", ZOO, "--what", "saliency", "--input", "test:0", "-o", str(tmp_path / "s.png"),
                    "--json"]))
    assert f["class"] == f["predicted"] == 9 and f["probability"] > 0.9 and f["grid"] == [1, 3]
    assert _png_size(tmp_path / "s.png") == grid_size(1, 3, 28, 28, 6, 1, 2)
    f = _json(_run(["visualize", ZOO, "--what", "neuron", "--blob", "conv1", "--channel", "0,3",
                    "--position", "12,12", "--iterations", "20", "-o", str(tmp_path / "n.png"), "--json"]))
    assert f["channels"] == [0, 3] and f["position"] == [12, 12] and f["grid"] == [1, 2]


def test_cli_features_from_an_image_file(tmp_path, model, test200):
    """A PNG of a test record gives the prediction of the record itself."""
    from PIL import Image

    raw = np.clip(np.round(test200.x[7, 0] * 256), 0, 255).astype(np.uint8)
    Image.fromarray(raw, "L").save(tmp_path / "item.png")
    f = _json(_run(["visualize", ZOO, "--what", "features", "--input", str(tmp_path / "item.png"),
                    "-o", str(tmp_path / "feat.png"), "--json"]))
    assert f["predicted"] == int(model.forward(test200.x[7:8])["prob"].argmax())
    assert list(f["blobs"]) == ["conv1", "pool1", "conv2", "pool2"]


def test_cli_adversarial_table_and_grid(tmp_path):
    from netspec.probe.pictures import grid_size

    out = tmp_path / "adv.png"
    r = _run(["adversarial", ZOO, "--images", "fashion-mnist:test:40", "--epsilon", "0,0.1", "--show", "5",
              "-o", str(out), "--json"])
    f = _json(r)
    assert f["images"] == 40 and f["epsilon"] == [0.0, 0.1]
    assert f["fooling_rate"]["fgsm"][0] == 0.0 and f["fooling_rate"]["iterative"][1] >= 0.85
    assert f["grid"] == [3, 5] and _png_size(out) == grid_size(3, 5, 28, 28, 3, 2, 2)
    r = _run(["adversarial", ZOO, "--images", "test:20", "--epsilon", "0,0.05", "--method", "fgsm",
              "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "fooling rate" in r.output and "fgsm" in r.output and "wrote" in r.output


def test_cli_fool(tmp_path):
    from netspec.probe.pictures import grid_size

    out = tmp_path / "fool.png"
    f = _json(_run(["adversarial", ZOO, "--fool", "--per-class", "2", "-o", str(out), "--json"]))
    assert f["reached"] and len(f["probability"]) == 20 and min(f["probability"]) >= 0.99
    assert f["grid"] == [2, 10] and _png_size(out) == grid_size(2, 10, 28, 28, 3, 2, 1)


# ---- bad arguments ----------------------------------------------------------------------------------

def _fails(args, *needles):
    r = _run(args)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.output, r.output
    return r.output


def test_bad_arguments_are_located_errors():
    _fails(["visualize", ZOO, "--what", "neuron", "--blob", "conv3"], "no blob 'conv3'", "did you mean",
           "train_val.yaml")
    _fails(["visualize", ZOO, "--what", "class", "--class", "10"], "--class 10 is out of range", "0..9")
    _fails(["visualize", ZOO, "--what", "class", "--class", "Sandle"], "did you mean 'Sandal'")
    _fails(["visualize", ZOO, "--what", "neuron", "--blob", "conv1", "--channel", "20"], "--channel 20")
    _fails(["visualize", ZOO, "--what", "features"], "needs --input")
    _fails(["visualize", ZOO, "--what", "features", "--input", "test:10000"], "10000 records", "does not exist")
    _fails(["visualize", ZOO, "--what", "filters", "--layer", "conv9"], "no layer 'conv9'")
    _fails(["visualize", ZOO, "--what", "filters", "--layer", "ip2"], "ip2", "not images")
    _fails(["adversarial", ZOO, "--images", "test:5", "--target", "11"], "--target 11 is out of range")
    _fails(["adversarial", ZOO, "--images", "test:5", "--method", "pgd"], "--method pgd")
    _fails(["visualize", "zoo:no-such-model"], "no-such-model")


def test_net_without_differentiable_input(tmp_path):
    from netspec.io.weights import write_safetensors

    net = tmp_path / "thr.yaml"
    net.write_text(textwrap.dedent("""\
        name: thresholded
        layers:
          - {name: data, type: Input, top: data, shape: [1, 1, 4, 4]}
          - {name: thr, type: Threshold, bottom: data, top: bits, threshold: 0.5}
          - {name: ip, type: InnerProduct, bottom: bits, num_output: 3}
          - {name: prob, type: Softmax, bottom: ip}
        """))
    w = tmp_path / "thr.safetensors"
    write_safetensors(w, {"ip/weight": np.ones((3, 16), np.float32), "ip/bias": np.zeros(3, np.float32)})
    out = _fails(["visualize", str(net), "--weights", str(w), "--what", "class"], "thr.yaml:4",
                 "layer 'thr' (Threshold)", "no gradient")
    assert "\n" not in out.strip()
    from netspec.probe.model import open_model

    with pytest.raises(GraphError) as e:
        open_model(net, str(w))
    assert e.value.line == 4 and e.value.layer == "thr"
    # without weights: said so, with the net file named
    _fails(["visualize", str(net)], "--weights", "thr.yaml")
    # weights that lack a param of the net
    write_safetensors(w, {"ip/weight": np.ones((3, 16), np.float32)})
    net.write_text(net.read_text().replace("Threshold, bottom: data, top: bits, threshold: 0.5",
                                           "ReLU, bottom: data, top: bits"))
    _fails(["visualize", str(net), "--weights", str(w)], "ip/bias", "not in the weights")


def test_help_does_not_import_numba():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from netspec.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['visualize', '--help']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(cli, ['adversarial', '--help']); assert r.exit_code == 0; "
            "print('numba' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False"


def test_spec_errors_are_netspec_errors(model):
    from netspec.probe import visualize as V

    with pytest.raises(SpecError):
        V.Ascent(start="grey").check()
    with pytest.raises(SpecError):
        V.parse_classes(model, "-1")


# ---- other nets: no class scores, InnerProduct filters, a file's own Input; CUDA ---------------------

def test_net_without_class_scores_draws_but_does_not_classify(tmp_path):
    z = "zoo:autoencoder-fashion-mnist"
    f = _json(_run(["visualize", z, "--what", "filters", "-o", str(tmp_path / "f.png"), "--json"]))
    assert f["layer"] == "encode1" and f["shape"] == [1000, 784] and f["shown"] == 64   # rows drawn as 28x28
    f = _json(_run(["visualize", z, "--what", "features", "--input", "test:3", "--blobs", "encode1,encode3",
                    "-o", str(tmp_path / "ft.png"), "--json"]))
    assert f["predicted"] is None and f["blobs"]["encode3"]["shape"] == [250]
    for args in (["visualize", z, "--what", "class"], ["visualize", z, "--what", "saliency", "--input", "test:1"],
                 ["adversarial", z, "--images", "test:4"], ["adversarial", z, "--fool"]):
        _fails(args, "train_val.yaml", "no class scores")


def test_mlp_filters_are_input_shaped(tmp_path):
    from netspec.probe.pictures import grid_size

    f = _json(_run(["visualize", "zoo:mlp-fashion-mnist", "--what", "filters", "-o", str(tmp_path / "f.png"),
                    "--json"]))
    assert f["layer"] == "ip1" and f["shown"] == 64 and f["grid"] == [8, 8]
    assert _png_size(tmp_path / "f.png") == grid_size(8, 8, 28, 28, 8, 1, 1)


TINY = """\
name: tiny
layers:
  - {name: data, type: Input, top: data, shape: [1, 1, 6, 6]}
  - {name: conv1, type: Convolution, bottom: data, num_output: 2, kernel_size: 3, weight_filler: {type: xavier}}
  - {name: pool1, type: Pooling, pool: MAX, kernel_size: 2, stride: 2}
  - {name: relu1, type: ReLU, top: pool1}
  - {name: ip1, type: InnerProduct, num_output: 3, weight_filler: {type: xavier}}
  - {name: prob, type: Softmax, bottom: ip1}
"""


@pytest.fixture()
def tiny(tmp_path):
    from netspec import api
    from netspec.io.weights import save_weights

    net = tmp_path / "tiny.yaml"
    net.write_text(TINY)
    n = api.build_net(api.load_net(net), "TEST", seed=3)
    save_weights(tmp_path / "tiny.safetensors", n)
    return net, tmp_path / "tiny.safetensors"


def test_a_files_own_input_takes_any_batch(tiny):
    """A net file with its own Input (batch 1) is run at the batch asked for; without a data
    source there is no known range, so nothing is clipped."""
    from netspec.probe import adversarial as A
    from netspec.probe.model import open_model

    m = open_model(*map(str, tiny))
    assert not m.has_range and m.classes == [] and m.class_name(2) == "2"
    x = np.random.default_rng(0).random((5, 1, 6, 6)).astype(np.float32)
    p = m.forward(x)["prob"]
    assert p.shape == (5, 3) and np.allclose(p.sum(axis=1), 1)
    for i in range(5):   # each sample alone gives the same answer
        assert np.allclose(m.forward(x[i:i + 1])["prob"][0], p[i], atol=1e-6)
    adv = A.perturb(m, x, p.argmax(axis=1), 0.3, "fgsm")
    d = np.abs(adv - x)
    # every value moves by epsilon, except where the gradient is exactly 0 (ReLU off, pooling unpicked)
    assert ((np.abs(d - 0.3) < 1e-5) | (d < 1e-6)).all() and (d > 0.29).mean() > 0.3
    assert adv.min() < 0 or adv.max() > 1        # no data range: nothing clipped


@pytest.mark.cuda
def test_cuda_gradients_equal_cpu(tiny):
    """--device cuda: the input gradient and an attack on the GPU (or numba's simulator) are the CPU's."""
    from netspec.probe import adversarial as A
    from netspec.probe.model import open_model
    from netspec.probe.visualize import class_seed

    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    got = {}
    for dev in ("cpu", "cuda"):
        m = open_model(*map(str, tiny), device=dev)
        g, out = m.gradient(x, m.scores, class_seed(np.array([0, 2]), "logprob"))
        adv = A.perturb(m, x, np.array([1, 1]), 0.1, "iterative", steps=3)
        got[dev] = (g, out["prob"], adv)
        m.close()
    for a, b in zip(got["cpu"], got["cuda"]):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert np.abs(got["cpu"][0]).max() > 0


def test_inputs_from_a_file_relative_to_the_working_folder(tmp_path, monkeypatch, model, test200):
    """SOURCE:INDEX and SOURCE:N read any file a Data layer could, relative to where the command runs."""
    raw = np.clip(np.round(test200.x[:6] * 256), 0, 255).astype(np.uint8)
    np.savez(tmp_path / "rec.npz", data=raw, label=test200.labels[:6])
    monkeypatch.chdir(tmp_path)
    f = _json(_run(["visualize", ZOO, "--what", "saliency", "--input", "rec.npz:4", "-o", "s.png", "--json"]))
    assert f["predicted"] == int(model.forward(test200.x[4:5])["prob"].argmax())
    f = _json(_run(["adversarial", ZOO, "--images", "rec.npz:6", "--epsilon", "0", "--method", "fgsm",
                    "-o", "a.png", "--json"]))
    clean = (model.forward(test200.x[:6])["prob"].argmax(axis=1) == test200.labels[:6]).mean()
    assert f["images"] == 6 and f["clean_accuracy"] == pytest.approx(clean)
    assert (tmp_path / "s.png").is_file() and (tmp_path / "a.png").is_file()
