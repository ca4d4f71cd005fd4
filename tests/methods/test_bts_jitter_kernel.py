"""The Triton colour jitter (``methods/bts/triton_jitter.py``) against its twin ``apply_colour_jitter_batch`` and the
per-group torchvision reference: under Triton's interpreter on the CPU, compiled on CUDA, and its fallback."""

import warnings

import pytest
import torch

from bts_studio.methods.bts import triton_jitter
from bts_studio.methods.bts.augmentation import (
    ColourJitterDraw,
    ColourJitterRanges,
    apply_colour_jitter_batch,
    apply_colour_jitter_groups,
    draw_colour_jitter,
)
from bts_studio.methods.bts.triton_density import triton_available

JITTER_CHECK = """
import torch
from bts_studio.methods.bts.augmentation import ColourJitterDraw, ColourJitterRanges, apply_colour_jitter_groups
from bts_studio.methods.bts.augmentation import draw_colour_jitter
from bts_studio.methods.bts.triton_jitter import colour_jitter_triton, triton_jitter_errors
generator = torch.Generator().manual_seed(0)
images = torch.rand(8, 2, 3, 20, 60, generator=generator)  # 1,200 pixels: two programs per image
images[0, 0] = 0.5  # grey: saturation 0
images[1, 1, :, :2] = torch.tensor([0.2, 0.7, 0.2])[:, None, None]  # green is the largest channel
draws = [draw_colour_jitter(ColourJitterRanges(), generator) for _ in range(8)]
draws[2] = ColourJitterDraw([3, 2, 1, 0], 0.8, 1.2, 0.8, -0.1)  # contrast after two operations
draws[3] = ColourJitterDraw([1, 0, 2, 3], 1.2, 0.8, 1.2, 0.1)  # contrast first
images[4, 0, :, :3] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # red: hue 0, which -1e-9 wraps to 1.0 (sector 6)
draws[4] = ColourJitterDraw([0, 1, 2, 3], 1.0, 1.0, 1.0, -1e-9)
reference = apply_colour_jitter_groups(images, draws)
for layout in ("contiguous", "permuted"):  # NCHW, and the datamanager's decode order (pixels, then channels)
    source = images if layout == "contiguous" else images.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    out = colour_jitter_triton(source, draws)
    assert not triton_jitter_errors(), triton_jitter_errors()
    assert out.stride() == source.stride(), "written in the images' own layout, not copied"
    difference = float((out - reference).abs().max())
    print(layout, "max abs", difference)
    assert difference < 2e-6, difference
print("jitter-ok")
"""


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_the_triton_jitter_matches_torchvision_under_the_interpreter(run_in_triton_interpreter):
    """Both kernels run through Triton's interpreter. The check fails with contrast's mean taken before the
    preceding operations, or with a wrong hue sector (tried)."""
    run_in_triton_interpreter(JITTER_CHECK, "jitter-ok")


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_both_kernels_compile_for_an_h200_without_a_gpu():
    """The interpreter runs kernels that a compiler rejects (e.g. a global that is not ``tl.constexpr``, which made
    both kernels fail to compile before any GPU run, tried): compile them ahead of time for sm_90 on the CPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from bts_studio.methods.bts import triton_jitter_kernels as kernels

    types = {"order_ptr": "*i32", "inv_P": "fp32", "BLOCK": "constexpr"}
    types.update({name: "i32" for name in ("V", "P", "stride_n", "stride_c", "stride_p")})
    types.update({name: "*fp32" for name in ("image_ptr", "out_ptr", "factor_ptr", "partial_ptr", "sums_ptr")})
    kernel_list = (kernels.grey_sums_kernel, kernels.jitter_kernel)
    signatures = {kernel: {name: types[name] for name in kernel.arg_names} for kernel in kernel_list}
    for kernel, signature in signatures.items():
        source = ASTSource(fn=kernel, signature=signature, constexprs={"BLOCK": triton_jitter.BLOCK})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
        assert "cubin" in compiled.asm, kernel


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and Triton")
def test_the_compiled_triton_jitter_matches_the_twin_on_cuda():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(16, 8, 3, 96, 320, generator=generator).cuda()
    draws = [draw_colour_jitter(ColourJitterRanges(), generator) for _ in range(16)]
    out = triton_jitter.colour_jitter_triton(images, draws)
    assert not triton_jitter.triton_jitter_errors(), triton_jitter.triton_jitter_errors()
    difference = float((out - apply_colour_jitter_batch(images, draws)).abs().max())
    print("triton jitter vs twin, max abs", difference)
    assert difference < 5e-6, difference


def test_a_failing_kernel_warns_once_and_the_twin_runs_from_then_on(monkeypatch):
    calls = []

    def failing(images, draws):
        calls.append(1)
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(triton_jitter, "_launch", failing)
    monkeypatch.setattr(triton_jitter, "_ERRORS", [])
    monkeypatch.setattr(triton_jitter, "triton_available", lambda: True)
    images = torch.rand(2, 1, 3, 5, 7)
    draws = [ColourJitterDraw([0, 1, 2, 3], 1.1, 0.9, 1.2, 0.05), ColourJitterDraw([3, 2, 1, 0], 0.9, 1.1, 0.8, -0.05)]
    reference = apply_colour_jitter_groups(images, draws)
    with pytest.warns(UserWarning, match="colour-jitter kernels failed"):
        first = triton_jitter.colour_jitter_triton(images, draws)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = triton_jitter.colour_jitter_triton(images, draws)
    assert len(calls) == 1 and len(triton_jitter.triton_jitter_errors()) == 1
    torch.testing.assert_close(first, reference, atol=2e-6, rtol=0)
    torch.testing.assert_close(second, reference, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="B draws"):
        triton_jitter.colour_jitter_triton(images, draws[:1])
