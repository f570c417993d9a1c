"""Every update rule against PyTorch's optimizer of the same name, at a fixed rate.

With a constant rate Caffe's conventions coincide with PyTorch's: SGD keeps ``alpha*v`` where
PyTorch keeps ``v``; Caffe's Nesterov form equals PyTorch's ``g + mu*v``; Adam's epsilon is
placed differently, so both run with a negligible epsilon.
"""

from __future__ import annotations

import numpy as np
import pytest

from netspec.solvers.rules import Updater

torch = pytest.importorskip("torch")

from tests.test_solver_rules import cfg, make_net  # noqa: E402

LR = 0.05

CASES = {
    "SGD": (cfg(type="SGD", momentum=0.9, weight_decay=0.01),
            lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, weight_decay=0.01)),
    "Nesterov": (cfg(type="Nesterov", momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, nesterov=True)),
    "AdaGrad": (cfg(type="AdaGrad", delta=1e-10),
                lambda p: torch.optim.Adagrad(p, lr=LR, eps=1e-10)),
    "RMSProp": (cfg(type="RMSProp", rms_decay=0.9, delta=1e-8),
                lambda p: torch.optim.RMSprop(p, lr=LR, alpha=0.9, eps=1e-8)),
    "AdaDelta": (cfg(type="AdaDelta", momentum=0.9, delta=1e-6),
                 lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6)),
    "Adam": (cfg(type="Adam", momentum=0.9, momentum2=0.99, delta=1e-30),
             lambda p: torch.optim.Adam(p, lr=LR, betas=(0.9, 0.99), eps=1e-30)),
    "AdamW": (cfg(type="AdamW", momentum=0.9, momentum2=0.99, delta=1e-30, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=LR, betas=(0.9, 0.99), eps=1e-30, weight_decay=0.1)),
}

ONE_LAYER = """
name: t
layers:
  - {name: data, type: Input, top: data, shape: [1, 4]}
  - {name: p, type: InnerProduct, num_output: 3}
"""


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_matches_torch(rule):
    c, make_opt = CASES[rule]
    rate = 1.0 if rule == "AdaDelta" else LR
    rng = np.random.default_rng(1)
    net = make_net(ONE_LAYER)
    net.param_data[...] = rng.normal(size=net.param_data.size)
    tw = torch.tensor(net.param_data.copy(), requires_grad=True)
    opt = make_opt([tw])
    upd = Updater(c, net)
    for it in range(5):
        g = rng.normal(size=net.param_data.size)
        net.param_grad[...] = g
        upd.apply(rate, it)
        tw.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(net.param_data, tw.detach().numpy(), rtol=1e-9, atol=1e-12)
