"""Converted Caffe deploy nets compute what Caffe computes, checked against PyTorch set up with
Caffe's conventions (ceil-mode pooling, AVE dividing by the window clipped to the padded input)."""

from __future__ import annotations

import numpy as np
import pytest

from netspec import api
from netspec.caffe.convert_net import convert_net_file

torch = pytest.importorskip("torch")
F = torch.nn.functional


def run_both(caffe_examples, rel, torch_forward, seed=0):
    net = convert_net_file(caffe_examples / rel).net
    n = api.build_net(net, "TEST", dtype=np.float64)
    rng = np.random.default_rng(seed)
    w = {}
    for key, blob in n.params.items():
        blob.data[...] = rng.normal(0, 0.2, blob.data.shape)
        w[key] = torch.from_numpy(blob.data.copy())
    x = rng.normal(size=n.blobs["data"].data.shape)
    n.set_input("data", x)
    n.forward()
    with torch.no_grad():
        ref = torch_forward(torch.from_numpy(x), w).numpy()
    np.testing.assert_allclose(n.blobs["prob"].data, ref, rtol=1e-9, atol=1e-12)


def test_lenet_deploy(caffe_examples):
    def forward(x, w):
        x = F.conv2d(x, w["conv1/weight"], w["conv1/bias"])
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = F.conv2d(x, w["conv2/weight"], w["conv2/bias"])
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = F.relu(F.linear(x.flatten(1), w["ip1/weight"], w["ip1/bias"]))
        return F.softmax(F.linear(x, w["ip2/weight"], w["ip2/bias"]), dim=1)

    run_both(caffe_examples, "mnist/lenet.prototxt", forward)


def test_cifar10_quick_deploy(caffe_examples):
    def forward(x, w):
        x = F.conv2d(x, w["conv1/weight"], w["conv1/bias"], padding=2)
        x = F.relu(F.max_pool2d(x, 3, 2, ceil_mode=True))
        x = F.relu(F.conv2d(x, w["conv2/weight"], w["conv2/bias"], padding=2))
        x = F.avg_pool2d(x, 3, 2, ceil_mode=True)
        x = F.relu(F.conv2d(x, w["conv3/weight"], w["conv3/bias"], padding=2))
        x = F.avg_pool2d(x, 3, 2, ceil_mode=True)
        x = F.linear(x.flatten(1), w["ip1/weight"], w["ip1/bias"])
        return F.softmax(F.linear(x, w["ip2/weight"], w["ip2/bias"]), dim=1)

    run_both(caffe_examples, "cifar10/cifar10_quick.prototxt", forward)
