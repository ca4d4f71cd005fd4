"""Triton kernels of ``triton_jitter.py`` (imported lazily: Triton is only needed where they run).

Per pixel, each group's four ColorJitter operations in its drawn order, with torchvision's formulas
(``transforms/v2/functional/_color.py``: ``adjust_brightness``, ``adjust_contrast``, ``adjust_saturation``,
``adjust_hue`` with ``_rgb_to_hsv`` / ``_hsv_to_rgb``). ``TRITON_INTERPRET=1`` must be set before this module is first
imported (the CPU test does so in a subprocess).
"""

from typing import no_type_check

import triton
import triton.language as tl

# constexpr: a compiled kernel may read no other kind of global (the interpreter allows it; the test compiles too)
GREY_R = tl.constexpr(0.2989)
GREY_G = tl.constexpr(0.587)
GREY_B = tl.constexpr(0.114)


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def _clamp01(x):
    return tl.minimum(tl.maximum(x, 0.0), 1.0)


@triton.jit
@no_type_check
def _blend(x, other, f):
    # torchvision's _blend: image1.mul(ratio).add_(image2, alpha=1 - ratio).clamp_(0, 1)
    return _clamp01(x * f + other * (1.0 - f))


@triton.jit
@no_type_check
def _hue(r, g, b, f):
    # _rgb_to_hsv
    maxc = tl.maximum(tl.maximum(r, g), b)
    minc = tl.minimum(tl.minimum(r, g), b)
    eqc = maxc == minc
    spread = maxc - minc
    s = spread / tl.where(eqc, 1.0, maxc)
    divisor = tl.where(eqc, 1.0, spread)
    rc = (maxc - r) / divisor
    gc = (maxc - g) / divisor
    bc = (maxc - b) / divisor
    neq_r = maxc != r
    eq_g = maxc == g
    hg = tl.where(eq_g & neq_r, rc + 2.0 - bc, 0.0)
    hr = tl.where(neq_r, 0.0, bc - gc)
    hb = tl.where(neq_r & ~eq_g, gc + 4.0 - rc, 0.0)
    h = (hr + hg + hb) * (1.0 / 6.0) + 1.0
    h = h - tl.floor(h)  # fmod(h, 1) for h >= 0
    # adjust_hue: h.add_(hue_factor).remainder_(1.0)
    h = h + f
    h = h - tl.floor(h)
    # _hsv_to_rgb
    v = maxc
    h6 = h * 6.0
    i_f = tl.floor(h6)
    frac = h6 - i_f
    i = i_f.to(tl.int32) % 6
    sxv = s * v
    p = _clamp01(v - sxv)
    q = _clamp01(v - sxv * frac)
    t = _clamp01(sxv * frac + p)
    r_out = tl.where(i == 0, v, tl.where(i == 1, q, tl.where(i == 2, p, tl.where(i == 3, p, tl.where(i == 4, t, v)))))
    g_out = tl.where(i == 0, t, tl.where(i == 1, v, tl.where(i == 2, v, tl.where(i == 3, q, p))))
    b_out = tl.where(i == 0, p, tl.where(i == 1, p, tl.where(i == 2, t, tl.where(i == 3, v, tl.where(i == 4, v, q)))))
    return r_out, g_out, b_out


@triton.jit
@no_type_check
def _operation(r, g, b, op, f, mean):
    """Operation ``op`` (0 brightness, 1 contrast with the image's grey ``mean``, 2 saturation, 3 hue)."""
    grey = r * GREY_R + g * GREY_G + b * GREY_B
    hue_r, hue_g, hue_b = _hue(r, g, b, f)
    other = tl.where(op == 1, mean, grey)  # contrast blends with the mean, saturation with the pixel's grey
    blend_r, blend_g, blend_b = _blend(r, other, f), _blend(g, other, f), _blend(b, other, f)
    out_r = tl.where(op == 0, _clamp01(r * f), tl.where(op == 3, hue_r, blend_r))
    out_g = tl.where(op == 0, _clamp01(g * f), tl.where(op == 3, hue_g, blend_g))
    out_b = tl.where(op == 0, _clamp01(b * f), tl.where(op == 3, hue_b, blend_b))
    return out_r, out_g, out_b


@triton.jit
@no_type_check
def grey_sums_kernel(
    image_ptr, order_ptr, factor_ptr, partial_ptr, V, P, stride_n, stride_c, stride_p, BLOCK: tl.constexpr
):
    """Per image and block of pixels, the sum of the grey values after the operations that precede contrast in its
    group's order (written to ``partial[n, block]``; summed in a fixed order afterwards, so the means, unlike
    atomics, are the same on every run)."""
    n = tl.program_id(0)
    group = n // V
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    base = image_ptr + n.to(tl.int64) * stride_n
    pixel = offs.to(tl.int64) * stride_p
    r = tl.load(base + pixel, mask=mask, other=0.0)
    g = tl.load(base + stride_c + pixel, mask=mask, other=0.0)
    b = tl.load(base + 2 * stride_c + pixel, mask=mask, other=0.0)
    contrast_at = 4
    for position in tl.static_range(4):
        op = tl.load(order_ptr + group * 4 + position)
        contrast_at = tl.where(op == 1, position, contrast_at)
    for position in tl.static_range(4):
        op = tl.load(order_ptr + group * 4 + position)
        f = tl.load(factor_ptr + group * 4 + op)
        new_r, new_g, new_b = _operation(r, g, b, op, f, 0.0)
        active = position < contrast_at
        r = tl.where(active, new_r, r)
        g = tl.where(active, new_g, g)
        b = tl.where(active, new_b, b)
    grey = tl.where(mask, r * GREY_R + g * GREY_G + b * GREY_B, 0.0)
    tl.store(partial_ptr + n * tl.num_programs(1) + tl.program_id(1), tl.sum(grey, axis=0))


@triton.jit
@no_type_check
def jitter_kernel(
    image_ptr, out_ptr, order_ptr, factor_ptr, sums_ptr, V, P, inv_P, stride_n, stride_c, stride_p, BLOCK: tl.constexpr
):
    """The group's four operations in its order; contrast blends with the image's grey mean from ``sums``. ``out``
    has the images' strides."""
    n = tl.program_id(0)
    group = n // V
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    base = n.to(tl.int64) * stride_n
    pixel = offs.to(tl.int64) * stride_p
    r = tl.load(image_ptr + base + pixel, mask=mask, other=0.0)
    g = tl.load(image_ptr + base + stride_c + pixel, mask=mask, other=0.0)
    b = tl.load(image_ptr + base + 2 * stride_c + pixel, mask=mask, other=0.0)
    mean = tl.load(sums_ptr + n) * inv_P
    for position in tl.static_range(4):
        op = tl.load(order_ptr + group * 4 + position)
        f = tl.load(factor_ptr + group * 4 + op)
        r, g, b = _operation(r, g, b, op, f, mean)
    tl.store(out_ptr + base + pixel, r, mask=mask)
    tl.store(out_ptr + base + stride_c + pixel, g, mask=mask)
    tl.store(out_ptr + base + 2 * stride_c + pixel, b, mask=mask)
