"""Run under ``TRITON_INTERPRET=1`` by ``test_bts_render_kernel.py``: the kernels' quadrant sine against fp64 and
``encoding_product``'s tile against the fp32 twin."""

from typing import no_type_check

import numpy as np
import torch
import triton
import triton.language as tl

from bts_studio.core.positional_encoding import encoding_width, positional_encoding
from bts_studio.methods.bts.triton_kernels import SINE_EXACT_RANGE, encoding_product, sine_by_quadrant


@triton.jit
@no_type_check
def sine_kernel(x_ptr, out_ptr, QUARTER: tl.constexpr, N: tl.constexpr):
    offsets = tl.arange(0, N)
    x = tl.load(x_ptr + offsets)
    tl.store(out_ptr + offsets, sine_by_quadrant(x, tl.full([N], QUARTER, tl.int32)))


@triton.jit
@no_type_check
def encoding_kernel(c_ptr, wpe_ptr, bin_ptr, out_ptr, freq_factor, E: tl.constexpr, EP: tl.constexpr, B: tl.constexpr):
    rows = tl.arange(0, B)
    c0 = tl.load(c_ptr + rows * 3)
    c1 = tl.load(c_ptr + rows * 3 + 1)
    c2 = tl.load(c_ptr + rows * 3 + 2)
    _, encoded = encoding_product(c0, c1, c2, wpe_ptr, bin_ptr, freq_factor, 16, E, EP, "ieee")
    tl.store(out_ptr + rows[:, None] * EP + tl.arange(0, EP)[None, :], encoded)


def encoding_errors() -> dict:
    """``encoding_product``'s encoded tile against ``core.positional_encoding`` (the fp32 twin), for coordinates in
    the range of real samples (the quadrant sine) and past the reduction's exact range (libdevice's fallback)."""
    torch.manual_seed(0)
    e, ep, b, freq_factor = encoding_width(3, 6), 64, 16, 1.5
    wpe, bias = torch.zeros(ep, 16), torch.zeros(16)
    result = {}
    for label, scale in (("samples", 1.2), ("behind_camera", 1e4)):
        c = (torch.rand(b, 3) * 2 - 1) * scale
        out = torch.empty(b, ep)
        encoding_kernel[(1,)](c, wpe, bias, out, freq_factor, E=e, EP=ep, B=b)
        reference = positional_encoding(c, 6, freq_factor).double()  # the twin: fp32 products, as the kernel
        result[label] = float((out[:, :e].double() - reference).abs().max())
        result[f"{label}_padding"] = float(out[:, e:].abs().max())
    return result


def errors() -> dict:
    """Largest absolute error against fp64 ``sin`` / ``cos`` of the same fp32 inputs, near and far ranges."""
    n = 4096
    limit = float(SINE_EXACT_RANGE.value) - 1.0
    near = torch.cat([torch.linspace(-100.0, 100.0, n - 8), torch.tensor([0.0, 1e-30, -1e-7, 0.785398, 2.356194])])
    near = torch.cat([near, torch.tensor([3.1415927, 1e-3, -50.0])])
    far = torch.linspace(-limit, limit, n)
    result = {}
    for label, x in (("near", near), ("far", far)):
        x64 = x.double().numpy()
        for quarter, reference in ((0, np.sin(x64)), (1, np.cos(x64))):
            out = torch.empty_like(x)
            sine_kernel[(1,)](x, out, QUARTER=quarter, N=n)
            result[f"{label}_{'cos' if quarter else 'sin'}"] = float(np.abs(out.double().numpy() - reference).max())
    return result


if __name__ == "__main__":
    print({**errors(), **encoding_errors()})
