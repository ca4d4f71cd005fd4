"""Tier 1: bts-density's fast paths inside the model: the same depths and gradients as the twin, CPU fallback."""

import warnings

import pytest
import torch

import bts_studio.methods.bts.density_field as density_field_module
import bts_studio.methods.bts.triton_density as triton_density
from bts_studio.core.fused_density import density_unfused
from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.methods.bts.triton_density import density_triton, resolve_fast_path

H, W = 64, 96
K = torch.tensor([[60.0, 0.0, 48.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]])


def _field(fast_path: str) -> BTSDensityField:
    torch.manual_seed(0)
    return BTSDensityField(num_layers=18, feature_dim=16, hidden_dim=16, fast_path=fast_path).double()


def _density_and_grads(field: BTSDensityField):
    torch.manual_seed(1)
    image = torch.rand(1, 3, H, W, dtype=torch.float64)
    points = torch.rand(1, 300, 3, dtype=torch.float64) * torch.tensor([20.0, 6.0, 40.0], dtype=torch.float64)
    points = points - torch.tensor([10.0, 3.0, 2.0], dtype=torch.float64)  # some behind the camera, some outside
    w2c = torch.eye(4, dtype=torch.float64)[None, :3]
    field.train()
    sigma, outside = field.density(points, field.encode(image), K.double()[None], w2c)
    (sigma * torch.linspace(0.5, 1.5, sigma.numel(), dtype=sigma.dtype)).sum().backward()
    grads = {name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None}
    return sigma.detach(), outside, grads


def test_projected_path_gives_the_twins_density_and_gradients_through_the_whole_field():
    sigma, outside, grads = _density_and_grads(_field("twin"))
    sigma_p, outside_p, grads_p = _density_and_grads(_field("projected"))
    assert outside.any() and not outside.all()
    assert torch.equal(outside, outside_p)
    torch.testing.assert_close(sigma_p, sigma, rtol=1e-10, atol=1e-12)
    assert grads.keys() == grads_p.keys() and len(grads) > 50  # encoder and MLP
    for name in grads:
        torch.testing.assert_close(grads_p[name], grads[name], rtol=1e-8, atol=1e-12, msg=name)


def test_auto_is_triton_on_cuda_the_twin_on_the_cpu_and_keeps_the_fp32_encoder(monkeypatch):
    field = _field("auto")
    assert not field.uses_bf16_encoder(torch.device("cpu"))
    # Decided by device type (nothing is allocated): auto is the Triton kernel with the fp32 encoder on CUDA (the
    # H200 sweep of docs/benchmarks.md), the bf16 encoder stays opt-in (slower there, outside the agreement bar).
    assert not field.uses_bf16_encoder(torch.device("cuda"))
    assert resolve_fast_path("auto", torch.device("cuda")) is density_triton
    monkeypatch.setattr(triton_density, "triton_available", lambda: False)
    assert resolve_fast_path("auto", torch.device("cuda")) is density_unfused  # no Triton: the twin
    monkeypatch.undo()
    assert not _field("twin").uses_bf16_encoder(torch.device("cuda"))
    assert _field("triton").uses_bf16_encoder(torch.device("cuda"))  # an explicit fast path keeps auto's bf16 encoder
    sigma, _, grads = _density_and_grads(field)
    sigma_twin, _, grads_twin = _density_and_grads(_field("twin"))
    assert torch.equal(sigma, sigma_twin)  # bit for bit: the CPU default is the twin
    assert all(torch.equal(grads[name], grads_twin[name]) for name in grads)


def test_a_failing_triton_kernel_warns_once_and_falls_back_to_the_projected_path(monkeypatch):
    """A kernel that cannot run (here: CPU tensors without Triton's interpreter) must not end a run."""
    monkeypatch.setattr(density_field_module, "resolve_fast_path", lambda *args: density_triton)
    field = _field("triton")
    with torch.no_grad(), pytest.warns(UserWarning, match="Triton density kernel failed"):
        features = field.encode(torch.rand(1, 3, H, W, dtype=torch.float64))
        points = torch.rand(1, 50, 3, dtype=torch.float64) * 10 + 1
        w2c = torch.eye(4, dtype=torch.float64)[None, :3]
        sigma, _ = field.density(points, features, K.double()[None], w2c)
    assert field.triton_error is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the projected path is used from now on
        again, _ = field.density(points, features, K.double()[None], w2c)
    twin = _field("twin")
    twin.load_state_dict(field.state_dict())
    with torch.no_grad():
        expected, _ = twin.density(points, features, K.double()[None], w2c)
    torch.testing.assert_close(sigma, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(again, expected, rtol=1e-10, atol=1e-12)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="fast_path"):
        BTSDensityField(num_layers=18, fast_path="warp")
    with pytest.raises((ValueError, TypeError), match="encoder_precision"):  # the test run's jaxtyping hook or ours
        BTSDensityField(num_layers=18, encoder_precision="fp8")


def test_the_bf16_channels_last_encoder_returns_fp32_features_close_to_fp32_and_trains(monkeypatch):
    """The CUDA-only encoder setting, exercised on the CPU (autocast has a CPU bf16 mode) by forcing it on."""
    torch.manual_seed(0)
    field = BTSDensityField(num_layers=18, feature_dim=16, hidden_dim=16).train()
    image = torch.rand(2, 3, H, W)
    reference = field.encode(image, flip=True)
    monkeypatch.setattr(BTSDensityField, "uses_bf16_encoder", lambda self, device: True)
    features = field.encode(image, flip=True)
    assert features.dtype == torch.float32 and features.is_contiguous() and features.shape == reference.shape
    assert field.encoder.encoder.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert (features - reference).abs().mean() < 0.05 * reference.abs().mean()  # bf16 rounding, not a bug
    features.square().mean().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in field.encoder.parameters() if p.requires_grad
    )


def test_the_decoder_upsamples_in_its_input_dtype_under_autocast(monkeypatch):
    """Every decoder upsampling runs with autocast off, in the activations' own dtype: CUDA autocast would run
    ``upsample_nearest2d`` in fp32 (a full-resolution fp32 copy per stage under the bf16 encoder, seen in an H200
    profile). Nearest upsampling copies values, so the result equals the fp32 one exactly."""
    from bts_studio.methods.bts import encoder as encoder_module

    calls = []
    interpolate = encoder_module.F.interpolate

    def spy(x, *args, **kwargs):
        calls.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(encoder_module.F, "interpolate", spy)
    torch.manual_seed(0)
    encoder = encoder_module.BTSEncoder(num_layers=18, feature_dim=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(torch.rand(1, 3, 64, 64))
    assert len(calls) == 5 and all(not enabled for _, enabled in calls), calls
    x = torch.randn(2, 4, 5, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = encoder_module.upsample_nearest_2x(x)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 4, 10, 12)
    assert torch.equal(y.float(), interpolate(x.float(), scale_factor=2.0, mode="nearest"))
