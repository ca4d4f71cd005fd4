"""The fused Triton density kernel (GPU) and the choice between it and its twins (``core/fused_density.py``).

:func:`density_triton` has the signature of ``core.fused_density.density_unfused``: one Triton kernel per batch does
the bilinear gather of the channels-last projected map ``W_f F``, BTS's positional encoding, ``W_pe`` (a ``tl.dot``
at :data:`TRITON_LAUNCH`'s precision, TF32 by default), ReLU, ``w_out`` and softplus in registers and writes only
``sigma``; no ``[samples, 103]`` or ``[samples, 64]`` tensor exists. Its backward is a second kernel that recomputes
the hidden layer per sample and accumulates every gradient in place: the weights' summed in registers over 2048
samples per program (partial sums written once, then summed by torch), the gather's by scatter-adding (atomics) into
the channels-last projected map (64 contiguous floats per corner, where ``grid_sample``'s backward scatters each
channel separately in NCHW); the 1x1 projection's backward is two matmuls. A backward kernel that fails (e.g. does
not compile) warns once and recomputes :func:`density_projected` under autograd.

Precision: fp32 except the ``W_pe`` product's TF32 inputs (``TritonLaunch.dot_precision``); the gather weights follow
``grid_sample``'s formula (differences are fp32 rounding; atomics make the gradients' summation order, and so their
last bits, nondeterministic, as ``grid_sample``'s are).
"""

import functools
import os
import warnings
from dataclasses import dataclass
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
    "load_kernels",
    "mlp_kernel_arguments",
    "mlp_kernel_vectors",
    "path_agreement",
    "random_density_inputs",
    "resolve_fast_path",
    "triton_available",
    "triton_backward_errors",
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
def load_kernels():
    """``(forward_kernel, backward_kernel, density_rays_kernel, composite_kernel)``, imported on first use."""
    from bts_studio.methods.bts import triton_kernels as k

    return k.forward_kernel, k.backward_kernel, k.density_rays_kernel, k.composite_kernel


@dataclass
class TritonLaunch:
    """Launch settings of the two kernels. The defaults are the fastest of ``benchmarks/speed_probe.py``'s sweep on an
    H200 (docs/benchmarks.md): 64-sample blocks at 4 warps spilled registers (forward 55.6 ms at the training shape,
    4.1 ms at 32-sample blocks with a TF32 dot)."""

    block: int = 32
    """Samples per block (a 32 x 64-channel tile per corner load)."""
    backward_split: int = 32
    """Blocks per backward program: weight gradients are summed over ``block * backward_split`` samples in
    registers before one write."""
    num_warps: int = 4
    """Warps per program."""
    dot_precision: str = "tf32"
    """``tl.dot`` input precision of the positional-encoding GEMM (39 -> 64 per sample): tf32 (10-bit mantissa
    inputs, fp32 accumulation; sigma within 4e-4 relative of fp32), ieee (fp32, 1.6x slower) or tf32x3."""
    same_pixel: float = 1e-3
    """Render: a block of a ray's samples whose ends project within this many pixels of each other in the input
    view (rays of the input camera itself: ~1e-5 px of fp32 rounding) reads the feature map and encodes x and y once
    (``triton_kernels.one_pixel_hidden``). Negative: never."""
    composite_rays: int = 16
    """Rays per program of the render's compositing kernel (a ``[rays, samples]`` tile)."""
    render_map_dtype: str = "fp32"
    """Render kernel: the projected map's storage, fp32 or fp16 (half the bytes per read; fp16's 11-bit
    significand, as the TF32 dot's inputs)."""

    def __post_init__(self) -> None:
        if self.render_map_dtype not in ("fp32", "fp16"):
            raise ValueError(f"render_map_dtype must be fp32 or fp16, got {self.render_map_dtype!r}")


TRITON_LAUNCH = TritonLaunch()
"""The settings every launch reads (module state so that a sweep can change them without new signatures)."""


def _prepare(features, xy, code, w_in, b_in, w_out, b_out, num_freqs):
    """Kernel arguments: the channels-last projected map, ``W_pe`` transposed, flat contiguous fp32 vectors."""
    proj, vectors, consts = mlp_kernel_arguments(features, w_in, b_in, w_out, b_out, num_freqs)
    return (proj, *_point_arguments(xy, code), vectors, consts)


def _point_arguments(xy, code):
    """The kernels' per-point inputs: contiguous fp32 ``xy`` and ``code``."""
    return xy.float().contiguous(), code.float().contiguous()


def mlp_kernel_arguments(features, w_in, b_in, w_out, b_out, num_freqs):
    """What every kernel that evaluates the density MLP takes: the channels-last projected map ``W_f F``
    ``[B, H, W, hidden]``, the vectors ``(W_pe^T, b_in, w_out, b_out)`` as contiguous fp32, and the constexprs
    (``HID``, ``E``, ``EP``, ``BLOCK``, ``DOT``, ``num_warps``) of :data:`TRITON_LAUNCH`.

    Raises:
        ValueError: ``hidden`` is not a power of two >= 16 (a ``tl.dot`` tile constraint).
    """
    # A channels-last ``features`` (the bf16 training encoder's) gives a channels-last map: no copy here.
    proj = projected_feature_map(features.float(), w_in.float()).permute(0, 2, 3, 1).contiguous()
    return (proj, *mlp_kernel_vectors(features.shape[1], w_in, b_in, w_out, b_out, num_freqs))


def mlp_kernel_vectors(c, w_in, b_in, w_out, b_out, num_freqs):
    """:func:`mlp_kernel_arguments` without the projected map (``c`` feature channels): the vectors and constexprs."""
    hid = w_in.shape[0]
    if hid & (hid - 1) or hid < 16:
        raise ValueError(f"the Triton density kernel needs a power-of-two hidden width >= 16, got {hid}")
    e = encoding_width(3, num_freqs)
    vectors = (
        w_in[:, c:].float().t().contiguous(),
        b_in.float().contiguous(),
        w_out.float().reshape(-1).contiguous(),
        b_out.float().reshape(-1).contiguous(),
    )
    launch = TRITON_LAUNCH
    consts = {"HID": hid, "E": e, "EP": max(16, 1 << (e - 1).bit_length()), "BLOCK": launch.block}
    consts.update(DOT=launch.dot_precision, num_warps=launch.num_warps)
    return vectors, consts


def _grid(b: int, n: int) -> tuple:
    return ((n + TRITON_LAUNCH.block - 1) // TRITON_LAUNCH.block, b)


class _TritonDensity(torch.autograd.Function):
    """Fused Triton forward and backward. ``backward_kernel`` recomputes the hidden layer, accumulates the weight
    gradients atomically and scatters into the projected map's gradient (64 contiguous floats per corner); the 1x1
    projection's backward is two matmuls. Gradients for ``xy`` / ``code`` (BTS never needs them: points carry none)
    come from recomputing :func:`density_projected` under autograd."""

    @staticmethod
    def forward(ctx, features, xy, code, w_in, b_in, w_out, b_out, num_freqs, freq_factor):  # type: ignore[override]
        b, _, h, w = features.shape
        with torch.no_grad():
            proj, xy_c, code_c, vectors, consts = _prepare(features, xy, code, w_in, b_in, w_out, b_out, num_freqs)
            n = xy.shape[1]
            out = torch.empty(b, n, device=features.device, dtype=torch.float32)
            if n > 0:
                load_kernels()[0][_grid(b, n)](proj, xy_c, code_c, *vectors, out, n, h, w, float(freq_factor), **consts)
        # The projected map is kept for the backward kernel (0.5 GB at BTS's training shape) instead of recomputed;
        # not when point gradients are wanted: that backward recomputes everything under autograd.
        keep = proj if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]) else None
        ctx.save_for_backward(features, xy, code, w_in, b_in, w_out, b_out, keep)
        ctx.pe = (num_freqs, freq_factor)
        return out.to(features.dtype)

    @staticmethod
    def backward(ctx, grad_sigma):  # type: ignore[override]
        *saved, proj = ctx.saved_tensors
        needs = ctx.needs_input_grad[:7]
        if needs[1] or needs[2] or proj is None or _BACKWARD_ERRORS:
            return _recompute_backward(saved, needs, ctx.pe, grad_sigma)
        try:
            return _fused_backward(saved, proj, needs, ctx.pe, grad_sigma)
        except Exception as error:  # a kernel that does not compile on this GPU/driver must not end a run
            _BACKWARD_ERRORS.append(error)
            warnings.warn(f"bts-density: the Triton backward kernel failed ({error!r}); recomputing", stacklevel=2)
            return _recompute_backward(saved, needs, ctx.pe, grad_sigma)


_BACKWARD_ERRORS: list = []
"""Errors of the backward kernel in this process; after the first, every backward recomputes."""


def triton_backward_errors() -> list:
    """Errors of the Triton backward kernel so far in this process (empty while it works)."""
    return list(_BACKWARD_ERRORS)


def _fused_backward(saved, proj, needs, pe, grad_sigma):
    """Gradients of every input but ``xy`` / ``code`` through ``backward_kernel`` (``proj``: the forward's map)."""
    features, xy, code, w_in, b_in, w_out, b_out = saved
    num_freqs, freq_factor = pe
    b, c, h, w = features.shape
    with torch.no_grad():
        vectors, consts = mlp_kernel_vectors(c, w_in, b_in, w_out, b_out, num_freqs)
        xy_c, code_c = _point_arguments(xy, code)
        n = xy.shape[1]
        hid, ep = consts["HID"], consts["EP"]
        split = TRITON_LAUNCH.backward_split
        programs = (n + consts["BLOCK"] * split - 1) // (consts["BLOCK"] * split)
        dproj = torch.zeros(b, h, w, hid, device=features.device, dtype=torch.float32)
        parts = torch.zeros(max(1, b * programs), ep * hid + 2 * hid + 1, device=features.device, dtype=torch.float32)
        if n > 0:
            load_kernels()[1][(programs, b)](
                proj, xy_c, code_c, *vectors, grad_sigma.float().contiguous(), dproj, parts,
                n, h, w, float(freq_factor), SPLIT=split, **consts,
            )  # fmt: skip
        summed = parts.sum(dim=0)  # [dW_pe (EP x HID) | db_in | dw_out | db_out]
        dwpe = summed[: ep * hid].reshape(ep, hid)
        dbin, dwout, dbout = summed[ep * hid : ep * hid + hid], summed[ep * hid + hid : -1], summed[-1:]
        # The 1x1 projection's backward as matmuls over [B, H, W, .] rows: ``d_features`` comes out channels-last,
        # the layout of the bf16 training encoder's convolutions, and a channels-last ``features`` is read in place.
        w_f = w_in[:, :c].float()
        d_features = (dproj @ w_f).permute(0, 3, 1, 2) if needs[0] else None
        d_w_in = None
        if needs[3]:
            d_w_f = dproj.reshape(-1, hid).t() @ features.float().permute(0, 2, 3, 1).reshape(-1, c)
            d_w_in = torch.cat([d_w_f, dwpe[: consts["E"]].t()], dim=1).to(w_in.dtype)
    return (
        d_features.to(features.dtype) if d_features is not None else None,
        None,
        None,
        d_w_in,
        dbin.to(b_in.dtype) if needs[4] else None,
        dwout.reshape(w_out.shape).to(w_out.dtype) if needs[5] else None,
        dbout.reshape(b_out.shape).to(b_out.dtype) if needs[6] else None,
        None,
        None,
    )


def _recompute_backward(saved, needs, pe, grad_sigma):
    """Gradients by recomputing :func:`density_projected` under autograd (any input, including ``xy``)."""
    with torch.enable_grad():
        inputs = [t.detach().requires_grad_(need) for t, need in zip(saved, needs, strict=True)]
        sigma = density_projected(*inputs, *pe)
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


def resolve_fast_path(path: str, device: torch.device) -> DensityFn:
    """The density function for ``path`` on ``device``.

    ``"auto"``: the Triton kernels on CUDA where Triton imports, else the twin (bit-for-bit the unfused computation,
    so every CPU run is the twin). On an H200 (docs/benchmarks.md, seventh session) the kernels at their tuned
    launch settings take 17.7 ms for forward + backward at the training shape against the twin's 41.4 ms, and 1.2 ms
    against 6.5 ms for a 32,768-ray render pass. ``"triton"`` off CUDA falls back to the twin unless
    ``TRITON_INTERPRET=1``.

    Raises:
        ValueError: unknown ``path``.
    """
    if path not in FAST_PATHS:
        raise ValueError(f"fast_path must be one of {FAST_PATHS}, got {path!r}")
    cuda = device.type == "cuda"
    if path == "auto":
        return density_triton if cuda and triton_available() else density_unfused
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
