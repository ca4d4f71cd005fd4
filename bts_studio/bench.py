"""``bts-studio bench``: speed of bts-density's training step and full-frame render, fast paths beside the twin.

Random weights and random images at the real shapes (by default BTS's KITTI-360 setup: ResNet-50, 192x640,
16 frame groups x 4096 rays x 64 samples, 4 render frames). Data loading is not included; the datamanager's
uint8 cache serves a batch with one gather. Results belong in docs/benchmarks.md (with the floor analysis).

Every *variant* is one setting of the model's ``fast_path`` / ``encoder_precision`` and torch's TF32 flags, measured
on the same weights (restored before each) and the same inputs: training step (ms, peak GiB), single-image
encode + full-frame depth (ms), images/s at batch 1 and the best batch, inference peak GiB, and the depth's relative
difference to the fp32 twin (every TF32 flag off). A variant that fails (e.g. a kernel that does not compile) is
reported with its error and the run goes on. ``--density-agreement`` also compares each density path with the twin
on random inputs (values and gradients).
"""

import gc
import json
import math
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import tyro
from torch import Tensor

from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.utils.optimizers import FusedAdamOptimizerConfig


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
    """Rays per forward pass when rendering a full frame (the least on CUDA, see chunk_memory_fraction)."""
    chunk_memory_fraction: float = 0.0
    """The model's eval_chunk_memory_fraction: on CUDA a pass takes as many rays as fit in this share of the free
    memory (0.5: a 192x640 frame at 64 samples, ~11 GiB, in one pass on an H200); 0 (the model's default) keeps
    ``chunk``."""
    steps: int = 10
    """Timed training steps (after warmup)."""
    warmup: int = 3
    """Untimed steps first (cuDNN autotuning, allocator)."""
    renders: int = 5
    """Timed full-frame renders."""
    output_json: Optional[Path] = None
    """Also write the results here."""
    variants: Tuple[str, ...] = ("twin-fp32", "twin", "projected", "triton", "default")
    """Settings to measure (see VARIANTS in bts_studio/bench.py): twin-fp32 is the reference (fp32 everywhere),
    twin the unfused model under torch's defaults (bts-density before issue 17), projected / triton those density
    paths with the fp32 encoder, default bts-density's defaults (Triton density on CUDA, the encoder in bf16 for
    training with its forward and backward replayed as CUDA graphs, in fp32 replayed as a CUDA graph at
    inference); also default-eager (the bf16 training encoder run eagerly), default-fp32 (the fp32 encoder in
    training too), fast (the bf16 encoder at inference too, and trained eagerly), fast-tf32 and
    fast-cudnn-benchmark."""
    batch_sizes: Tuple[int, ...] = (1, 4, 8, 16)
    """Images per inference batch for the images/s column (the best one is reported)."""
    throughput_repeats: int = 3
    """Timed batched inferences per batch size."""
    skip_training: bool = False
    """Measure inference only."""
    density_agreement: bool = True
    """Compare each density path (projected, triton) with the twin on random inputs, values and gradients."""


def _resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Variant:
    """One measured setting."""

    fast_path: str
    encoder_precision: str
    matmul_tf32: bool = False
    cudnn_tf32: bool = True
    cudnn_benchmark: bool = False
    cuda_graphs: bool = False
    cuda_graphs_training: bool = False


VARIANTS: Dict[str, Variant] = {
    "twin-fp32": Variant("twin", "fp32", matmul_tf32=False, cudnn_tf32=False),
    "twin": Variant("twin", "fp32"),
    "projected": Variant("projected", "fp32"),
    "triton": Variant("triton", "fp32"),
    # bts-density's defaults (fast_path auto = triton on CUDA; encoder bf16 in training, its forward and backward
    # replayed as CUDA graphs; fp32 replayed as a CUDA graph at inference).
    "default": Variant("auto", "auto", cuda_graphs=True, cuda_graphs_training=True),
    # The defaults with the training encoder run eagerly (bts-density's default in the eleventh session).
    "default-eager": Variant("auto", "auto", cuda_graphs=True),
    # The defaults with the fp32 encoder in training too (bts-density's default before the eleventh session).
    "default-fp32": Variant("auto", "fp32", cuda_graphs=True),
    # Opt-in: the bf16 channels-last encoder at inference too (outside the depth-agreement bar).
    "fast": Variant("triton", "bf16"),
    "fast-tf32": Variant("triton", "bf16", matmul_tf32=True),
    "fast-cudnn-benchmark": Variant("triton", "bf16", cudnn_benchmark=True),
}
"""torch defaults: matmul TF32 off, cuDNN TF32 on, cudnn.benchmark off (bts-density's config default)."""

FLOOR = (
    "floor (docs/benchmarks.md): per image 7.9 M samples; MLP 105 GFLOP unfused / 41 GFLOP projected (~0.1 ms of "
    "bf16 tensor cores); the gather reads 4 x 64 channels per sample from the 31 MB map held in L2 (~8 GB of L2 "
    "traffic, ~1 ms fp32); ResNet-50 192x640 ~10 GFLOP (~1-2 ms bf16 channels-last at batch 1): ~2-3 ms per image."
)


FLOOR_IMAGE_MS = 2.5
"""The middle of the floor's ~2-3 ms per 192x640 image on an H200 (docs/benchmarks.md, "The floor")."""


def ratio_lines(rows: List[Dict[str, object]]) -> List[str]:
    """Each variant's training-step and image times as ratios to the ``twin`` of the same run, and its image time
    as a multiple of :data:`FLOOR_IMAGE_MS` (meaningful at BTS's shapes on a GPU)."""
    twin = next((row for row in rows if row.get("variant") == "twin"), None)
    lines = []
    for row in rows:
        parts = []
        for key, label in (("train_step_ms", "train"), ("image_ms", "image")):
            if twin is not None and row is not twin and row.get(key) and twin.get(key):
                parts.append(f"{label} {row[key] / twin[key]:.2f}x the twin's")  # type: ignore[operator]
        if row.get("image_ms"):
            parts.append(f"image {row['image_ms'] / FLOOR_IMAGE_MS:.1f}x the floor")  # type: ignore[operator]
        if parts:
            lines.append(f"{row['variant']}: " + ", ".join(parts))
    return lines


def drop_training_graphs(model) -> None:
    """Free the training step's CUDA graphs and their memory pool now (the graphed module refers to itself: its
    forward is a closure over it, so only a garbage collection releases it)."""
    model.net.graphed_training_encoder.clear()
    gc.collect()


def apply_variant(model, variant: Variant) -> None:
    """Set the model's paths and torch's global flags for ``variant``."""
    model.net.fast_path = variant.fast_path
    model.net.encoder_precision = variant.encoder_precision
    model.net.cuda_graphs = variant.cuda_graphs
    model.net.cuda_graphs_training = variant.cuda_graphs_training
    model.graphed_render_pass.clear()
    model.net.graphed_encoder.clear()
    drop_training_graphs(model)  # a previous variant's, also after that variant failed
    model.net.graphed_training_encoder.error = None
    model.net.triton_error = None
    torch.backends.cuda.matmul.allow_tf32 = variant.matmul_tf32
    torch.backends.cudnn.allow_tf32 = variant.cudnn_tf32
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark


def build_model(config: BenchConfig, device: torch.device):
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.model import BTSModelConfig

    model_config = BTSModelConfig(
        resnet_layers=config.resnet_layers,  # type: ignore[arg-type]
        num_samples=config.num_samples,
        eval_num_rays_per_chunk=config.chunk,
        eval_chunk_memory_fraction=config.chunk_memory_fraction,
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
    """Mean and minimum training-step time (forward, loss, backward, Adam) and peak memory."""
    K, c2w, cameras = camera_rig(config, device)
    optimizer = FusedAdamOptimizerConfig(lr=1e-4, eps=1e-8).setup(model.parameters())  # as ns-train's
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


def _sources(model, images: Tensor, K: Tensor, c2w: Tensor) -> BTSConditioning:
    """Encode ``images [B, 3, H, W]`` seen by one camera into a conditioning (colours from the images themselves)."""
    b = images.shape[0]
    w2c = torch.linalg.inv(c2w)[:3]
    model.net.eval()
    return BTSConditioning(
        features=model.net.encode(images),
        source_K=K.expand(b, 3, 3),
        source_w2c=w2c.expand(b, 3, 4),
        colour_images=images[:, None],
        colour_K=K.expand(b, 1, 3, 3),
        colour_w2c=w2c.expand(b, 1, 3, 4),
    )


@torch.no_grad()
def render_depth_batch(
    model, images: Tensor, K: Tensor, c2w: Tensor, camera, chunk: int, memory_fraction: float = 0.0
) -> Tensor:
    """z-depth ``[B, H, W]`` of ``images`` seen by ``camera`` (each conditions its own render), ``chunk`` rays per
    image per pass (more on CUDA with ``memory_fraction``, as ``render_camera``), through ``render_ray_tensors``."""
    from bts_studio.methods.common.cameras import camera_rays
    from bts_studio.methods.common.rendering import frame_chunk_size

    conditioning = _sources(model, images, K, c2w)
    b, (h, w) = images.shape[0], images.shape[-2:]
    rays = camera_rays(camera)
    num_rays = h * w
    origins = rays.origins.reshape(1, num_rays, 3).expand(b, -1, -1)
    directions = rays.directions.reshape(1, num_rays, 3).expand(b, -1, -1)
    norms = rays.directions_norm.reshape(1, num_rays, 1).expand(b, -1, -1)
    chunk = frame_chunk_size(chunk, num_rays, model.config.num_samples * b, images.device, memory_fraction)
    depths = []
    for start in range(0, num_rays, chunk):
        end = min(start + chunk, num_rays)
        outputs = model.render_ray_tensors(
            origins[:, start:end], directions[:, start:end], conditioning, norms[:, start:end]
        )
        depths.append(outputs["z_depth"][..., 0])
    return torch.cat(depths, dim=1).reshape(b, h, w)


def time_inference(model, config: BenchConfig, device: torch.device, image: Tensor) -> Dict[str, object]:
    """Batch-1 encode and render times through the user-facing API, then images/s per batch size."""
    K, c2w, cameras = camera_rig(config, device)
    model.eval()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    encode, render = [], []
    with torch.no_grad():
        for repeat in range(config.renders + 1):
            _sync(device)
            start = time.perf_counter()
            source = model.encode_view(image, K, c2w[0])
            _sync(device)
            middle = time.perf_counter()
            outputs = model.render_camera(cameras[0:1], source)
            _sync(device)
            if repeat > 0:  # the first pass warms up (and compiles kernels)
                encode.append(middle - start)
                render.append(time.perf_counter() - middle)
    assert math.isfinite(float(outputs["depth"].mean()))
    result: Dict[str, object] = {
        "encode_ms": 1000 * sum(encode) / len(encode),
        "render_full_frame_ms": 1000 * sum(render) / len(render),
        "render_rays_per_s": config.height * config.width / (sum(render) / len(render)),
    }
    result["image_ms"] = result["encode_ms"] + result["render_full_frame_ms"]  # type: ignore[operator]
    fraction = config.chunk_memory_fraction
    from bts_studio.methods.common.rendering import frame_chunk_size

    result["render_chunk_rays"] = frame_chunk_size(
        config.chunk, config.height * config.width, config.num_samples, device, fraction
    )
    if device.type == "cuda":
        result["inference_peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    per_batch = {}
    for b in config.batch_sizes:
        images = image[None].expand(b, -1, -1, -1).contiguous()
        try:
            render_depth_batch(model, images, K, c2w[0], cameras[0:1], config.chunk, fraction)  # warm-up
            _sync(device)
            start = time.perf_counter()
            for _ in range(config.throughput_repeats):
                render_depth_batch(model, images, K, c2w[0], cameras[0:1], config.chunk, fraction)
            _sync(device)
            per_batch[b] = b * config.throughput_repeats / (time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
    result["images_per_s_by_batch"] = per_batch
    if per_batch:
        best = max(per_batch, key=per_batch.get)  # type: ignore[arg-type]
        result["images_per_s_batch1"] = per_batch.get(1, float("nan"))
        result["images_per_s_best"], result["best_batch"] = per_batch[best], best
    return result


def depth_agreement(depth: Tensor, reference: Tensor) -> Dict[str, float]:
    """Mean and 99th percentile of ``|depth - reference| / reference`` over all pixels."""
    relative = ((depth - reference).abs() / reference.abs().clamp_min(1e-6)).flatten().float()
    return {"depth_rel_mean": float(relative.mean()), "depth_rel_p99": float(torch.quantile(relative[: 1 << 24], 0.99))}


def density_path_agreement(device: torch.device, config: BenchConfig) -> Dict[str, Dict[str, float]]:
    """Each density path against the twin on random inputs at BTS's widths (64 features, 64 hidden): largest
    relative differences of values and gradients, and forward + backward time at the training step's shape
    (``groups`` feature maps, ``rays_per_group x num_samples`` points each)."""
    from bts_studio.core.fused_density import density_projected, density_unfused
    from bts_studio.methods.bts.triton_density import density_triton, path_agreement, random_density_inputs

    paths = {"twin": density_unfused, "projected": density_projected, "triton": density_triton}
    inputs = random_density_inputs(device, torch.float32, b=2, c=64, h=48, w=160, n=20000, hidden=64)
    shape = dict(b=config.groups, c=64, h=config.height, w=config.width, n=config.rays_per_group * config.num_samples)
    big = random_density_inputs(device, torch.float32, hidden=64, **shape)
    big[1] = big[1] / 1.6  # mostly inside the image, as training samples are
    results: Dict[str, Dict[str, float]] = {}
    for name, fn in paths.items():
        if name == "triton" and device.type != "cuda":
            continue
        try:
            results[name] = path_agreement(fn, density_unfused, inputs) if name != "twin" else {}
            leaves = [t.clone().requires_grad_(i in (0, 3, 4, 5, 6)) for i, t in enumerate(big)]
            times = []
            for _ in range(4):
                _sync(device)
                start = time.perf_counter()
                fn(*leaves, 6, 1.5).sum().backward()
                _sync(device)
                times.append(time.perf_counter() - start)
            results[name]["fwd_bwd_ms"] = 1000 * min(times[1:])
            with torch.no_grad():
                _sync(device)
                start = time.perf_counter()
                fn(*big, 6, 1.5)
                _sync(device)
                results[name]["fwd_ms"] = 1000 * (time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001 - reported, the bench goes on
            traceback.print_exc()
            results[name] = {"error": repr(error)[:500]}  # type: ignore[dict-item]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def measure_variant(
    name: str, model, initial_state, config: BenchConfig, device: torch.device, image: Tensor, reference
) -> Dict[str, object]:
    """All figures of one variant; errors are caught and reported."""
    variant = VARIANTS[name]
    result: Dict[str, object] = {"variant": name, **asdict(variant)}
    try:
        apply_variant(model, variant)
        model.load_state_dict(initial_state)
        if not config.skip_training:
            result.update(time_training(model, config, device))
        drop_training_graphs(model)  # their memory pool is training's, not inference's
        model.load_state_dict(initial_state)
        model.forget_sources()
        result.update(time_inference(model, config, device, image))
        K, c2w, cameras = camera_rig(config, device)
        depth = render_depth_batch(
            model, image[None], K, c2w[0], cameras[0:1], config.chunk, config.chunk_memory_fraction
        )[0]
        if reference is not None:
            result.update(depth_agreement(depth, reference))
        result["depth"] = depth
    except Exception as error:  # noqa: BLE001 - one failing variant must not cost the others
        result["error"] = f"{error!r}"[:1000]
        traceback.print_exc()
    if model.net.triton_error is not None:
        result["triton_fallback"] = f"Triton kernel failed, projected path used: {model.net.triton_error!r}"[:1000]
    from bts_studio.methods.bts.rendering import RENDER_KERNEL_ERRORS
    from bts_studio.methods.bts.triton_density import triton_backward_errors

    if RENDER_KERNEL_ERRORS:
        result["render_kernel_fallback"] = f"fused render kernel failed, twin used: {RENDER_KERNEL_ERRORS[0]!r}"[:1000]

    if triton_backward_errors():
        result["triton_backward_fallback"] = f"Triton backward failed, recomputed: {triton_backward_errors()[0]!r}"[
            :1000
        ]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run(config: BenchConfig) -> Dict[str, object]:
    """Measure every variant of ``config``; returns the results (``format_table`` prints them).

    Raises:
        ValueError: an unknown variant name (before anything is built or measured).
    """
    unknown = [name for name in config.variants if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    device = _resolve(config.device)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    model = build_model(config, device)
    initial_state = {key: value.clone() for key, value in model.state_dict().items()}
    results: Dict[str, object] = {
        **asdict(config),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "floor": FLOOR,
    }
    results["output_json"] = str(config.output_json) if config.output_json else None
    if config.density_agreement:
        results["density_path_agreement"] = density_path_agreement(device, config)
    torch.manual_seed(0)
    image = torch.rand(3, config.height, config.width, device=device)
    reference = None
    variants = []
    names = list(config.variants)
    if "twin-fp32" in names:  # the reference goes first: its depth is what the others are compared with
        names.remove("twin-fp32")
        names.insert(0, "twin-fp32")
    for name in names:
        result = measure_variant(name, model, initial_state, config, device, image, reference)
        depth = result.pop("depth", None)
        if name == "twin-fp32" and depth is not None:
            reference = depth
        variants.append(result)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = flags
    results["variants"] = variants
    # The top-level figures (read by benchmarks/gpu_bts.sh and gpu_nsstep.sh) are bts-density's defaults': the
    # `default` variant where it was measured, else `twin` (what auto runs on the CPU).
    measured = {v["variant"]: v for v in variants if "error" not in v}
    default = measured.get("default", measured.get("twin"))
    if default is not None:
        for key in ("train_step_ms", "train_peak_memory_gib", "encode_ms", "render_full_frame_ms"):
            if key in default:
                results[key] = default[key]
    return results


COLUMNS = [
    ("variant", "variant", "{}"),
    ("train_step_ms", "train ms", "{:.1f}"),
    ("train_peak_memory_gib", "train GiB", "{:.2f}"),
    ("encode_ms", "encode ms", "{:.2f}"),
    ("render_full_frame_ms", "render ms", "{:.2f}"),
    ("image_ms", "image ms", "{:.2f}"),
    ("render_chunk_rays", "rays/pass", "{}"),
    ("images_per_s_batch1", "img/s b1", "{:.1f}"),
    ("images_per_s_best", "img/s best", "{:.1f}"),
    ("best_batch", "best b", "{}"),
    ("inference_peak_memory_gib", "infer GiB", "{:.2f}"),
    ("depth_rel_mean", "depth rel mean", "{:.2e}"),
    ("depth_rel_p99", "depth rel p99", "{:.2e}"),
]


def format_table(results: Dict[str, object]) -> str:
    """One markdown table: a row per variant, then the floor, agreement and errors."""
    lines = [
        f"bts-studio bench: {results['device']}, torch {results['torch']}, ResNet-{results['resnet_layers']} "
        f"{results['height']}x{results['width']}, training {results['groups']} x {results['rays_per_group']} rays x "
        f"{results['num_samples']} samples, render chunks of at least {results['chunk']} rays",
        "",
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    notes = []
    for row in results["variants"]:  # type: ignore[union-attr]
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
        for key in ("error", "triton_fallback", "triton_backward_fallback"):
            if key in row:
                notes.append(f"{row['variant']}: {row[key]}")
    lines += ["", str(results["floor"])]
    lines += ratio_lines(results["variants"])  # type: ignore[arg-type]
    for name, agreement in (results.get("density_path_agreement") or {}).items():  # type: ignore[union-attr]
        shown = ", ".join(
            (f"{k} {v:.2f}" if k.endswith("_ms") else f"{k} {v:.1e}") if isinstance(v, float) else f"{k} {v}"
            for k, v in agreement.items()
        )
        lines.append(
            f"density path {name} (vs twin on random inputs, max relative; time at the training shape): {shown}"
        )
    lines += [f"NOTE {note}" for note in notes]
    return "\n".join(lines)


def main(argv: List[str], prog: str = "bts-studio bench") -> None:
    config = tyro.cli(BenchConfig, args=argv, prog=prog)
    results = run(config)
    print(format_table(results))
    if config.output_json is not None:
        config.output_json.parent.mkdir(parents=True, exist_ok=True)
        tmp = config.output_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        tmp.replace(config.output_json)
