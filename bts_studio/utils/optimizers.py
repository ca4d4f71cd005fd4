"""Optimizer configs shared by the methods (nerfstudio-level: they build ``torch.optim`` objects for ns-train)."""

from dataclasses import dataclass
from typing import Optional

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig

__all__ = ["FusedAdamOptimizerConfig"]


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam (same fields, same update rule) whose step runs as fused kernels when the parameters are on
    CUDA. bts-density's three Adam groups (32.7 M parameters) took 3.5 ms per step with torch's default
    (``foreach``) and 1.25 ms fused on an H200 (``benchmarks/speed_probe.py --parts optimizer``, issue 17)."""

    fused: Optional[bool] = None
    """``torch.optim.Adam(fused=...)``. None (auto): fused when every parameter is on CUDA, torch's default
    elsewhere (the CPU keeps its results bit for bit). True or False forces it."""

    def setup(self, params) -> torch.optim.Optimizer:
        params = list(params)
        fused = self.fused
        if fused is None:
            fused = all(p.is_cuda for p in params) and len(params) > 0
        return torch.optim.Adam(
            params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused if fused else None
        )
