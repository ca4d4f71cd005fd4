"""Tier 1: the fused Adam config that bts-density's optimizer groups use (``utils/optimizers.py``)."""

import torch

from bts_studio.method_configs import bts_density
from bts_studio.utils.optimizers import FusedAdamOptimizerConfig


def _params(seed: int = 0):
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def test_auto_fuses_only_cuda_parameters_and_forced_fused_takes_the_same_step():
    config = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-8)
    plain = config.setup(_params())
    assert not plain.defaults["fused"]  # CPU parameters: torch's default step, CPU results unchanged
    forced = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-8, fused=True).setup(_params())
    assert forced.defaults["fused"] is True
    for _ in range(3):
        plain.step()
        forced.step()
    for a, b in zip(plain.param_groups[0]["params"], forced.param_groups[0]["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    reloaded = config.setup(_params(1))  # a checkpoint's state loads across the setting
    reloaded.load_state_dict(forced.state_dict())
    reloaded.step()


def test_bts_density_uses_it_for_every_group():
    optimizers = bts_density.config.optimizers
    assert set(optimizers) == {"encoder", "density_mlp", "decoder"}
    assert all(isinstance(group["optimizer"], FusedAdamOptimizerConfig) for group in optimizers.values())
