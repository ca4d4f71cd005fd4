"""``bts-studio bench``: speed of bts-density's training step and full-frame render (CUDA when available).

Random weights and random images at the real shapes (by default BTS's KITTI-360 setup: ResNet-50, 192x640,
16 frame groups x 4096 rays x 64 samples, 4 render frames). Data loading is not included; the datamanager's
uint8 cache serves a batch with one gather. Results belong in docs/benchmarks.md.
"""

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import tyro


@dataclass
class BenchConfig:
    """Time a bts-density training step and a full-frame render."""

    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:1, ..."""
    resnet_layers: int = 50
    """Encoder depth (BTS: 50)."""
    height: int = 192
    """Image height (BTS: 192)."""
    width: int = 640
    """Image width (BTS: 640)."""
    groups: int = 16
    """Frame groups per training step (BTS: 16)."""
    rays_per_group: int = 4096
    """Rays per group (BTS: 4096)."""
    num_samples: int = 64
    """Samples per ray (BTS: 64)."""
    render_views: int = 4
    """Render frames that colours are read from (BTS KITTI-360: 4)."""
    chunk: int = 32768
    """Rays per forward pass when rendering a full frame."""
    steps: int = 10
    """Timed training steps (after warmup)."""
    warmup: int = 3
    """Untimed steps first (cuDNN autotuning, allocator)."""
    renders: int = 5
    """Timed full-frame renders."""
    output_json: Optional[Path] = None
    """Also write the results here."""


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(config: BenchConfig, device: torch.device):
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.model import BTSModelConfig

    model_config = BTSModelConfig(
        resnet_layers=config.resnet_layers,  # type: ignore[arg-type]
        num_samples=config.num_samples,
        eval_num_rays_per_chunk=config.chunk,
        search_torch_hub_cache=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights on purpose
        model = model_config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
    return model.to(device)


def camera_rig(config: BenchConfig, device: torch.device):
    """KITTI-360-like intrinsics and 1 + V cameras along a straight road (OpenCV c2w), as nerfstudio Cameras."""
    from bts_studio.methods.common.cameras import opencv_to_cameras

    h, w = config.height, config.width
    K = torch.tensor([[0.785 * w / 2, 0, w / 2], [0, 2.94 * h / 2, 0.635 * h], [0, 0, 1.0]], device=device)
    c2w = torch.eye(4, device=device).repeat(1 + config.render_views, 1, 1)
    c2w[:, 2, 3] = torch.arange(1 + config.render_views, device=device) * 0.8  # driving forward
    c2w[1::2, 0, 3] = 0.6  # a stereo baseline for every other frame
    cameras = opencv_to_cameras(K.expand(len(c2w), 3, 3), c2w, width=w, height=h).to(device)
    return K, c2w, cameras


def training_batch(config: BenchConfig, K, c2w, cameras, device: torch.device):
    """A batch in BTSDataManager's layout: patches of the input camera, colours from the other cameras."""
    b, v, h, w, p = config.groups, config.render_views, config.height, config.width, 8
    patches = config.rays_per_group // (p * p)
    w2c = torch.linalg.inv(c2w)[:, :3]
    top = torch.randint(0, h - p, (b, patches, 1, 1), device=device)
    left = torch.randint(0, w - p, (b, patches, 1, 1), device=device)
    offsets = torch.arange(p, device=device)
    ys, xs = (top + offsets[:, None]).expand(-1, -1, p, p), (left + offsets[None, :]).expand(-1, -1, p, p)
    coords = torch.stack([ys, xs], -1).reshape(-1, 2).float() + 0.5
    rays = cameras.generate_rays(
        camera_indices=torch.zeros(len(coords), 1, dtype=torch.long, device=device), coords=coords
    )
    from bts_studio.methods.bts.batch import BTSBatch

    return BTSBatch(
        rays=rays.reshape((b, patches, p, p)),
        image=torch.rand(b, patches, p, p, 3, device=device),
        input_image=torch.rand(b, 3, h, w, device=device),
        input_K=K.expand(b, 3, 3),
        input_w2c=w2c[0].expand(b, 3, 4),
        render_images=torch.rand(b, v, 3, h, w, device=device),
        render_K=K.expand(b, v, 3, 3),
        render_w2c=w2c[1:].expand(b, v, 3, 4),
        render_missing=torch.zeros(b, v, dtype=torch.bool, device=device),
    )


def time_training(model, config: BenchConfig, device: torch.device) -> Dict[str, float]:
    K, c2w, cameras = camera_rig(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    times: List[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(config.warmup + config.steps):
        batch = training_batch(config, K, c2w, cameras, device)
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        outputs = model(batch)
        loss = sum(model.get_loss_dict(outputs, batch).values())
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= config.warmup:
            times.append(time.perf_counter() - start)
    result = {"train_step_ms": 1000 * sum(times) / len(times), "train_step_ms_min": 1000 * min(times)}
    result["train_rays_per_s"] = config.groups * config.rays_per_group / (result["train_step_ms"] / 1000)
    if device.type == "cuda":
        result["train_peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


@torch.no_grad()
def time_render(model, config: BenchConfig, device: torch.device) -> Dict[str, float]:
    K, c2w, cameras = camera_rig(config, device)
    model.eval()
    image = torch.rand(3, config.height, config.width, device=device)
    encode, render = [], []
    for repeat in range(config.renders + 1):
        _sync(device)
        start = time.perf_counter()
        source = model.encode_view(image, K, c2w[0])
        _sync(device)
        middle = time.perf_counter()
        outputs = model.render_camera(cameras[0:1], source)
        _sync(device)
        if repeat > 0:  # the first pass warms up
            encode.append(middle - start)
            render.append(time.perf_counter() - middle)
    assert math.isfinite(float(outputs["depth"].mean()))
    return {
        "encode_ms": 1000 * sum(encode) / len(encode),
        "render_full_frame_ms": 1000 * sum(render) / len(render),
        "render_rays_per_s": config.height * config.width / (sum(render) / len(render)),
    }


def run(config: BenchConfig) -> Dict[str, object]:
    device = _resolve(config.device)
    model = build_model(config, device)
    results: Dict[str, object] = {
        **asdict(config),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    results["output_json"] = str(config.output_json) if config.output_json else None
    results.update(time_training(model, config, device))
    results.update(time_render(model, config, device))
    return results


def main(argv: List[str], prog: str = "bts-studio bench") -> None:
    config = tyro.cli(BenchConfig, args=argv, prog=prog)
    results = run(config)
    width = max(len(key) for key in results)
    for key, value in results.items():
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown}")
    if config.output_json is not None:
        config.output_json.parent.mkdir(parents=True, exist_ok=True)
        config.output_json.write_text(json.dumps(results, indent=2))
