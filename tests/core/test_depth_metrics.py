"""Tier 1: KITTI depth metrics."""

import json
import math

import torch

from bts_studio.core.depth_metrics import DEPTH_METRIC_NAMES, average_metrics, crop_mask, depth_metrics


def test_perfect_prediction_and_known_values():
    gt = torch.zeros(4, 5)
    gt[1:3, 1:4] = torch.tensor([[10.0, 20.0, 40.0], [5.0, 79.0, 85.0]])  # 85 m is beyond the cap: ignored
    perfect = depth_metrics(gt.clone(), gt)
    assert perfect is not None and set(perfect) == set(DEPTH_METRIC_NAMES)
    assert perfect["abs_rel"] == 0.0 and perfect["a1"] == 1.0
    doubled = depth_metrics(gt * 2, gt)
    # p = 2g (clamped to 80 for the 79 m pixel): abs_rel = mean(|g - p| / g) over the 5 valid pixels.
    expected = (1 + 1 + 1 + 1 + 1 / 79) / 5
    assert math.isclose(doubled["abs_rel"], expected, rel_tol=1e-9)
    assert math.isclose(doubled["a3"], 1 / 5, rel_tol=1e-9)  # only the clamped 79 -> 80 pixel stays within 1.25^3
    assert math.isclose(depth_metrics(gt * 2, gt, median_scaling=True)["abs_rel"], 0.0, abs_tol=0.01)


def test_no_valid_pixels_and_crops():
    assert depth_metrics(torch.ones(3, 3), torch.zeros(3, 3)) is None
    mask = crop_mask(100, 200, "garg")
    assert mask.sum() > 0 and not mask[0].any() and mask[60, 100]
    assert crop_mask(4, 4, "none").all()


def test_average_skips_missing_and_never_writes_nan():
    averaged = average_metrics([{"abs_rel": 0.1, "psnr": float("nan")}, None, {"abs_rel": 0.3}], with_std=True)
    assert math.isclose(averaged["abs_rel"], 0.2) and math.isclose(averaged["abs_rel_std"], 0.1)
    assert "psnr" not in averaged
    single = average_metrics([{"abs_rel": 0.5}], with_std=True)
    assert single["abs_rel_std"] == 0.0
    json.dumps(averaged, allow_nan=False)
