"""Optimizer configs shared by the methods (nerfstudio-level: they build ``torch.optim`` objects for ns-train)."""

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig

__all__ = ["FusedAdamOptimizerConfig", "fused_by_default"]


def fused_by_default(params: Iterable) -> bool:
    """``fused: None`` (auto): fused when there are parameters and every one is on CUDA."""
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    return len(tensors) > 0 and all(p.is_cuda for p in tensors)


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam (same fields, same update rule) whose step runs as fused kernels when the parameters are on
    CUDA. bts-density's three Adam groups (32.7 M parameters) took 1.9-3.5 ms per step with torch's default
    (``foreach``) and 0.76-1.25 ms fused on an H200 (``benchmarks/speed_probe.py --parts optimizer``, issue 17).

    The setting survives a resume: ``load_state_dict`` would otherwise take the checkpoint's own (a checkpoint of
    plain Adam would turn fusing off, one of fused Adam would turn it on on the CPU), so it is put back after loading
    and Adam's step counters are moved where that setting wants them (on the parameter's device when fused). The
    class is nerfstudio's ``_target`` (``torch.optim.Adam``), called with ``fused``."""

    fused: Optional[bool] = None
    """``torch.optim.Adam(fused=...)``. None (auto): fused when every parameter is on CUDA, torch's default
    elsewhere (the CPU keeps its results bit for bit). True or False forces it."""

    def setup(self, params) -> torch.optim.Optimizer:
        params = list(params)
        fused = (fused_by_default(params) if self.fused is None else self.fused) or None
        optimizer = self._target(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused)

        def keep_setting(opt: torch.optim.Optimizer) -> None:
            for group in opt.param_groups:
                group["fused"] = fused
                for p in group["params"]:
                    state = opt.state.get(p, {})
                    if torch.is_tensor(state.get("step")):
                        device = p.device if fused else torch.device("cpu")
                        state["step"] = state["step"].to(device=device, dtype=torch.float32)

        optimizer.register_load_state_dict_post_hook(keep_setting)
        return optimizer
