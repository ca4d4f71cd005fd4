"""BTS's render of point samples along rays: density, colours, compositing; the unfused twin and the fused kernels.

:func:`render_samples_unfused` is the composition of core calls that every render runs on the CPU and in training
(sample points, ``BTSDensityField.density``, ``sample_view_colours``, ``core.compositing``).
:func:`render_samples_triton` has its signature and runs an inference render in two Triton kernels
(``triton_kernels``): ``density_rays_kernel`` evaluates the density at every sample as the density kernel does,
projecting ``origin + t direction`` into the input view itself (no per-sample point, ``xy`` or code tensor), and
``composite_kernel`` composites a tile of rays x samples per program (weights with the transmittance as ``exp`` of
a cumulative sum of logs, depth, accumulation, outside mass, the colour view's colour, the occupancy behind the
median-depth surface). Only the densities ``[rays * samples]`` are written between them (issue 17: the torch ops
around the density kernel were over half of a frame's render, docs/benchmarks.md). A first version that did both in
one program per ray was slower than the two kernels together (cross-warp scans of a 32-sample block).

It applies to inference: no autograd, one colour view, no loss outputs, no missing colour views; anything else (and
every call off CUDA, unless ``TRITON_INTERPRET=1`` with the ``triton`` fast path) runs the twin. Differences from
the twin are fp32 rounding: points are projected as ``R (o + d t) + T`` with fused multiply-adds (the twin rounds
each product), the transmittance is ``exp`` of a sum of logs instead of a cumulative product, and the density's
``W_pe`` product is the density kernel's TF32 ``tl.dot``; a ray whose accumulated weight is within rounding of 0.5
at a sample may pick the neighbouring sample as its median-depth surface for ``occupancy_behind_surface``.
"""

import warnings
from typing import Callable, Dict

import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.core.compositing import (
    LAST_DELTA,
    TRANSMITTANCE_EPS,
    composite_values,
    composite_weights,
    expected_distance,
    invalid_mass,
    occupancy_behind_surface,
)
from bts_studio.core.feature_sampling import MIN_Z, sample_view_colours
from bts_studio.eval.occupancy import OCCUPIED_DENSITY_THRESHOLD as OCCUPIED_DENSITY
from bts_studio.methods.bts import triton_density
from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.methods.bts.triton_density import density_triton, load_kernels, mlp_kernel_arguments, resolve_fast_path

__all__ = [
    "BEHIND_SURFACE_BAND",
    "RENDER_KERNEL_ERRORS",
    "RenderFn",
    "render_samples_triton",
    "render_samples_unfused",
    "resolve_render_path",
]

BEHIND_SURFACE_BAND = 4.0
"""Metres behind the first surface that ``occupancy_behind_surface`` looks at (BTS's "depth + 4 m" baseline band)."""

RenderFn = Callable[..., Dict[str, Tensor]]

RENDER_KERNEL_ERRORS: list = []
"""Errors of the fused render kernel in this process; after the first, every render runs the twin."""


def render_samples_unfused(
    net: BTSDensityField,
    origins: Float[Tensor, "N 3"],
    directions: Float[Tensor, "N 3"],
    distances: Float[Tensor, "N S"],
    conditioning: BTSConditioning,
    terminate_last: bool = True,
) -> Dict[str, Tensor]:
    """Render ``N = B * R`` rays (``R`` per conditioning element, element-major) at sample ``distances`` along unit
    ``directions``. Outputs ``[N, C]``: ``rgb`` (first colour view), ``depth`` (metres along the ray),
    ``outside_source``, ``occupancy_behind_surface``, ``accumulation``; with ``conditioning.with_loss_outputs`` also
    ``rgb_views`` ``[N, V, 3]``, ``invalid_mass`` ``[N, V]``, and the compositing ``weights`` and
    ``sample_distances`` ``[N, S]``. Sample points are ``origin + direction * t``, as
    nerfstudio's ``Frustums.get_start_positions`` computes them."""
    batch = conditioning.batch_size
    num_rays, num_samples = distances.shape
    assert origins.shape == directions.shape == (num_rays, 3), f"origins {tuple(origins.shape)}, rays {num_rays}"
    assert num_rays % batch == 0, f"{num_rays} rays for {batch} conditioning elements"
    points = (origins[:, None] + directions[:, None] * distances[..., None]).reshape(batch, -1, 3)
    sigma, outside = net.density(points, conditioning.features, conditioning.source_K, conditioning.source_w2c)
    colours, colour_invalid = sample_view_colours(
        conditioning.colour_images, points, conditioning.colour_K, conditioning.colour_w2c
    )
    if conditioning.colour_missing is not None:
        colour_invalid = colour_invalid | conditioning.colour_missing[:, None, :]
    num_views = conditioning.num_views
    sigma = sigma.reshape(num_rays, num_samples)
    weights = composite_weights(sigma, distances, terminate_last=terminate_last)
    rgb_views = composite_values(weights, colours.reshape(num_rays, num_samples, num_views * 3))
    rgb_views = rgb_views.reshape(num_rays, num_views, 3)
    outputs = {
        "rgb": rgb_views[:, 0],
        "depth": expected_distance(weights, distances),
        "outside_source": invalid_mass(weights, outside.reshape(num_rays, num_samples, 1)),
        "occupancy_behind_surface": occupancy_behind_surface(
            weights, sigma, distances, BEHIND_SURFACE_BAND, OCCUPIED_DENSITY
        ),
        # Last in the viewer's list: 1 everywhere (the last sample terminates rays); nerfstudio's depth colormaps
        # read it, so it stays.
        "accumulation": weights.sum(dim=-1, keepdim=True),
    }
    if conditioning.with_loss_outputs:
        invalid = colour_invalid | outside[..., None]
        outputs["rgb_views"] = rgb_views
        outputs["invalid_mass"] = invalid_mass(weights, invalid.reshape(num_rays, num_samples, num_views))
        outputs["weights"] = weights  # [N, S]: for the opt-in distortion loss
        outputs["sample_distances"] = distances
    return outputs


def _fused_render_applies(net: BTSDensityField, conditioning: BTSConditioning, *tensors: Tensor) -> bool:
    """The fused kernels cover this call (module docstring: they have no backward); else the twin runs."""
    inputs = (*tensors, conditioning.features, *net.mlp_coarse.parameters())
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return False
    return conditioning.num_views == 1 and not conditioning.with_loss_outputs and conditioning.colour_missing is None


def one_pixel_tiles(encoding_width: int) -> Dict[str, int]:
    """``density_rays_kernel``'s tile widths for a block of one pixel's samples: ``ZP`` columns for the code's
    ``E / 3`` encoding columns (>= 16 for ``tl.dot``), ``XYP`` for x's and y's together."""
    per_coordinate = encoding_width // 3
    return {
        "ZP": max(16, 1 << (per_coordinate - 1).bit_length()),
        "XYP": 1 << (2 * per_coordinate - 1).bit_length(),
    }


def render_samples_triton(
    net: BTSDensityField,
    origins: Float[Tensor, "N 3"],
    directions: Float[Tensor, "N 3"],
    distances: Float[Tensor, "N S"],
    conditioning: BTSConditioning,
    terminate_last: bool = True,
) -> Dict[str, Tensor]:
    """Same as :func:`render_samples_unfused`, in two Triton kernels (module docstring); calls they cannot
    take (autograd, several colour views, loss outputs, missing views) run the twin. CUDA tensors, or any tensors
    under ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: the density MLP's hidden width is not a power of two >= 16 (a ``tl.dot`` tile constraint).
    """
    if not _fused_render_applies(net, conditioning, origins, directions, distances):
        return render_samples_unfused(net, origins, directions, distances, conditioning, terminate_last)
    num_rays, num_samples = distances.shape
    batch = conditioning.batch_size
    assert origins.shape == directions.shape == (num_rays, 3), f"origins {tuple(origins.shape)}, rays {num_rays}"
    assert num_rays % batch == 0, f"{num_rays} rays for {batch} conditioning elements"
    features = conditioning.features
    height, width = features.shape[-2:]
    colour_height, colour_width = conditioning.colour_images.shape[-2:]
    mlp = net.mlp_coarse
    with torch.no_grad():
        proj, vectors, consts = mlp_kernel_arguments(
            features, mlp.lin_in.weight, mlp.lin_in.bias, mlp.lin_out.weight, mlp.lin_out.bias, net.num_freqs
        )
        launch = triton_density.TRITON_LAUNCH  # read per call: benchmarks/speed_probe.py sweeps it
        if launch.render_map_dtype == "fp16":
            proj = proj.half()
        cameras = torch.cat(
            [
                conditioning.source_K.reshape(batch, 9),
                conditioning.source_w2c[:, :3].reshape(batch, 12),
                conditioning.colour_K[:, 0].reshape(batch, 9),
                conditioning.colour_w2c[:, 0, :3].reshape(batch, 12),
            ],
            dim=1,
        ).float()
        image = conditioning.colour_images[:, 0].permute(0, 2, 3, 1).float().contiguous()  # [B, H, W, 3]
        sigma = torch.empty(num_rays * num_samples, device=features.device, dtype=torch.float32)
        out = torch.empty(num_rays, 8, device=features.device, dtype=torch.float32)
        rays = (origins.float().contiguous(), directions.float().contiguous(), distances.float().contiguous())
        try:
            if num_rays > 0:
                _, _, density_rays, composite = load_kernels()
                density_rays[(num_rays * -(-num_samples // consts["BLOCK"]),)](
                    proj, *vectors, *rays, cameras, sigma, num_rays // batch, num_samples,
                    height, width, float(net.freq_factor), float(net.code_near), float(net.code_far),
                    MIN_Z=MIN_Z, SAME_PIXEL=float(launch.same_pixel), **one_pixel_tiles(consts["E"]), **consts,
                )  # fmt: skip
                composite[(-(-num_rays // launch.composite_rays),)](
                    rays[2], sigma, rays[0], rays[1], cameras, image, out, num_rays, num_rays // batch,
                    num_samples, height, width, colour_height, colour_width, BEHIND_SURFACE_BAND,
                    float(OCCUPIED_DENSITY), RB=launch.composite_rays, SP=max(16, 1 << (num_samples - 1).bit_length()),
                    TERMINATE_LAST=terminate_last, MIN_Z=MIN_Z, LAST_DELTA=LAST_DELTA, EPS=TRANSMITTANCE_EPS,
                    num_warps=4,
                )  # fmt: skip
        except Exception as error:  # a kernel that does not compile on this GPU/driver must not end a render
            RENDER_KERNEL_ERRORS.append(error)
            warnings.warn(f"bts-density: the fused render kernel failed ({error!r}); using the twin", stacklevel=2)
            return render_samples_unfused(net, origins, directions, distances, conditioning, terminate_last)
    dtype = origins.dtype
    return {
        "rgb": out[:, 0:3].to(dtype),
        "depth": out[:, 3:4].to(dtype),
        "outside_source": out[:, 5:6].to(dtype),
        "occupancy_behind_surface": out[:, 6:7].to(dtype),
        "accumulation": out[:, 4:5].to(dtype),
    }


def resolve_render_path(net: BTSDensityField, device: torch.device) -> RenderFn:
    """:func:`render_samples_triton` where the density runs the Triton kernel (``net.fast_path`` resolves to it
    on ``device`` and it has not failed), else :func:`render_samples_unfused`."""
    density_fn = resolve_fast_path(net.fast_path, device)
    if not RENDER_KERNEL_ERRORS and net.triton_error is None and density_fn is density_triton:
        return render_samples_triton
    return render_samples_unfused
