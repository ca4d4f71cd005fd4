"""The fused Triton density kernel (GPU) and the choice between it and its twins (``core/fused_density.py``).

:func:`density_triton` has the signature of ``core.fused_density.density_unfused``: one Triton kernel per batch does
the bilinear gather of the channels-last projected map ``W_f F``, BTS's positional encoding, ``W_pe`` (fp32
``tl.dot`` at IEEE precision, no TF32), ReLU, ``w_out`` and softplus in registers and writes only ``sigma``; no
``[samples, 103]`` or ``[samples, 64]`` tensor exists. Its backward recomputes :func:`density_projected` under
autograd (exactly the projected path's gradients), so training pays one extra forward; ``"auto"`` therefore uses
Triton only where no gradient is needed (inference) and the projected path in training.

Precision: everything fp32; the gather weights follow ``grid_sample``'s formula (differences are fp32 rounding).
"""

import functools
import os
from typing import Literal, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from bts_studio.core.fused_density import (
    DensityFn,
    check_density_inputs,
    density_projected,
    density_unfused,
    projected_feature_map,
)
from bts_studio.core.positional_encoding import encoding_width

__all__ = [
    "FAST_PATHS",
    "FastPath",
    "density_triton",
    "path_agreement",
    "random_density_inputs",
    "resolve_fast_path",
    "triton_available",
    "values_and_grads",
]

FastPath = Literal["auto", "twin", "projected", "triton"]
FAST_PATHS: Tuple[str, ...] = ("auto", "twin", "projected", "triton")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Triton imports (it ships with Linux CUDA builds of torch)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        return False
    return True


@functools.lru_cache(maxsize=1)
def _kernel():
    """Build the Triton kernel on first use (``TRITON_INTERPRET=1`` is read here: the CPU test uses it)."""
    import triton
    import triton.language as tl

    @triton.jit
    def density_forward_kernel(
        proj_ptr,  # [B, H, W, HID] fp32, channels last
        xy_ptr,  # [B, N, 2]
        code_ptr,  # [B, N, 3]
        wpe_ptr,  # [E, HID]: W_pe transposed
        bin_ptr,  # [HID]
        wout_ptr,  # [HID]
        bout_ptr,  # [1]
        out_ptr,  # [B, N]
        N,
        H,
        W,
        freq_factor,
        HID: tl.constexpr,
        E: tl.constexpr,
        EP: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        batch = tl.program_id(1).to(tl.int64)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        row = batch * N + offs
        x = tl.load(xy_ptr + row * 2, mask=mask, other=0.0)
        y = tl.load(xy_ptr + row * 2 + 1, mask=mask, other=0.0)
        # grid_sample, align_corners=False: pixel = ((x + 1) W - 1) / 2; border padding clips it into the image.
        ix = tl.minimum(tl.maximum(((x + 1.0) * W - 1.0) * 0.5, 0.0), W - 1.0)
        iy = tl.minimum(tl.maximum(((y + 1.0) * H - 1.0) * 0.5, 0.0), H - 1.0)
        x0f = tl.floor(ix)
        y0f = tl.floor(iy)
        tx = ix - x0f
        ty = iy - y0f
        x0 = x0f.to(tl.int64)
        y0 = y0f.to(tl.int64)
        x1 = tl.minimum(x0 + 1, W - 1)  # weight tx is 0 when x0 is the last column
        y1 = tl.minimum(y0 + 1, H - 1)
        ch = tl.arange(0, HID)
        base = proj_ptr + batch * H * W * HID
        m2 = mask[:, None]
        v00 = tl.load(base + (y0 * W + x0)[:, None] * HID + ch[None, :], mask=m2, other=0.0)
        v01 = tl.load(base + (y0 * W + x1)[:, None] * HID + ch[None, :], mask=m2, other=0.0)
        v10 = tl.load(base + (y1 * W + x0)[:, None] * HID + ch[None, :], mask=m2, other=0.0)
        v11 = tl.load(base + (y1 * W + x1)[:, None] * HID + ch[None, :], mask=m2, other=0.0)
        gathered = ((1.0 - ty) * (1.0 - tx))[:, None] * v00 + ((1.0 - ty) * tx)[:, None] * v01
        gathered += (ty * (1.0 - tx))[:, None] * v10 + (ty * tx)[:, None] * v11
        # Positional encoding, column j: [c0 c1 c2 | sin(f0 c) | cos(f0 c) | sin(f1 c) | ...], f_k = factor 2^k.
        c0 = tl.load(code_ptr + row * 3, mask=mask, other=0.0)
        c1 = tl.load(code_ptr + row * 3 + 1, mask=mask, other=0.0)
        c2 = tl.load(code_ptr + row * 3 + 2, mask=mask, other=0.0)
        j = tl.arange(0, EP)
        jj = tl.maximum(j - 3, 0)
        dim = tl.where(j < 3, j, jj % 3)
        block = jj // 3
        freq = freq_factor * (tl.full([EP], 1, tl.int32) << (block // 2)).to(tl.float32)
        value = tl.where(dim[None, :] == 0, c0[:, None], tl.where(dim[None, :] == 1, c1[:, None], c2[:, None]))
        scaled = value * freq[None, :]
        waves = tl.where((block % 2 == 1)[None, :], tl.cos(scaled), tl.sin(scaled))
        encoded = tl.where((j < 3)[None, :], value, tl.where((j < E)[None, :], waves, 0.0))
        wpe = tl.load(wpe_ptr + j[:, None] * HID + ch[None, :], mask=(j < E)[:, None], other=0.0)
        hidden = gathered + tl.dot(encoded, wpe, input_precision="ieee") + tl.load(bin_ptr + ch)[None, :]
        hidden = tl.maximum(hidden, 0.0)
        logit = tl.sum(hidden * tl.load(wout_ptr + ch)[None, :], axis=1) + tl.load(bout_ptr)
        # softplus (torch's beta 1): max(o, 0) + log(1 + exp(-|o|)), stable for both signs.
        sigma = tl.maximum(logit, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(logit)))
        tl.store(out_ptr + row, sigma, mask=mask)

    return density_forward_kernel


TRITON_BLOCK = 64
"""Samples per Triton program (64 x 64-channel tiles keep the four corner loads in registers)."""


def _triton_forward(features, xy, code, w_in, b_in, w_out, b_out, num_freqs, freq_factor) -> Tensor:
    b, c, h, w = features.shape
    hid = w_in.shape[0]
    e = encoding_width(3, num_freqs)
    if hid & (hid - 1) or hid < 16:
        raise ValueError(f"the Triton density kernel needs a power-of-two hidden width >= 16, got {hid}")
    ep = max(16, 1 << (e - 1).bit_length())
    with torch.no_grad():
        proj = projected_feature_map(features.float(), w_in.float()).permute(0, 2, 3, 1).contiguous()
        wpe = w_in[:, c:].float().t().contiguous()
        xy = xy.float().contiguous()
        code = code.float().contiguous()
        n = xy.shape[1]
        out = torch.empty(b, n, device=features.device, dtype=torch.float32)
        if n > 0:
            grid = ((n + TRITON_BLOCK - 1) // TRITON_BLOCK, b)
            _kernel()[grid](
                proj, xy, code, wpe, b_in.float().contiguous(), w_out.float().reshape(-1).contiguous(),
                b_out.float().reshape(-1).contiguous(), out, n, h, w, float(freq_factor),
                HID=hid, E=e, EP=ep, BLOCK=TRITON_BLOCK,
            )  # fmt: skip
    return out


class _TritonDensity(torch.autograd.Function):
    """Triton forward; backward by recomputing :func:`density_projected` under autograd."""

    @staticmethod
    def forward(ctx, features, xy, code, w_in, b_in, w_out, b_out, num_freqs, freq_factor):  # type: ignore[override]
        ctx.save_for_backward(features, xy, code, w_in, b_in, w_out, b_out)
        ctx.pe = (num_freqs, freq_factor)
        return _triton_forward(features, xy, code, w_in, b_in, w_out, b_out, num_freqs, freq_factor)

    @staticmethod
    def backward(ctx, grad_sigma):  # type: ignore[override]
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:7]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(need) for t, need in zip(saved, needs, strict=True)]
            sigma = density_projected(*inputs, *ctx.pe)
            wanted = [t for t, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad(sigma, wanted, grad_sigma)) if wanted else iter(())
        return (*[next(grads) if need else None for need in needs], None, None)


def density_triton(
    features: Float[Tensor, "B C H W"],
    xy: Float[Tensor, "B N 2"],
    code: Float[Tensor, "B N 3"],
    w_in: Float[Tensor, "hidden CE"],
    b_in: Float[Tensor, " hidden"],
    w_out: Float[Tensor, "1 hidden"],
    b_out: Float[Tensor, "1"],
    num_freqs: int,
    freq_factor: float,
) -> Float[Tensor, "B N"]:
    """Same as :func:`density_unfused`, one fused Triton kernel (module docstring). CUDA tensors, or any tensors
    under ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: ``hidden`` is not a power of two >= 16 (a ``tl.dot`` tile constraint).
    """
    check_density_inputs(features, xy, code, w_in, w_out, num_freqs)
    return _TritonDensity.apply(features, xy, code, w_in, b_in, w_out, b_out, num_freqs, freq_factor)


_PATHS = {"twin": density_unfused, "projected": density_projected, "triton": density_triton}


def resolve_fast_path(path: str, device: torch.device, needs_grad: bool) -> DensityFn:
    """The density function for ``path`` on ``device``.

    ``"auto"``: the twin on the CPU (bit-for-bit the unfused computation); on CUDA the Triton kernel when no
    gradient is needed and Triton imports, else the projected path (Triton's backward recomputes it anyway).
    ``"triton"`` off CUDA falls back to the twin unless ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: unknown ``path``.
    """
    if path not in FAST_PATHS:
        raise ValueError(f"fast_path must be one of {FAST_PATHS}, got {path!r}")
    cuda = device.type == "cuda"
    if path == "auto":
        if not cuda:
            return density_unfused
        return density_triton if (triton_available() and not needs_grad) else density_projected
    if path == "triton" and not (triton_available() and (cuda or os.environ.get("TRITON_INTERPRET") == "1")):
        return density_unfused
    return _PATHS[path]


def random_density_inputs(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    b: int = 2,
    c: int = 8,
    h: int = 5,
    w: int = 7,
    n: int = 50,
    hidden: int = 16,
    num_freqs: int = 6,
    seed: int = 0,
) -> list:
    """Random inputs of a density path: points inside, on the border of and far outside the map (border padding),
    and MLP weights of unit-ish scale. Shared by the tests and ``bts-studio bench``'s agreement check."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    xy = 1.6 * (torch.rand(b, n, 2, generator=g, dtype=dtype) * 2 - 1)  # ~40% outside [-1, 1]
    corners = [[-1.0, -1.0], [1.0, 1.0], [5.0, -7.0], [1.0 - 1 / w, 1.0 - 1 / h]]
    xy[:, : min(4, n)] = torch.tensor(corners[: min(4, n)], dtype=dtype)
    code = torch.rand(b, n, 3, generator=g, dtype=dtype) * 2 - 1
    e = encoding_width(3, num_freqs)
    w_in = torch.randn(hidden, c + e, generator=g, dtype=dtype) / (c + e) ** 0.5
    b_in = 0.1 * torch.randn(hidden, generator=g, dtype=dtype)
    w_out = torch.randn(1, hidden, generator=g, dtype=dtype) / hidden**0.5
    b_out = 0.1 * torch.randn(1, generator=g, dtype=dtype)
    return [t.to(device) for t in (features, xy, code, w_in, b_in, w_out, b_out)]


GRAD_INPUTS = (0, 3, 4, 5, 6)
"""Inputs that need gradients in training: the feature map and the MLP weights (points carry none)."""


def values_and_grads(fn: DensityFn, inputs: list, num_freqs: int = 6, freq_factor: float = 1.5):
    """``sigma`` and the gradients of a fixed weighted sum of it w.r.t. :data:`GRAD_INPUTS`."""
    leaves = [t.clone().requires_grad_(i in GRAD_INPUTS) for i, t in enumerate(inputs)]
    sigma = fn(*leaves, num_freqs, freq_factor)
    weights = torch.linspace(0.5, 1.5, sigma.numel(), dtype=sigma.dtype, device=sigma.device).reshape(sigma.shape)
    (sigma * weights).sum().backward()
    return sigma.detach(), [leaves[i].grad for i in GRAD_INPUTS]


def path_agreement(fn: DensityFn, reference: DensityFn, inputs: list) -> dict:
    """Largest relative differences of ``sigma`` and of each gradient between two density paths."""
    sigma, grads = values_and_grads(fn, inputs)
    sigma_ref, grads_ref = values_and_grads(reference, inputs)

    def rel(a: Tensor, b: Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    result = {"sigma_max_rel": rel(sigma, sigma_ref)}
    for name, grad, grad_ref in zip(("features", "w_in", "b_in", "w_out", "b_out"), grads, grads_ref, strict=True):
        result[f"grad_{name}_max_rel"] = rel(grad, grad_ref)
    return result
