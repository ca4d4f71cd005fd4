"""BTS's colour jitter of a whole batch in two Triton kernels (GPU), with ``augmentation.apply_colour_jitter_batch``
as its pure-PyTorch twin (same signature).

Why: the batched twin runs each operation as separate tensor ops (~500 per batch), and at BTS's batch (16 groups x 8
frames at 192x640) it took 7.0 ms of an ``ns-train`` step on an H200, the largest part of what the step adds to the
model's (docs/benchmarks.md, twelfth session). Here one kernel sums each image's grey values after the operations
that precede contrast in its group's order (contrast blends with that mean), and a second applies the four
operations per pixel: the batch is read twice and written once. Formulas are torchvision's (``triton_jitter_kernels``);
the grey means are summed in another (fixed) order, so results differ from the twin by float rounding.
"""

import warnings
from typing import List, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.methods.bts.augmentation import ColourJitterDraw, apply_colour_jitter_batch
from bts_studio.methods.bts.triton_density import triton_available

BLOCK = 1024
"""Pixels per program."""

_ERRORS: List[Exception] = []
"""A kernel failure (e.g. no compiler for this GPU): the twin runs from then on (warned once)."""


def colour_jitter_triton(
    images: Float[Tensor, "B V 3 H W"], draws: Sequence[ColourJitterDraw]
) -> Float[Tensor, "B V 3 H W"]:
    """:func:`~bts_studio.methods.bts.augmentation.apply_colour_jitter_batch` in two kernels (float32 images in
    [0, 1], contiguous, on CUDA or under ``TRITON_INTERPRET=1``). A kernel that fails warns once and the twin runs.

    Raises:
        ValueError: ``images`` is not ``[B, V, 3, H, W]`` with one draw per group.
    """
    if images.ndim != 5 or images.shape[2] != 3 or images.shape[0] != len(draws):
        raise ValueError(f"expected images [B, V, 3, H, W] and B draws, got {tuple(images.shape)} and {len(draws)}")
    if _ERRORS or not triton_available() or images.dtype != torch.float32:
        return apply_colour_jitter_batch(images, draws)
    try:
        return _launch(_pixel_flat(images), draws)
    except Exception as error:  # a kernel that does not compile on this GPU/driver must not end a run
        _ERRORS.append(error)
        warnings.warn(f"bts-density: the Triton colour-jitter kernels failed ({error!r}); using the twin", stacklevel=2)
        return apply_colour_jitter_batch(images, draws)


def _pixel_flat(images: Tensor) -> Tensor:
    """``images`` itself when each image's pixels are one stride apart (NCHW, or the draw's permuted HWC uint8
    decode, whose copy would move ~190 MB per batch) and images one stride apart; else a contiguous copy."""
    _, views, _, height, width = images.shape
    sb, sv, _, sh, sw = images.stride()
    if sh == width * sw and sb == views * sv:
        return images
    return images.contiguous()


def _launch(images: Tensor, draws: Sequence[ColourJitterDraw]) -> Tensor:
    from bts_studio.methods.bts import triton_jitter_kernels as kernels

    batch, views, _, height, width = images.shape
    pixels = height * width
    _, stride_n, stride_c, _, stride_p = images.stride()
    # one upload: each group's order, then its factors in operation order (brightness, contrast, saturation, hue)
    table = torch.tensor(
        [[*d.order, d.brightness, d.contrast, d.saturation, d.hue] for d in draws], dtype=torch.float32
    ).to(images.device, non_blocking=True)
    order = table[:, :4].to(torch.int32).contiguous()
    factors = table[:, 4:].contiguous()
    out = torch.empty_like(images)  # the same strides (empty_like keeps a dense layout)
    assert out.stride() == images.stride(), (out.stride(), images.stride())
    grid = (batch * views, (pixels + BLOCK - 1) // BLOCK)
    partial = torch.empty(batch * views, grid[1], dtype=torch.float32, device=images.device)
    strides = (stride_n, stride_c, stride_p)
    kernels.grey_sums_kernel[grid](images, order, factors, partial, views, pixels, *strides, BLOCK=BLOCK)
    sums = partial.sum(dim=1)  # a fixed order: the same means on every run
    kernels.jitter_kernel[grid](images, out, order, factors, sums, views, pixels, 1.0 / pixels, *strides, BLOCK=BLOCK)
    return out


def triton_jitter_errors() -> List[Exception]:
    """Kernel failures so far (the twin ran instead)."""
    return list(_ERRORS)
