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


def test_auto_is_triton_on_cuda_the_twin_on_the_cpu_and_trains_the_encoder_in_bf16_on_cuda_only(monkeypatch):
    field = _field("auto")
    assert not field.uses_bf16_encoder(torch.device("cpu"))
    # Decided by device type, mode and grad mode (nothing is allocated): on CUDA auto trains the encoder in bf16
    # (29.7 vs 52.5 ms per training batch on an H200) and infers in fp32 (the depth-agreement bar with the twin).
    field.train()
    assert field.uses_bf16_encoder(torch.device("cuda"))
    with torch.no_grad():
        assert not field.uses_bf16_encoder(torch.device("cuda"))
    field.eval()
    assert not field.uses_bf16_encoder(torch.device("cuda"))
    assert resolve_fast_path("auto", torch.device("cuda")) is density_triton
    monkeypatch.setattr(triton_density, "triton_available", lambda: False)
    assert resolve_fast_path("auto", torch.device("cuda")) is density_unfused  # no Triton: the twin
    field.train()
    assert not field.uses_bf16_encoder(torch.device("cuda"))  # ... whose encoder stays fp32 too
    monkeypatch.undo()
    field.eval()
    assert not _field("twin").train().uses_bf16_encoder(torch.device("cuda"))  # the twin is the fp32 reference
    assert _field("triton").eval().uses_bf16_encoder(torch.device("cuda")) is False
    explicit = BTSDensityField(num_layers=18, feature_dim=16, hidden_dim=16, encoder_precision="bf16").eval()
    assert explicit.uses_bf16_encoder(torch.device("cuda"))  # bf16 asked for: inference too
    fp32 = BTSDensityField(num_layers=18, feature_dim=16, hidden_dim=16, encoder_precision="fp32").train()
    assert not fp32.uses_bf16_encoder(torch.device("cuda"))
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
    assert features.dtype == torch.float32 and features.shape == reference.shape
    assert features.is_contiguous(memory_format=torch.channels_last)  # read in place by the Triton path
    # The fp32 weights keep their layout: the fp32 inference path (and its CUDA graph) is untouched by training.
    assert all(p.is_contiguous() for p in field.encoder.parameters())
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


@pytest.mark.parametrize("size", [(2, 2), (3, 5), (6, 7)])
def test_reflection_padding_keeps_channels_last_and_equals_reflection_pad2d(size):
    """The encoder's padding of a channels-last activation stays channels-last (CUDA's ``reflection_pad2d`` returns
    NCHW, and the convolution then copied it back: 10.8 ms per training batch on an H200) with the same values and
    gradient as ``nn.ReflectionPad2d(1)``, down to the smallest side it accepts (2)."""
    from bts_studio.methods.bts.encoder import reflection_pad_1

    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    padded = reflection_pad_1(x)
    assert padded.is_contiguous(memory_format=torch.channels_last) and not padded.is_contiguous()
    torch.testing.assert_close(padded, torch.nn.ReflectionPad2d(1)(x), rtol=0, atol=0)
    assert torch.autograd.gradcheck(reflection_pad_1, (x,))
    weights = torch.randn(padded.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad((padded * weights).sum(), x)
    (expected,) = torch.autograd.grad((torch.nn.ReflectionPad2d(1)(x) * weights).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    nchw = x.detach().contiguous()
    padded_nchw = reflection_pad_1(nchw)  # NCHW stays NCHW (the fp32 path is unchanged)
    assert padded_nchw.is_contiguous() and torch.equal(padded_nchw, torch.nn.ReflectionPad2d(1)(nchw))
