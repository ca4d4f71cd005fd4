"""Triton kernels of ``triton_density.py`` (imported lazily: Triton is only needed where they run).

A separate module because Triton resolves the helper ``hidden_layer`` through the kernels' module globals.
``TRITON_INTERPRET=1`` must be set before this module is first imported (the CPU test does so in a subprocess).
"""

import triton
import triton.language as tl


@triton.jit
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
    # grid_sample, align_corners=False: pixel = ((x + 1) W - 1) / 2; border padding clips it into the image.
    ix = tl.minimum(tl.maximum(((x + 1.0) * W - 1.0) * 0.5, 0.0), W - 1.0)
    iy = tl.minimum(tl.maximum(((y + 1.0) * H - 1.0) * 0.5, 0.0), H - 1.0)
    x0f = tl.floor(ix)
    y0f = tl.floor(iy)
    tx = ix - x0f
    ty = iy - y0f
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    x1 = tl.minimum(x0 + 1, W - 1)  # its weight tx is 0 when x0 is the last column
    y1 = tl.minimum(y0 + 1, H - 1)
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
    pre = gathered + tl.dot(encoded, wpe, input_precision=DOT) + tl.load(bin_ptr + ch)[None, :]
    return pre, encoded, p00, p01, p10, p11, w00, w01, w10, w11


@triton.jit
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
    ch = tl.arange(0, HID)
    logit = tl.sum(tl.maximum(pre, 0.0) * tl.load(wout_ptr + ch)[None, :], axis=1) + tl.load(bout_ptr)
    # softplus (torch's beta 1): max(o, 0) + log(1 + exp(-|o|)), stable for both signs.
    sigma = tl.maximum(logit, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(logit)))
    tl.store(out_ptr + batch * N + offs, sigma, mask=mask)


@triton.jit
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
        tl.atomic_add(dproj_ptr + p00[:, None] * HID + ch[None, :], w00[:, None] * dpre, mask=m2)
        tl.atomic_add(dproj_ptr + p01[:, None] * HID + ch[None, :], w01[:, None] * dpre, mask=m2)
        tl.atomic_add(dproj_ptr + p10[:, None] * HID + ch[None, :], w10[:, None] * dpre, mask=m2)
        tl.atomic_add(dproj_ptr + p11[:, None] * HID + ch[None, :], w11[:, None] * dpre, mask=m2)
    row = part_ptr + program * (EP * HID + 2 * HID + 1)
    tl.store(row + j[:, None] * HID + ch[None, :], acc_wpe)
    tl.store(row + EP * HID + ch, acc_bin)
    tl.store(row + EP * HID + HID + ch, acc_wout)
    tl.store(row + EP * HID + 2 * HID, tl.sum(acc_bout, axis=0))
