"""Constant-depth baseline for bts-density's depth metrics, on exactly the test images and ground truth ns-eval uses.

The constant is the single depth that minimises abs_rel over all valid test lidar pixels (a weighted median with
weights 1/gt): the strongest constant predictor, chosen with the test ground truth itself. Metrics follow the same
protocol as ns-eval (bts_studio.core.depth_metrics: per image, 80 m cap, no median scaling, then the mean).

    python benchmarks/bts_constant_baseline.py --load-config RUN/config.yml --output baseline.json
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from bts_studio.core.depth_metrics import DEFAULT_MAX_DEPTH, DEFAULT_MIN_DEPTH, average_metrics, depth_metrics


def test_depth_maps(load_config: Path):
    """Lidar z-depth maps of the test split's input frames, read through the run's own dataparser."""
    import bts_studio  # noqa: F401  (checkpoint globals, registry)

    config = yaml.load(load_config.read_text(), Loader=yaml.Loader)
    dataparser_config = config.pipeline.datamanager.dataparser
    if getattr(config.pipeline.datamanager, "data", None) is not None:
        dataparser_config.data = Path(config.pipeline.datamanager.data)
    outputs = dataparser_config.setup().get_dataparser_outputs(split="test")
    groups = outputs.metadata["frame_groups"]
    filenames = outputs.metadata["lidar_depth_filenames"]
    inputs = sorted({int(i) for i in groups[:, 0].tolist() if i >= 0})
    maps = [torch.from_numpy(np.load(filenames[i]).astype(np.float32)) for i in inputs if filenames[i] is not None]
    if not maps:
        raise SystemExit("no lidar depth for the test inputs; the dataparser's lidar_depth_splits must include test")
    return maps


def best_constant(maps, max_depth: float = DEFAULT_MAX_DEPTH) -> float:
    """argmin_c sum |g - c| / g over valid pixels: the weighted median of g with weights 1/g."""
    g = torch.cat([m[(m > DEFAULT_MIN_DEPTH) & (m < max_depth)] for m in maps]).double().sort().values
    weights = 1.0 / g
    cumulative = torch.cumsum(weights, 0)
    return float(g[int(torch.searchsorted(cumulative, cumulative[-1] / 2))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-config", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    maps = test_depth_maps(args.load_config)
    constant = best_constant(maps)
    per_image = [depth_metrics(torch.full_like(m, constant), m) for m in maps]
    results = {"constant_m": constant, "num_images": len(maps), **average_metrics(per_image, with_std=True)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, allow_nan=False))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
