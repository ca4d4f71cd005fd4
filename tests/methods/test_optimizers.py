"""Tier 1: the fused Adam config that bts-density's optimizer groups use (``utils/optimizers.py``)."""

from types import SimpleNamespace

import torch

from bts_studio.method_configs import bts_density
from bts_studio.utils.optimizers import FusedAdamOptimizerConfig, fused_by_default


def _params(seed: int = 0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def test_auto_fuses_exactly_when_every_parameter_is_on_cuda():
    cuda, cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    assert fused_by_default([cuda, cuda]) and fused_by_default([{"params": [cuda]}])
    assert not fused_by_default([cuda, cpu]) and not fused_by_default([])
    assert not FusedAdamOptimizerConfig(lr=1e-2).setup(_params()).defaults["fused"]  # CPU: torch's default step


def test_forced_fused_takes_the_same_step_as_the_plain_one():
    plain = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-8).setup(_params())
    forced = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-8, fused=True).setup(_params())
    assert forced.defaults["fused"] is True
    for _ in range(3):
        plain.step()
        forced.step()
    for a, b in zip(plain.param_groups[0]["params"], forced.param_groups[0]["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_resume_keeps_the_configured_setting_whichever_adam_saved_the_checkpoint():
    saved = torch.optim.Adam(_params(), lr=1e-2)
    saved.step()
    plain_state = saved.state_dict()  # plain Adam with a step taken, as an older checkpoint
    fused = FusedAdamOptimizerConfig(lr=1e-2, fused=True).setup(_params(1))
    fused.load_state_dict(plain_state)
    assert all(group["fused"] is True for group in fused.param_groups)  # torch alone would leave it None
    fused.step()
    fused_state = fused.state_dict()
    auto = FusedAdamOptimizerConfig(lr=1e-2).setup(_params(2))  # CPU parameters: not fused
    auto.load_state_dict(fused_state)
    assert all(not group["fused"] for group in auto.param_groups)  # torch alone would turn it on
    auto.step()
    assert all(s["step"].device.type == "cpu" and float(s["step"]) == 3 for s in auto.state.values())


def test_bts_density_uses_it_for_every_group():
    optimizers = bts_density.config.optimizers
    assert set(optimizers) == {"encoder", "density_mlp", "decoder"}
    assert all(isinstance(group["optimizer"], FusedAdamOptimizerConfig) for group in optimizers.values())
