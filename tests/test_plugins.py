"""User layer plugins: a Python file named by ``plugins:`` registers types that then work like
built-in ones (schema checks, shapes, running, gradient checks), and every way a plugin can be
broken is a located error."""

from __future__ import annotations

import textwrap
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from netspec import api
from netspec.cli.main import cli
from netspec.errors import NetspecError, PluginError
from netspec.testing import check_gradients

PLUGIN = '''
import numpy as np
import netspec
from netspec.spec import types as T


@netspec.register("{name}")
class Gain(netspec.Layer):
    """y = gain * x + shift, learning a per-channel gain.

    Example::

        {{name: g, type: {name}, bottom: x, shift: 1.0}}
    """

    param_names = ("gain",)
    filler_fields = {{"gain": "gain_filler"}}
    schema = {{"properties": {{"shift": T.number(default=0.0), "gain_filler": T.filler()}}}}

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2:
            raise self.error("needs (N, C, ...) input", "bottom")
        return [bottom_shapes[0]]

    def param_shapes(self, bottom_shapes):
        return {{"gain": (bottom_shapes[0][1],)}}

    def fillers(self):
        return {{"gain": dict(self.p.get("gain_filler") or {{"type": "constant", "value": 1.0}})}}

    def _g(self, x):
        return self.params["gain"].data.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = x * self._g(x) + self.p["shift"]

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].grad
        axes = tuple(i for i in range(x.ndim) if i != 1)
        self.params["gain"].grad += (dy * x).sum(axis=axes)
        if propagate_down[0]:
            bottom[0].grad[...] = dy * self._g(x)
'''

NET = """
plugins: [{plugin}]
layers:
  - {{name: data, type: Input, top: [data, label], shape: [[2, 3, 4], [2]]}}
  - {{name: gain, type: {name}, bottom: data, shift: 0.5}}
  - {{name: ip, type: InnerProduct, num_output: 3, weight_filler: {{type: xavier}}}}
  - {{name: loss, type: SoftmaxWithLoss, bottom: [ip, label]}}
"""


@pytest.fixture
def plugin(tmp_path):
    name = "Gain" + uuid.uuid4().hex[:8]
    path = tmp_path / "my_layers.py"
    path.write_text(PLUGIN.format(name=name))
    net = tmp_path / "net.yaml"
    net.write_text(NET.format(plugin="my_layers.py", name=name))
    return name, net


def test_plugin_layer_checks_and_runs(plugin):
    name, net_path = plugin
    res = api.check(net_path)
    assert res.plans["TRAIN"].layer("gain").top_shapes == [(2, 3, 4)]
    n = api.build_net(api.load_net(net_path), "TRAIN", dtype=np.float64)
    n.set_input("data", np.ones((2, 3, 4)))
    n.set_input("label", [0, 2])
    n.forward()
    np.testing.assert_allclose(n.blobs["gain"].data, 1.5)
    n.backward()
    assert n.params["gain/gain"].grad.any()


def test_plugin_author_gets_the_gradient_checker(plugin):
    name, net_path = plugin
    api.load_net(net_path)  # loads the plugin
    x = np.random.default_rng(0).normal(size=(2, 3, 5))
    report = check_gradients({"type": name, "shift": 0.3}, [x])
    assert report["checked"] == 30 + 3


def test_plugin_fields_are_validated_with_suggestions(plugin, tmp_path):
    name, net_path = plugin
    text = net_path.read_text().replace("shift: 0.5", "shfit: 0.5")
    net_path.write_text(text)
    with pytest.raises(NetspecError) as e:
        api.check(net_path)
    msg = str(e.value)
    assert "net.yaml:5" in msg and "shfit" in msg and "did you mean 'shift'" in msg


def test_unknown_type_without_the_plugin(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("layers:\n  - {name: g, type: NoSuchPluginType, bottom: x}\n")
    with pytest.raises(NetspecError, match="unknown layer type 'NoSuchPluginType'"):
        api.check(path)


@pytest.mark.parametrize("body,fragment", [
    ("def broken(:\n    pass\n", "SyntaxError"),
    ("raise RuntimeError('boom')\n", "RuntimeError at my_layers.py:1: boom"),
    ("x = 1\n", "registers no layer type"),
])
def test_broken_plugins_give_located_errors(tmp_path, body, fragment):
    (tmp_path / "my_layers.py").write_text(body)
    net = tmp_path / "net.yaml"
    net.write_text("layers:\n  - {name: d, type: Input, top: d, shape: [1]}\nplugins:\n  - my_layers.py\n")
    with pytest.raises(PluginError) as e:
        api.check(net)
    msg = str(e.value)
    assert "net.yaml:4" in msg and fragment in msg


def test_missing_plugin_file_via_cli(tmp_path):
    net = tmp_path / "net.yaml"
    net.write_text("plugins: [nothere.py]\nlayers:\n  - {name: d, type: Input, top: d, shape: [1]}\n")
    res = CliRunner().invoke(cli, ["check", str(net)])
    assert res.exit_code == 1
    assert "net.yaml:1" in res.output and "nothere.py" in res.output and "does not exist" in res.output
    assert "Traceback" not in res.output


def test_plugin_docstring_example_validates(plugin):
    name, net_path = plugin
    api.load_net(net_path)
    from netspec.core.layer import registry
    from netspec.testing import validate_layer
    import yaml

    example = registry()[name].example()
    validate_layer(yaml.safe_load(textwrap.dedent(example)))
