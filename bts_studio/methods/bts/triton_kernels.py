"""Triton kernels of ``triton_density.py`` (imported lazily: Triton is only needed where they run).

A separate module because Triton resolves the helper ``hidden_layer`` through the kernels' module globals.
``TRITON_INTERPRET=1`` must be set before this module is first imported (the CPU test does so in a subprocess).
"""

from typing import no_type_check

import triton
import triton.language as tl


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def hidden_layer(
    proj_ptr,
    xy_ptr,
    code_ptr,
    wpe_ptr,
    bin_ptr,
    batch,
    offs,
    mask,
    N,
    H,
    W,
    freq_factor,
    HID: tl.constexpr,
    E: tl.constexpr,
    EP: tl.constexpr,
    DOT: tl.constexpr,
):
    """Pre-activation of the hidden layer for a block of samples, plus what the backward scatters with."""
    row = batch * N + offs
    x = tl.load(xy_ptr + row * 2, mask=mask, other=0.0)
    y = tl.load(xy_ptr + row * 2 + 1, mask=mask, other=0.0)
    c0 = tl.load(code_ptr + row * 3, mask=mask, other=0.0)
    c1 = tl.load(code_ptr + row * 3 + 1, mask=mask, other=0.0)
    c2 = tl.load(code_ptr + row * 3 + 2, mask=mask, other=0.0)
    gathered, p00, p01, p10, p11, w00, w01, w10, w11 = bilinear_gather(proj_ptr, batch, x, y, mask, H, W, HID)
    pe_part, encoded = encoding_product(c0, c1, c2, wpe_ptr, bin_ptr, freq_factor, HID, E, EP, DOT)
    return gathered + pe_part, encoded, p00, p01, p10, p11, w00, w01, w10, w11


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def corner_weights(x, y, H, W):
    """``grid_sample`` (bilinear, border, ``align_corners=False``) at grid coordinates ``x, y``: the four corner
    pixels ``(y0, x0, y1, x1)`` and the weights ``tx, ty`` of the second corner in each axis."""
    # pixel = ((x + 1) W - 1) / 2; border padding clips it into the image.
    ix = tl.minimum(tl.maximum(((x + 1.0) * W - 1.0) * 0.5, 0.0), W - 1.0)
    iy = tl.minimum(tl.maximum(((y + 1.0) * H - 1.0) * 0.5, 0.0), H - 1.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    x1 = tl.minimum(x0 + 1, W - 1)  # its weight tx is 0 when x0 is the last column
    y1 = tl.minimum(y0 + 1, H - 1)
    return y0, x0, y1, x1, ix - x0f, iy - y0f


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def bilinear_gather(proj_ptr, batch, x, y, mask, H, W, HID: tl.constexpr):
    """The channels-last map ``[B, H, W, HID]`` read bilinearly at ``x, y`` ``[BLOCK]``: ``[BLOCK, HID]`` fp32, plus
    the corner pixel indices and weights (what the backward scatters with)."""
    y0, x0, y1, x1, tx, ty = corner_weights(x, y, H, W)
    ch = tl.arange(0, HID)
    base = batch * H * W
    p00 = base + y0 * W + x0  # pixel indices; [BLOCK, HID] offsets are formed where used (fewer live registers)
    p01 = base + y0 * W + x1
    p10 = base + y1 * W + x0
    p11 = base + y1 * W + x1
    w00 = (1.0 - ty) * (1.0 - tx)
    w01 = (1.0 - ty) * tx
    w10 = ty * (1.0 - tx)
    w11 = ty * tx
    m2 = mask[:, None]
    gathered = w00[:, None] * tl.load(proj_ptr + p00[:, None] * HID + ch[None, :], mask=m2, other=0.0)
    gathered += w01[:, None] * tl.load(proj_ptr + p01[:, None] * HID + ch[None, :], mask=m2, other=0.0)
    gathered += w10[:, None] * tl.load(proj_ptr + p10[:, None] * HID + ch[None, :], mask=m2, other=0.0)
    gathered += w11[:, None] * tl.load(proj_ptr + p11[:, None] * HID + ch[None, :], mask=m2, other=0.0)
    return gathered, p00, p01, p10, p11, w00, w01, w10, w11


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def gathered_only(proj_ptr, batch, x, y, mask, H, W, HID: tl.constexpr):
    """:func:`bilinear_gather`'s ``[BLOCK, HID]`` values alone."""
    gathered, p00, p01, p10, p11, w00, w01, w10, w11 = bilinear_gather(proj_ptr, batch, x, y, mask, H, W, HID)
    return gathered


SINE_EXACT_RANGE = tl.constexpr(65536.0)
"""Largest |x| for which :func:`sine_by_quadrant`'s reduction is exact to fp32 rounding: its quadrant count times
the 8-bit head of pi/2 stays exact below 2^16 quadrants (libdevice's own fast-path bound is 105615)."""


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def sine_by_quadrant(x, quarter):
    """``sin(x + quarter pi/2)`` for ``|x| < SINE_EXACT_RANGE`` (``quarter`` 1: ``cos(x)``), abs error ~2e-7.

    Cody-Waite reduction as CUDA's ``sinf`` fast path: ``x = q pi/2 + r``, ``|r| <= pi/4``, with ``pi/2`` split in
    three (an 8-bit head, so ``q * head`` is exact), then Taylor polynomials on ``r`` (truncation < 3e-8 for cos,
    2e-9 for sin) and the quadrant's sign and sine/cosine swap.
    """
    q = tl.floor(x * 0.6366197723675814 + 0.5)
    r = x - q * 1.5703125
    r = r - q * 4.838267923332751e-4
    r = r - q * 2.5632829192545614e-12
    r2 = r * r
    sin_r = r + r * r2 * (
        -0.16666666666666666 + r2 * (0.008333333333333333 + r2 * (-1.984126984126984e-4 + r2 * 2.755731922398589e-6))
    )
    cos_r = 1.0 + r2 * (-0.5 + r2 * (0.041666666666666664 + r2 * (-0.001388888888888889 + r2 * 2.48015873015873e-05)))
    quadrant = (q.to(tl.int32) + quarter) & 3
    value = tl.where((quadrant & 1) == 1, cos_r, sin_r)
    return tl.where(quadrant >= 2, -value, value)


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def encoded_columns(value, i, valid, freq_factor):
    """Column ``i`` of one coordinate's positional encoding, ``[c, sin(f0 c), cos(f0 c), sin(f1 c), ...]``
    (``f_k = freq_factor 2^k``), for ``value`` and ``i`` broadcast to one 2-D tile; zero where not ``valid``."""
    band = tl.maximum(i - 1, 0)
    freq = freq_factor * ((band * 0 + 1) << (band // 2)).to(tl.float32)
    scaled = value * freq
    is_cos = band % 2 == 1
    # One sine per column, cos(x) = sin(x + pi/2) by quadrant: libdevice's sin and cos both ran on every column of
    # the padded tile (two range reductions and polynomials each, the bulk of the kernel's instructions). A tile
    # with an argument past the reduction's exact range takes libdevice's (rare: points projected from behind the
    # input camera, whose coordinates reach 1e4 and more).
    waves = sine_by_quadrant(scaled, is_cos.to(tl.int32))
    if tl.max(tl.max(tl.where(valid, tl.abs(scaled), 0.0), axis=1), axis=0) >= SINE_EXACT_RANGE:
        waves = tl.where(is_cos, tl.cos(scaled), tl.sin(scaled))
    return tl.where(i == 0, value, tl.where(valid, waves, 0.0))


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def positional_encoding_tile(c0, c1, c2, freq_factor, E: tl.constexpr, EP: tl.constexpr):
    """``core.positional_encoding`` of ``(c0, c1, c2)`` ``[BLOCK]`` as a ``[BLOCK, EP]`` tile, zero past ``E``."""
    # Column j: [c0 c1 c2 | sin(f0 c) | cos(f0 c) | sin(f1 c) | ...]: coordinate dim(j), column i(j) of its own.
    j = tl.arange(0, EP)
    jj = tl.maximum(j - 3, 0)
    dim = tl.where(j < 3, j, jj % 3)
    value = tl.where(dim[None, :] == 0, c0[:, None], tl.where(dim[None, :] == 1, c1[:, None], c2[:, None]))
    i = tl.where(j < 3, 0, jj // 3 + 1)
    return encoded_columns(value, i[None, :], (j < E)[None, :], freq_factor)


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def one_pixel_hidden(
    proj_ptr,
    wpe_ptr,
    bin_ptr,
    batch,
    x0,
    y0,
    code,
    H,
    W,
    freq_factor,
    HID: tl.constexpr,
    E: tl.constexpr,
    ZP: tl.constexpr,
    XYP: tl.constexpr,
    DOT: tl.constexpr,
):
    """The hidden layer's pre-activation ``[BLOCK, HID]`` for samples that all project to the pixel ``(x0, y0)``
    (rays of the input camera) and differ only in their ``code``: the map read and the x / y columns of the
    encoding times ``W_pe`` once (one row, fp32), the code's ``E / 3`` columns per sample (a ``[BLOCK, ZP]`` tile,
    ``tl.dot``). Equal to :func:`encoding_product` + :func:`gathered_only` at ``(x0, y0, code)``: ``W_pe``'s row of
    column ``i`` of coordinate ``d`` is ``3 i + d``."""
    per = E // 3
    ch = tl.arange(0, HID)
    iz = tl.arange(0, ZP)
    encoded = encoded_columns(code[:, None], iz[None, :], (iz < per)[None, :], freq_factor)
    wz = tl.load(wpe_ptr + (3 * iz + 2)[:, None] * HID + ch[None, :], mask=(iz < per)[:, None], other=0.0)
    pre = tl.dot(encoded, wz, input_precision=DOT)
    m = tl.arange(0, XYP)  # x's and y's columns interleaved: column m // 2 of coordinate m % 2
    valid = (m < 2 * per)[:, None]
    xy_value = tl.where(m % 2 == 0, x0, y0)[:, None]
    xy_encoded = encoded_columns(xy_value, (m // 2)[:, None], valid, freq_factor)  # [XYP, 1]
    wxy = tl.load(wpe_ptr + (3 * (m // 2) + m % 2)[:, None] * HID + ch[None, :], mask=valid, other=0.0)
    row = tl.sum(xy_encoded * wxy, axis=0) + tl.load(bin_ptr + ch)
    one = tl.arange(0, 1) == 0
    pixel = gathered_only(proj_ptr, batch, tl.where(one, x0, 0.0), tl.where(one, y0, 0.0), one, H, W, HID)
    return pre + row[None, :] + pixel


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def encoding_product(
    c0, c1, c2, wpe_ptr, bin_ptr, freq_factor, HID: tl.constexpr, E: tl.constexpr, EP: tl.constexpr, DOT: tl.constexpr
):
    """``PE(c) W_pe^T + b_in`` ``[BLOCK, HID]`` and ``PE(c)`` ``[BLOCK, EP]`` (zero-padded past ``E``)."""
    encoded = positional_encoding_tile(c0, c1, c2, freq_factor, E, EP)
    ch = tl.arange(0, HID)
    j = tl.arange(0, EP)
    wpe = tl.load(wpe_ptr + j[:, None] * HID + ch[None, :], mask=(j < E)[:, None], other=0.0)
    return tl.dot(encoded, wpe, input_precision=DOT) + tl.load(bin_ptr + ch)[None, :], encoded


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def forward_kernel(
    proj_ptr,
    xy_ptr,
    code_ptr,
    wpe_ptr,
    bin_ptr,
    wout_ptr,
    bout_ptr,
    out_ptr,
    N,
    H,
    W,
    freq_factor,
    HID: tl.constexpr,
    E: tl.constexpr,
    EP: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    batch = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    pre, _, _, _, _, _, _, _, _, _ = hidden_layer(
        proj_ptr, xy_ptr, code_ptr, wpe_ptr, bin_ptr, batch, offs, mask, N, H, W, freq_factor, HID, E, EP, DOT
    )
    tl.store(out_ptr + batch * N + offs, density_from_hidden(pre, wout_ptr, bout_ptr, HID), mask=mask)


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def density_from_hidden(pre, wout_ptr, bout_ptr, HID: tl.constexpr):
    """``softplus(w_out . relu(pre) + b_out)`` per row of ``pre`` ``[BLOCK, HID]``."""
    ch = tl.arange(0, HID)
    logit = tl.sum(tl.maximum(pre, 0.0) * tl.load(wout_ptr + ch)[None, :], axis=1) + tl.load(bout_ptr)
    # softplus (torch's beta 1): max(o, 0) + log1p(e), e = exp(-|o|), stable for both signs. Not log(1 + e): 1 + e
    # drops e below 6e-8, so sigma was 0 for o < -17 where torch's is exp(o), and a ray that only the last sample's
    # 1e10 interval stops (terminate_last off) rendered depth 0 instead of the far plane. The interpreter runs no
    # libdevice log1p: below e = 0.1 its series to e^6 (truncation < 1.5e-7 relative), above it log(1 + e) (rounding
    # of 1 + e < 7e-7 relative).
    e = tl.exp(-tl.abs(logit))
    series = e * (1.0 + e * (-0.5 + e * (0.3333333333333333 + e * (-0.25 + e * (0.2 - e * 0.16666666666666666)))))
    return tl.maximum(logit, 0.0) + tl.where(e < 0.1, series, tl.log(1.0 + e))


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def backward_kernel(
    proj_ptr,
    xy_ptr,
    code_ptr,
    wpe_ptr,
    bin_ptr,
    wout_ptr,
    bout_ptr,
    grad_ptr,
    dproj_ptr,
    part_ptr,
    N,
    H,
    W,
    freq_factor,
    HID: tl.constexpr,
    E: tl.constexpr,
    EP: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """Each program handles SPLIT blocks of BLOCK samples. The gather's gradient is scatter-added into the
    channels-last ``dproj`` (64 contiguous floats per corner); the weight gradients are summed in registers over the
    program's samples and written once to its row of ``part`` ``[programs, EP * HID + 2 HID + 1]`` (``dW_pe``,
    ``db_in``, ``dw_out``, ``db_out``), which the caller sums: no atomics on the 4 k weight addresses."""
    batch = tl.program_id(1).to(tl.int64)
    program = batch * tl.num_programs(0) + tl.program_id(0)
    ch = tl.arange(0, HID)
    j = tl.arange(0, EP)
    wout = tl.load(wout_ptr + ch)
    bout = tl.load(bout_ptr)
    acc_wpe = tl.zeros([EP, HID], dtype=tl.float32)
    acc_bin = tl.zeros([HID], dtype=tl.float32)
    acc_wout = tl.zeros([HID], dtype=tl.float32)
    acc_bout = tl.zeros([BLOCK], dtype=tl.float32)
    for step in range(SPLIT):
        offs = (tl.program_id(0) * SPLIT + step) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < N
        pre, encoded, p00, p01, p10, p11, w00, w01, w10, w11 = hidden_layer(
            proj_ptr, xy_ptr, code_ptr, wpe_ptr, bin_ptr, batch, offs, mask, N, H, W, freq_factor, HID, E, EP, DOT
        )
        hidden = tl.maximum(pre, 0.0)
        logit = tl.sum(hidden * wout[None, :], axis=1) + bout
        # d softplus / d logit = sigmoid(logit); rows past N carry no gradient.
        g = tl.load(grad_ptr + batch * N + offs, mask=mask, other=0.0) / (1.0 + tl.exp(-logit))
        g = tl.where(mask, g, 0.0)
        acc_wout += tl.sum(g[:, None] * hidden, axis=0)
        acc_bout += g
        dpre = tl.where(pre > 0.0, g[:, None] * wout[None, :], 0.0)
        acc_bin += tl.sum(dpre, axis=0)
        acc_wpe += tl.dot(tl.trans(encoded), dpre, input_precision=DOT)  # [EP, HID]
        m2 = mask[:, None]
        # Relaxed: Triton's default acq_rel ordering made each of these ~1 G adds per training step an ordered
        # atomic; nothing reads dproj before the kernel ends (H200: density forward + backward 24.6 -> 13.1 ms).
        tl.atomic_add(dproj_ptr + p00[:, None] * HID + ch[None, :], w00[:, None] * dpre, mask=m2, sem="relaxed")
        tl.atomic_add(dproj_ptr + p01[:, None] * HID + ch[None, :], w01[:, None] * dpre, mask=m2, sem="relaxed")
        tl.atomic_add(dproj_ptr + p10[:, None] * HID + ch[None, :], w10[:, None] * dpre, mask=m2, sem="relaxed")
        tl.atomic_add(dproj_ptr + p11[:, None] * HID + ch[None, :], w11[:, None] * dpre, mask=m2, sem="relaxed")
    row = part_ptr + program * (EP * HID + 2 * HID + 1)
    tl.store(row + j[:, None] * HID + ch[None, :], acc_wpe)
    tl.store(row + EP * HID + ch, acc_bin)
    tl.store(row + EP * HID + HID + ch, acc_wout)
    tl.store(row + EP * HID + 2 * HID, tl.sum(acc_bout, axis=0))


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def project(px, py, pz, cam_ptr, H, W, MIN_Z: tl.constexpr):
    """World points -> ``grid_sample`` coordinates ``x, y`` and camera z of one view. ``cam_ptr``: 21 floats, the
    row-major ``K`` (9) then ``w2c`` (12), as ``core.geometry.project_points`` + ``pixels_to_normalized``."""
    cx = tl.load(cam_ptr + 9) * px + tl.load(cam_ptr + 10) * py + tl.load(cam_ptr + 11) * pz + tl.load(cam_ptr + 12)
    cy = tl.load(cam_ptr + 13) * px + tl.load(cam_ptr + 14) * py + tl.load(cam_ptr + 15) * pz + tl.load(cam_ptr + 16)
    cz = tl.load(cam_ptr + 17) * px + tl.load(cam_ptr + 18) * py + tl.load(cam_ptr + 19) * pz + tl.load(cam_ptr + 20)
    divisor = tl.maximum(cz, MIN_Z)
    u = (tl.load(cam_ptr) * cx + tl.load(cam_ptr + 1) * cy + tl.load(cam_ptr + 2) * cz) / divisor
    v = (tl.load(cam_ptr + 3) * cx + tl.load(cam_ptr + 4) * cy + tl.load(cam_ptr + 5) * cz) / divisor
    return 2.0 * u / W - 1.0, 2.0 * v / H - 1.0, cz


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def density_rays_kernel(
    proj_ptr,
    wpe_ptr,
    bin_ptr,
    wout_ptr,
    bout_ptr,
    origins_ptr,
    directions_ptr,
    distances_ptr,
    cams_ptr,
    sigma_ptr,
    R,
    S,
    H,
    W,
    freq_factor,
    code_near,
    code_far,
    HID: tl.constexpr,
    E: tl.constexpr,
    EP: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK: tl.constexpr,
    MIN_Z: tl.constexpr,
    SAME_PIXEL: tl.constexpr,
    ZP: tl.constexpr,
    XYP: tl.constexpr,
):
    """``forward_kernel`` at the samples of rays: program ``p`` evaluates samples ``[j BLOCK, (j + 1) BLOCK)`` of
    ray ``p // blocks`` (``j = p % blocks``, ``blocks = ceil(S / BLOCK)``), at distances ``distances[ray, k]``; its
    points are projected into the element's input view here (``cams`` row), so no per-sample point, ``xy`` or code
    tensor exists. Per-ray values are scalars of the program (a first version indexed rays per sample with 64-bit
    divisions and ran 3.7x slower than ``forward_kernel``)."""
    blocks = tl.cdiv(S, BLOCK)
    ray = tl.program_id(0) // blocks
    k = (tl.program_id(0) % blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = k < S
    batch = (ray // R).to(tl.int64)
    ray = ray.to(tl.int64)
    t = tl.load(distances_ptr + ray * S + k, mask=mask, other=0.0)
    ox = tl.load(origins_ptr + ray * 3)
    oy = tl.load(origins_ptr + ray * 3 + 1)
    oz = tl.load(origins_ptr + ray * 3 + 2)
    dx = tl.load(directions_ptr + ray * 3)
    dy = tl.load(directions_ptr + ray * 3 + 1)
    dz = tl.load(directions_ptr + ray * 3 + 2)
    x, y, z = project(ox + dx * t, oy + dy * t, oz + dz * t, cams_ptr + batch * 42, H, W, MIN_Z)
    inverse_far = 1.0 / code_far
    code = 2.0 * (1.0 / tl.maximum(z, MIN_Z) - inverse_far) / (1.0 / code_near - inverse_far) - 1.0
    # Rays of the input camera itself project every sample to one pixel. The block's points lie on a segment; where
    # both ends are in front of the camera its image is the segment between the ends' pixels, so when those are
    # within SAME_PIXEL pixels of each other the block reads the map and encodes x and y once, at its first sample,
    # and only the code varies per sample (a third of the encoding's columns).
    first = (tl.program_id(0) % blocks) * BLOCK
    last = tl.minimum(first + BLOCK, S) - 1
    t_first = tl.load(distances_ptr + ray * S + first)
    t_last = tl.load(distances_ptr + ray * S + last)
    x0, y0, z0 = project(ox + dx * t_first, oy + dy * t_first, oz + dz * t_first, cams_ptr + batch * 42, H, W, MIN_Z)
    x1, y1, z1 = project(ox + dx * t_last, oy + dy * t_last, oz + dz * t_last, cams_ptr + batch * 42, H, W, MIN_Z)
    spread = tl.maximum(tl.abs(x1 - x0) * W, tl.abs(y1 - y0) * H) * 0.5
    if (SAME_PIXEL >= 0.0) & (spread <= SAME_PIXEL) & (z0 > MIN_Z) & (z1 > MIN_Z):
        pre = one_pixel_hidden(proj_ptr, wpe_ptr, bin_ptr, batch, x0, y0, code, H, W, freq_factor, HID, E, ZP, XYP, DOT)
    else:
        pre, _ = encoding_product(x, y, code, wpe_ptr, bin_ptr, freq_factor, HID, E, EP, DOT)
        pre += gathered_only(proj_ptr, batch, x, y, mask, H, W, HID)
    tl.store(sigma_ptr + ray * S + k, density_from_hidden(pre, wout_ptr, bout_ptr, HID), mask=mask)


@triton.jit
@no_type_check  # keeps the test suite's jaxtyping import hook off: its wrapper would hide `tl` from Triton
def composite_kernel(
    distances_ptr,
    sigma_ptr,
    origins_ptr,
    directions_ptr,
    cams_ptr,
    image_ptr,
    out_ptr,
    NR,
    R,
    S,
    H,
    W,
    HC,
    WC,
    band,
    threshold,
    RB: tl.constexpr,
    SP: tl.constexpr,
    TERMINATE_LAST: tl.constexpr,
    MIN_Z: tl.constexpr,
    LAST_DELTA: tl.constexpr,
    EPS: tl.constexpr,
):
    """Composites ``RB`` rays per program, each ray's ``S <= SP`` samples in one row of the tile (reductions and
    scans along the row): ``core.compositing``'s weights with the transmittance as ``exp`` of a cumulative sum of
    logs, depth, accumulation, the input view's outside mass, the colour view's bilinear colour, and the occupancy
    behind the median-depth surface. ``out`` row: ``[r, g, b, depth, accumulation, outside_source,
    occupancy_behind_surface, 0]``."""
    ray = tl.program_id(0).to(tl.int64) * RB + tl.arange(0, RB)
    k = tl.arange(0, SP)
    rmask = ray < NR
    m = rmask[:, None] & (k < S)[None, :]
    idx = ray[:, None] * S + k[None, :]
    t = tl.load(distances_ptr + idx, mask=m, other=0.0)
    t_next = tl.load(distances_ptr + idx + 1, mask=rmask[:, None] & (k + 1 < S)[None, :], other=0.0)
    sigma = tl.load(sigma_ptr + idx, mask=m, other=0.0)
    delta = tl.where((k + 1 < S)[None, :], t_next - t, LAST_DELTA)
    alpha = 1.0 - tl.exp(-tl.abs(delta) * tl.maximum(sigma, 0.0))
    if TERMINATE_LAST:
        alpha = tl.where((k == S - 1)[None, :], 1.0, alpha)
    alpha = tl.where(m, alpha, 0.0)
    log_survive = tl.log(1.0 - alpha + EPS)
    weights = tl.where(m, alpha * tl.exp(tl.cumsum(log_survive, axis=1) - log_survive), 0.0)
    batch = (tl.minimum(ray, NR - 1) // R)[:, None]  # clamped: the camera rows are read unmasked
    px = tl.load(origins_ptr + ray * 3, mask=rmask, other=0.0)[:, None]
    py = tl.load(origins_ptr + ray * 3 + 1, mask=rmask, other=0.0)[:, None]
    pz = tl.load(origins_ptr + ray * 3 + 2, mask=rmask, other=0.0)[:, None]
    px += tl.load(directions_ptr + ray * 3, mask=rmask, other=0.0)[:, None] * t
    py += tl.load(directions_ptr + ray * 3 + 1, mask=rmask, other=0.0)[:, None] * t
    pz += tl.load(directions_ptr + ray * 3 + 2, mask=rmask, other=0.0)[:, None] * t
    # The input-view projection again (density_rays_kernel had it): recomputing a few FMAs per sample is cheaper
    # than writing and reading an outside mask of every sample between the kernels.
    x, y, z = project(px, py, pz, cams_ptr + batch * 42, H, W, MIN_Z)
    outside = (z <= MIN_Z) | (tl.abs(x) > 1.0) | (tl.abs(y) > 1.0)
    row = out_ptr + ray * 8
    # Colour: grid_sample (bilinear, border) of the channels-last colour image, one channel at a time.
    cx, cy, _ = project(px, py, pz, cams_ptr + batch * 42 + 21, HC, WC, MIN_Z)
    y0, x0, y1, x1, tx, ty = corner_weights(cx, cy, HC, WC)
    pixels = image_ptr + batch * HC * WC * 3
    for c in tl.static_range(3):
        value = (1.0 - ty) * (1.0 - tx) * tl.load(pixels + (y0 * WC + x0) * 3 + c, mask=m, other=0.0)
        value += (1.0 - ty) * tx * tl.load(pixels + (y0 * WC + x1) * 3 + c, mask=m, other=0.0)
        value += ty * (1.0 - tx) * tl.load(pixels + (y1 * WC + x0) * 3 + c, mask=m, other=0.0)
        value += ty * tx * tl.load(pixels + (y1 * WC + x1) * 3 + c, mask=m, other=0.0)
        tl.store(row + c, tl.sum(weights * value, axis=1), mask=rmask)
    tl.store(row + 3, tl.sum(weights * t, axis=1), mask=rmask)
    tl.store(row + 4, tl.sum(weights, axis=1), mask=rmask)
    tl.store(row + 5, tl.sum(tl.where(outside, weights, 0.0), axis=1), mask=rmask)
    # The surface is the first sample whose accumulated weight reaches 0.5 (core.compositing.occupancy_behind_surface).
    below_half = tl.sum(((tl.cumsum(weights, axis=1) < 0.5) & m).to(tl.int32), axis=1)
    surface_index = tl.minimum(below_half, S - 1)
    surface = tl.sum(tl.where(k[None, :] == surface_index[:, None], t, 0.0), axis=1)[:, None]
    in_band = m & (t > surface) & (t <= surface + band)
    occupied = tl.sum((in_band & (sigma > threshold)).to(tl.float32), axis=1)
    tl.store(row + 6, occupied / tl.maximum(tl.sum(in_band.to(tl.float32), axis=1), 1.0), mask=rmask)
