"""Whole-image rendering in chunks of rays, for models whose full frame does not fit one forward pass.

nerfstudio's ``Model.get_outputs_for_camera_ray_bundle`` does the same for plain ``get_outputs``; the methods here
render with extra arguments (a conditioning, a latent code), so they pass a closure instead.
"""

from typing import Callable, Dict, List, Optional

import torch
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor

__all__ = ["RENDER_BYTES_PER_SAMPLE", "frame_chunk_size", "render_bundle_in_chunks", "render_in_chunks"]

RENDER_BYTES_PER_SAMPLE = 1536
"""Peak device memory per point sample of a bts-density render pass (fp32 twin: the 64-channel gather, the
103-wide MLP input, the 64-wide hidden layer and their temporaries; ~1.3 KB measured on an H200, issue 17)."""


def render_in_chunks(
    render: Callable[[int, int], Dict[str, Tensor]],
    num_rays: int,
    chunk_size: int,
    output_device: torch.device | str,
) -> Dict[str, Tensor]:
    """Call ``render(start, end)`` for consecutive ray ranges of at most ``chunk_size`` and concatenate.

    Every output of ``render`` must be ``[end - start, ...]``; the result is ``[num_rays, ...]`` on
    ``output_device`` (chunks move there as they finish, so the render device holds one chunk at a time).
    """
    assert chunk_size > 0, f"chunk_size must be positive, got {chunk_size}"
    pieces: Dict[str, List[Tensor]] = {}
    for start in range(0, num_rays, chunk_size):
        end = min(start + chunk_size, num_rays)
        for name, value in render(start, end).items():
            assert value.shape[0] == end - start, f"output {name!r} has {value.shape[0]} rows for {end - start} rays"
            pieces.setdefault(name, []).append(value.to(output_device))
    # One pass (the whole frame fitted): contiguous outputs as they are, without a copy each (callers .view them).
    return {
        name: values[0] if len(values) == 1 and values[0].is_contiguous() else torch.cat(values)
        for name, values in pieces.items()
    }


def frame_chunk_size(
    configured: int,
    num_rays: int,
    num_samples: int,
    device: torch.device | str,
    memory_fraction: float,
    free_bytes: Optional[int] = None,
) -> int:
    """Rays per render pass for a frame of ``num_rays``: ``configured``, or on CUDA more, up to the whole frame, as
    long as ``num_samples`` samples per ray at ``RENDER_BYTES_PER_SAMPLE`` fit in ``memory_fraction`` of the free
    memory (``free_bytes``: default ``torch.cuda.mem_get_info`` plus what torch's caching allocator holds unused).

    Fewer passes mean fewer kernel launches per image (issue 17); a 192x640 frame at 64 samples needs ~11 GiB.
    """
    assert configured > 0, f"chunk size must be positive, got {configured}"
    device = torch.device(device)
    if memory_fraction <= 0 or (device.type != "cuda" and free_bytes is None):
        return configured
    if free_bytes is None:
        free, _ = torch.cuda.mem_get_info(device)
        free_bytes = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    fitting = int(memory_fraction * free_bytes) // (max(num_samples, 1) * RENDER_BYTES_PER_SAMPLE)
    return max(configured, min(num_rays, fitting))


def render_bundle_in_chunks(
    render: Callable[[RayBundle], Dict[str, Tensor]],
    camera_ray_bundle: RayBundle,
    chunk_size: int,
    device: torch.device | str,
) -> Dict[str, Tensor]:
    """Render an ``[H, W]`` ray bundle as flat chunks on ``device``; outputs ``[H, W, C]`` on the bundle's device."""
    assert camera_ray_bundle.origins.ndim == 3, f"expected an [H, W] bundle, got {camera_ray_bundle.shape}"
    height, width = camera_ray_bundle.origins.shape[:2]
    flat = camera_ray_bundle.flatten()
    outputs = render_in_chunks(
        lambda start, end: render(flat[start:end].to(device)),
        len(flat),
        chunk_size,
        camera_ray_bundle.origins.device,
    )
    return {name: value.view(height, width, -1) for name, value in outputs.items()}
