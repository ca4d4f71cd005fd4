"""Monocular depth metrics in the KITTI protocol (Eigen et al.; as BTS's ``utils/metrics.py``/``evaluator.py``).

Per image: keep ground-truth pixels with ``min_depth < gt < max_depth`` (and inside the optional Garg or Eigen
crop), clamp the prediction to ``[min_depth, max_depth]`` (after optional median scaling), then

    abs_rel  = mean |g - p| / g            sq_rel = mean (g - p)^2 / g
    rmse     = sqrt(mean (g - p)^2)        rmse_log = sqrt(mean (log g - log p)^2)
    a1/a2/a3 = mean [max(g/p, p/g) < 1.25^k]  for k = 1, 2, 3

Averages over a data set are per-image means (:func:`average_metrics`). Depths are z-depths in metres
(docs/conventions.md, "Depth").
"""

import math
from typing import Dict, Iterable, List, Literal, Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MIN_DEPTH",
    "DEPTH_METRIC_NAMES",
    "average_metrics",
    "crop_mask",
    "depth_metrics",
]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
DEFAULT_MAX_DEPTH = 80.0
DEFAULT_MIN_DEPTH = 1e-3

Crop = Literal["none", "garg", "eigen"]

# Row and column fractions (top, bottom, left, right) of the two customary KITTI crops.
_CROPS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}


def crop_mask(height: int, width: int, crop: Crop, device: torch.device | str = "cpu") -> Bool[Tensor, "H W"]:
    """Pixels inside the Garg or Eigen crop (all pixels for ``"none"``)."""
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    if crop == "none":
        return mask.fill_(True)
    if crop not in _CROPS:
        raise ValueError(f"unknown crop {crop!r}; choose none, garg or eigen")
    top, bottom, left, right = _CROPS[crop]
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask


def depth_metrics(
    pred: Float[Tensor, "H W"],
    gt: Float[Tensor, "H W"],
    max_depth: float = DEFAULT_MAX_DEPTH,
    min_depth: float = DEFAULT_MIN_DEPTH,
    crop: Crop = "none",
    median_scaling: bool = False,
) -> Optional[Dict[str, float]]:
    """KITTI depth metrics of one image.

    Args:
        pred: predicted z-depth, same size as ``gt`` (upsample before calling; BTS uses nearest).
        gt: ground-truth z-depth, 0 (or anything outside ``(min_depth, max_depth)``) where unknown.
        max_depth: cap for both ground truth (mask) and prediction (clamp): 80 m in the KITTI protocol.
        min_depth: lower bound for both.
        crop: optional Garg/Eigen crop.
        median_scaling: scale the prediction by ``median(gt) / median(pred)`` first (off in BTS).

    Returns:
        The seven metrics, or None when the image has no valid ground-truth pixel.
    """
    assert pred.shape == gt.shape and pred.dim() == 2, f"pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}"
    if not torch.isfinite(pred).all():
        raise ValueError("predicted depth contains NaN or infinite values")
    valid = (gt > min_depth) & (gt < max_depth) & crop_mask(*gt.shape, crop, device=gt.device)
    if not bool(valid.any()):
        return None
    g = gt[valid].double()
    p = pred[valid].double()
    if median_scaling:
        p = p * (g.median() / p.median().clamp_min(min_depth))
    p = p.clamp(min_depth, max_depth)
    ratio = torch.maximum(g / p, p / g)
    diff = g - p
    return {
        "abs_rel": float((diff.abs() / g).mean()),
        "sq_rel": float((diff**2 / g).mean()),
        "rmse": float(torch.sqrt((diff**2).mean())),
        "rmse_log": float(torch.sqrt(((g.log() - p.log()) ** 2).mean())),
        "a1": float((ratio < 1.25).double().mean()),
        "a2": float((ratio < 1.25**2).double().mean()),
        "a3": float((ratio < 1.25**3).double().mean()),
    }


def average_metrics(per_image: Iterable[Optional[Dict[str, float]]], with_std: bool = False) -> Dict[str, float]:
    """Per-image mean of every metric; images without a value (None, NaN) are skipped, as BTS's ``MeanMetric``.

    With ``with_std`` adds ``<name>_std`` (population standard deviation, so a single image gives 0, never NaN).
    Metrics with no finite value at all are left out, so the result is always valid JSON.
    """
    collected: Dict[str, List[float]] = {}
    for metrics in per_image:
        if metrics is None:
            continue
        for name, value in metrics.items():
            if value is not None and math.isfinite(float(value)):
                collected.setdefault(name, []).append(float(value))
    averaged: Dict[str, float] = {}
    for name, values in collected.items():
        tensor = torch.tensor(values, dtype=torch.float64)
        averaged[name] = float(tensor.mean())
        if with_std:
            averaged[f"{name}_std"] = float(tensor.std(unbiased=False))
    return averaged
