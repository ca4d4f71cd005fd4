"""Tier 1: the density paths (unfused twin, projected, Triton) agree in value and gradient."""

import os

import pytest
import torch

from bts_studio.core.fused_density import density_projected, density_unfused
from bts_studio.methods.bts.triton_density import (
    path_agreement,
    random_density_inputs,
    resolve_fast_path,
    triton_available,
    values_and_grads,
)

NUM_FREQS, FREQ_FACTOR = 6, 1.5


def test_projected_path_equals_the_unfused_twin_in_value_and_gradient():
    inputs = random_density_inputs(
        dtype=torch.float64,
    )
    sigma, grads = values_and_grads(density_unfused, inputs)
    sigma_p, grads_p = values_and_grads(density_projected, inputs)
    assert (sigma > 0).all()
    torch.testing.assert_close(sigma_p, sigma, rtol=1e-12, atol=1e-12)
    for grad_p, grad in zip(grads_p, grads, strict=True):
        torch.testing.assert_close(grad_p, grad, rtol=1e-10, atol=1e-12)


def test_projected_path_passes_gradcheck_including_the_sample_coordinates():
    inputs = random_density_inputs(dtype=torch.float64, b=1, c=3, h=3, w=4, n=6, hidden=4)
    inputs[1][0, :4] = torch.tensor([[0.1, -0.3], [0.7, 0.2], [-0.45, 0.55], [0.3, 0.9]], dtype=torch.float64)
    inputs[1] = inputs[1].clamp(-0.95, 0.95)  # gradcheck needs points away from kinks (pixel centres, border)
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(lambda *args: density_projected(*args, NUM_FREQS, FREQ_FACTOR), leaves)


def test_path_agreement_reports_zero_for_a_path_against_itself():
    agreement = path_agreement(density_unfused, density_unfused, random_density_inputs())
    assert set(agreement) >= {"sigma_max_rel", "grad_features_max_rel", "grad_w_in_max_rel"}
    assert max(agreement.values()) == 0.0


def test_auto_uses_the_twin_on_the_cpu_and_unknown_paths_are_refused():
    cpu = torch.device("cpu")
    assert resolve_fast_path("auto", cpu) is density_unfused
    assert resolve_fast_path("projected", cpu) is density_projected
    if os.environ.get("TRITON_INTERPRET") != "1":
        assert resolve_fast_path("triton", cpu) is density_unfused  # no CUDA: the twin
    with pytest.raises(ValueError, match="fast_path must be one of"):
        resolve_fast_path("cuda-magic", cpu)


TRITON_CHECK = """
import torch
from bts_studio.core.fused_density import density_unfused
from bts_studio.methods.bts import triton_density as td
inputs = td.random_density_inputs(dtype=torch.float32, c=8, h=6, w=9, n=150, hidden=16)
agreement = td.path_agreement(td.density_triton, density_unfused, inputs)  # fused forward and backward kernels
print(agreement)
assert agreement["sigma_max_rel"] < 1e-5 and max(agreement.values()) < 1e-4, agreement
assert not td._BACKWARD_ERRORS, td._BACKWARD_ERRORS
channels_last = [inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:]]  # the bf16 encoder's layout
agreement = td.path_agreement(td.density_triton, density_unfused, channels_last)
print(agreement)
assert agreement["sigma_max_rel"] < 1e-5 and max(agreement.values()) < 1e-4, agreement
xy = inputs[1].clone().requires_grad_(True)  # point gradients: the recompute path
td.density_triton(inputs[0], xy, *inputs[2:], 6, 1.5).sum().backward()
xy_ref = inputs[1].clone().requires_grad_(True)
density_unfused(inputs[0], xy_ref, *inputs[2:], 6, 1.5).sum().backward()
torch.testing.assert_close(xy.grad, xy_ref.grad, rtol=1e-4, atol=1e-5)
print("triton-ok")
"""


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_triton_kernel_matches_the_twin_under_the_interpreter(run_in_triton_interpreter):
    """Forward and backward kernels run on the CPU through Triton's interpreter (TRITON_INTERPRET=1, read when the
    kernels are defined, hence a fresh process); the GPU bench runs the same comparison compiled
    (benchmarks/gpu_speed.sh)."""
    run_in_triton_interpreter(TRITON_CHECK, "triton-ok")


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and Triton")
def test_compiled_triton_kernels_match_the_twin_on_cuda():
    """The compiled forward and backward kernels (the interpreter test above never compiles); a kernel that fails
    falls back with a warning at run time, so the test also asserts that no fallback happened."""
    from bts_studio.methods.bts import triton_density as td

    inputs = td.random_density_inputs(device="cuda", c=16, h=12, w=20, n=4096, hidden=64)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    try:
        agreement = path_agreement(td.density_triton, density_unfused, inputs)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert not td.triton_backward_errors(), td.triton_backward_errors()
    channels_last = [inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:]]  # the bf16 encoder's
    agreement_cl = path_agreement(td.density_triton, density_unfused, channels_last)
    assert max(agreement_cl.values()) < 1e-2, agreement_cl
    # The positional-encoding GEMM takes TF32 inputs (TritonLaunch.dot_precision): sigma within ~4e-4 of fp32.
    assert agreement["sigma_max_rel"] < 2e-3 and max(agreement.values()) < 1e-2, agreement
