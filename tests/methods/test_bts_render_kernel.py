"""The fused inference render kernel (``methods/bts/rendering.py``) against its twin, and which one runs where."""

import ast
import os
import subprocess
import sys
from dataclasses import replace
from unittest import mock

import pytest
import torch

from bts_studio.core.sampling import disparity_linear_samples
from bts_studio.methods.bts import triton_density
from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.methods.bts.rendering import (
    RENDER_KERNEL_ERRORS,
    one_pixel_tiles,
    render_samples_triton,
    render_samples_unfused,
    resolve_render_path,
)
from bts_studio.methods.bts.triton_density import triton_available


def check_render_kernel(device: str, rtol: float) -> None:
    """The fused kernel against the pure-PyTorch twin (``fast_path="twin"``: with "triton" the reference's density
    would be the Triton density kernel, sharing its helpers) on random inputs: two conditioning elements, rays inside
    and outside the source frustum and rays from the source camera's centre, a colour view 0.5 m beside the source,
    40 samples (a full density block of 32 and a masked one; a 64-wide compositing row), 90 rays (a masked
    compositing tile); fp32 and fp16 maps."""
    torch.manual_seed(0)
    net = BTSDensityField(num_layers=18, feature_dim=8, hidden_dim=16, code_near=1.0, code_far=20.0, fast_path="twin")
    with torch.no_grad():
        for p in net.mlp_coarse.parameters():
            p.mul_(3.0)  # densities from ~0 to ~10: weights spread over the ray
        net.mlp_coarse.lin_out.bias.fill_(0.5)
    net = net.to(device)
    b, rays, samples = 2, 45, 40
    h, w, hc, wc = 6, 9, 6, 9  # BTSConditioning: colour images are the feature map's size (pixel-aligned features)
    K = torch.tensor([[9.0, 0.0, 4.5], [0.0, 9.0, 3.0], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone()
    Kc = torch.tensor([[11.0, 0.0, 5.5], [0.0, 11.0, 3.5], [0.0, 0.0, 1.0]]).expand(b, 1, 3, 3).clone()
    w2c = torch.eye(4)[:3].expand(b, 3, 4).clone()
    w2c[1, :, 3] = torch.tensor([0.2, -0.1, 0.3])
    w2c_colour = w2c[:, None].clone()
    w2c_colour[:, 0, 0, 3] += 0.5
    conditioning = BTSConditioning(torch.randn(b, 8, h, w), K, w2c, torch.rand(b, 1, 3, hc, wc), Kc, w2c_colour)
    conditioning = conditioning.to(device)
    origins = 0.1 * torch.randn(b, rays, 3)
    # The second half of each element's rays start at its input camera's centre (every sample on one pixel: the
    # density kernel reads the map once per block there).
    origins[0, rays // 2 :] = 0.0
    origins[1, rays // 2 :] = -w2c[1, :, 3]
    origins = origins.reshape(b * rays, 3).to(device)
    directions = torch.randn(b * rays, 3) * 0.6 + torch.tensor([0.0, 0.0, 1.0])
    directions = torch.nn.functional.normalize(directions, dim=-1).to(device)
    _, distances = disparity_linear_samples(b * rays, samples, 1.0, 20.0, True, device=device)
    settings = [(True, 16, "fp32", 1e-3), (False, 16, "fp32", 1e-3), (True, 4, "fp32", -1.0), (True, 16, "fp16", 1e-3)]
    for terminate_last, composite_rays, map_dtype, same_pixel in settings:
        launch = replace(
            triton_density.TRITON_LAUNCH,
            composite_rays=composite_rays,
            render_map_dtype=map_dtype,
            same_pixel=same_pixel,
        )
        tolerance = rtol if map_dtype == "fp32" else max(rtol, 2e-3)
        with torch.no_grad(), mock.patch.object(triton_density, "TRITON_LAUNCH", launch):
            fused = render_samples_triton(net, origins, directions, distances, conditioning, terminate_last)
            twin = render_samples_unfused(net, origins, directions, distances, conditioning, terminate_last)
        assert not RENDER_KERNEL_ERRORS, RENDER_KERNEL_ERRORS
        assert set(fused) == set(twin), (set(fused), set(twin))
        for name in ("rgb", "depth", "accumulation", "outside_source"):
            assert fused[name].shape == twin[name].shape, name
            torch.testing.assert_close(fused[name], twin[name], rtol=tolerance, atol=10 * tolerance, msg=name)
        assert 0.05 < float(twin["outside_source"].mean()) < 0.95  # both inside and outside points were rendered
        assert float(twin["depth"].std()) > 0.5  # weights are spread along the rays, not all at one sample
        agree = (fused["occupancy_behind_surface"] - twin["occupancy_behind_surface"]).abs() < 1e-6
        assert float(agree.float().mean()) >= 0.97, float(agree.float().mean())
        assert float(twin["occupancy_behind_surface"].max()) > 0


def check_render_kernel_edge_cases(device: str, rtol: float) -> None:
    """The fused kernel against the pure-PyTorch twin (``fast_path="twin"``: no Triton density on the reference side)
    where tiles are ragged or the numbers extreme: 1, 33 and 100 samples (a 16-wide row of one sample, density blocks
    of 32 with a masked tail, a 128-wide row), 1 and 5 rays per element (masked compositing tiles), 1 and 3
    conditioning elements; rays from each input camera's centre through its image's corners and border (the read-once
    case), rays pointing behind the camera and rays outside the frustum; densities of ~1e4 (alpha 1 from the first
    sample: the transmittance underflows) and of ~2e-9 with ``terminate_last`` off, where only the last sample's
    ``LAST_DELTA`` interval stops the ray (found 2026-11-30: the kernels' softplus ``log(1 + exp(o))`` was 0 below
    o ~ -17, where torch's is ``exp(o)``, so those rays rendered depth 0 instead of the far plane)."""
    h, w = 6, 9
    # 0.01 px inside the image's edges: a point exactly on an edge is inside or outside by the last bit of its
    # projection, which the kernel (FMAs) and the twin (a matmul when this was found, now rounded products) round
    # differently (on the H200 and in Triton 3.6's interpreter the corner rays' outside_source differed by up to a
    # whole ray's weight).
    corners = torch.tensor([[0.01, 0.01], [w - 0.01, h - 0.01], [0.01, h / 2], [w / 3, h - 0.01], [w / 2, h / 2]])
    cases = [  # (elements, rays per element, samples, densities, terminate_last)
        (3, 5, 1, "spread", True),
        (3, 5, 1, "spread", False),
        (1, 1, 33, "spread", True),
        (3, 5, 33, "huge", True),
        (1, 5, 100, "spread", False),
        (3, 5, 100, "tiny", False),
    ]
    for b, rays, samples, densities, terminate_last in cases:
        torch.manual_seed(samples + b)
        net = BTSDensityField(num_layers=18, feature_dim=8, hidden_dim=16, code_near=1.0, code_far=20.0)
        net.fast_path = "twin"
        with torch.no_grad():
            for p in net.mlp_coarse.parameters():
                p.mul_(0.0 if densities == "tiny" else 3.0)
            net.mlp_coarse.lin_out.bias.fill_({"spread": 0.5, "huge": 1e4, "tiny": -20.0}[densities])
        K = torch.tensor([[9.0, 0.0, 4.5], [0.0, 9.0, 3.0], [0.0, 0.0, 1.0]]).expand(b, 3, 3).clone()
        w2c = torch.eye(4)[:3].expand(b, 3, 4).clone()
        for i in range(1, b):  # turned about y and moved: world and camera frames differ
            c, s = torch.cos(torch.tensor(0.3 * i)), torch.sin(torch.tensor(0.3 * i))
            w2c[i, :, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
            w2c[i, :, 3] = torch.tensor([0.2 * i, -0.1, 0.3])
        w2c_colour = w2c[:, None].clone()
        w2c_colour[:, 0, 0, 3] += 0.5
        conditioning = BTSConditioning(
            torch.randn(b, 8, h, w), K, w2c, torch.rand(b, 1, 3, h, w), K[:, None].clone(), w2c_colour
        )
        # Per element: rays 0-1 from the camera's centre through image corners, 2 from the centre backwards, 3 from
        # near the centre towards the image's side (outside the frustum), 4 from near the centre forwards.
        pixels = corners[torch.arange(rays) % len(corners)]
        directions = torch.cat([pixels, torch.ones(rays, 1)], dim=-1) @ torch.linalg.inv(K[0]).T
        directions[2:3] = torch.tensor([0.1, -0.2, -1.0])
        directions[3:4] = torch.tensor([3.0, 0.2, 1.0])
        directions = torch.nn.functional.normalize(directions, dim=-1)
        rotation, translation = w2c[:, :, :3], w2c[:, :, 3]
        centres = -(rotation.transpose(1, 2) @ translation[..., None])[..., 0]  # [b, 3]
        origins = centres[:, None].repeat(1, rays, 1)
        origins[:, 3:] += 0.1 * torch.randn(b, max(0, rays - 3), 3)
        directions = (directions[None] @ rotation).reshape(b * rays, 3)  # camera -> world: R^T d
        _, distances = disparity_linear_samples(b * rays, samples, 1.0, 20.0, True)
        conditioning = conditioning.to(device)
        origins, directions, distances = origins.reshape(b * rays, 3).to(device), directions.to(device), distances
        distances, net = distances.to(device), net.to(device)
        with torch.no_grad():
            fused = render_samples_triton(net, origins, directions, distances, conditioning, terminate_last)
            twin = render_samples_unfused(net, origins, directions, distances, conditioning, terminate_last)
        assert not RENDER_KERNEL_ERRORS, RENDER_KERNEL_ERRORS
        case = f"{b} x {rays} rays, {samples} samples, {densities} densities, terminate_last {terminate_last}"
        for name in ("rgb", "depth", "accumulation", "outside_source"):
            msg = f"{name}, {case}"
            torch.testing.assert_close(fused[name], twin[name], rtol=rtol, atol=10 * rtol, msg=msg)
        mismatches = (fused["occupancy_behind_surface"] - twin["occupancy_behind_surface"]).abs() > 1e-6
        assert int(mismatches.sum()) <= 1, case
        if terminate_last:
            assert float(twin["accumulation"].min()) > 0.99, case  # every ray terminates
        if densities == "tiny":  # nothing stops the ray before its last sample (alpha ~1 - exp(-20))
            assert float((twin["depth"] - distances[:, -1:]).abs().max()) < 1e-3, case


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_fused_render_kernel_matches_the_twin_under_the_interpreter():
    """``render_kernel`` on the CPU through Triton's interpreter (read when the kernels are defined, hence a fresh
    process)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root}
    code = (
        f"import runpy; runpy.run_path({os.path.abspath(__file__)!r})['check_render_kernel']('cpu', 1e-4); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_fused_render_kernel_edge_cases_under_the_interpreter():
    """:func:`check_render_kernel_edge_cases` through Triton's interpreter (a fresh process, as above)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root}
    code = (
        f"import runpy; runpy.run_path({os.path.abspath(__file__)!r})['check_render_kernel_edge_cases']('cpu', 1e-4);"
        " print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and Triton")
def test_fused_render_kernel_matches_the_twin_on_cuda():
    """Compiled: the density's ``W_pe`` product is a TF32 ``tl.dot`` (sigma within ~4e-4 of fp32)."""
    check_render_kernel("cuda", 2e-3)
    check_render_kernel_edge_cases("cuda", 2e-3)


def test_the_twin_renders_on_the_cpu():
    for path in ("auto", "twin", "projected"):
        net = BTSDensityField(num_layers=18, feature_dim=8, hidden_dim=16, fast_path=path)
        assert resolve_render_path(net, torch.device("cpu")) is render_samples_unfused


def test_training_and_several_colour_views_run_the_twin(monkeypatch):
    """Calls the kernel does not cover run the twin: autograd through the MLP, several colour views."""
    from bts_studio.methods.bts import rendering

    def no_kernel(*args, **kwargs):
        raise AssertionError("the fused kernel must not run here")

    monkeypatch.setattr(rendering, "mlp_kernel_arguments", no_kernel)
    torch.manual_seed(0)
    net = BTSDensityField(num_layers=18, feature_dim=8, hidden_dim=16, fast_path="triton")
    K = torch.tensor([[[9.0, 0.0, 4.5], [0.0, 9.0, 3.0], [0.0, 0.0, 1.0]]])
    w2c = torch.eye(4)[:3][None]
    conditioning = BTSConditioning(
        torch.randn(1, 8, 6, 9),
        K,
        w2c,
        torch.rand(1, 2, 3, 6, 9),
        K[:, None].expand(1, 2, 3, 3),
        w2c[:, None].expand(1, 2, 3, 4),
    )
    origins, directions = torch.zeros(5, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3)
    _, distances = disparity_linear_samples(5, 8, 1.0, 20.0, False)
    outputs = render_samples_triton(net, origins, directions, distances, conditioning)  # grad on: the twin
    assert outputs["depth"].requires_grad
    torch.testing.assert_close(
        outputs["depth"], render_samples_unfused(net, origins, directions, distances, conditioning)["depth"]
    )
    with torch.no_grad():  # no autograd, but two colour views
        render_samples_triton(net, origins, directions, distances, conditioning)


KERNEL_INTS = {"N", "H", "W", "R", "S", "HC", "WC", "NR"}


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
@pytest.mark.parametrize("name", ["forward_kernel", "backward_kernel", "density_rays_kernel", "composite_kernel"])
def test_kernels_compile_for_an_sm90_gpu_without_one(name):
    """Compiles each kernel to a cubin for an H100/H200 (sm_90) on the CPU, under this suite's jaxtyping import
    hook: the interpreter tests never compile, and a kernel that does not compile only warns and falls back at run
    time (found 2026-11-30: the hook's wrapper hid ``tl`` from Triton, so GPU test runs had tested the fallback)."""
    import triton
    from triton.backends.compiler import GPUTarget

    from bts_studio.methods.bts import triton_kernels

    fn = getattr(triton_kernels, name)
    consts = dict(HID=64, E=39, EP=64, DOT="tf32", BLOCK=32)
    if name == "backward_kernel":
        consts["SPLIT"] = 32
    if name == "density_rays_kernel":
        consts.update(MIN_Z=1e-3, SAME_PIXEL=1e-3, **one_pixel_tiles(39))
    if name == "composite_kernel":
        consts = dict(RB=16, SP=64, TERMINATE_LAST=True, MIN_Z=1e-3, LAST_DELTA=1e10, EPS=1e-10)
    signature = {
        arg: "constexpr"
        if arg in consts
        else "*fp32"
        if arg.endswith("_ptr")
        else "i32"
        if arg in KERNEL_INTS
        else "fp32"
        for arg in fn.arg_names
    }
    constexprs = {(fn.arg_names.index(arg),): value for arg, value in consts.items()}
    compiled = triton.compile(triton.compiler.ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))
    assert "cubin" in compiled.asm or "ptx" in compiled.asm


def test_an_unknown_render_map_dtype_is_refused_when_the_settings_are_made():
    with pytest.raises(ValueError, match="render_map_dtype must be fp32 or fp16"):
        triton_density.TritonLaunch(render_map_dtype="bf16")


@pytest.mark.skipif(not triton_available(), reason="Triton is not installed (it ships with Linux builds of torch)")
def test_the_kernels_quadrant_sine_and_its_large_argument_fallback_under_the_interpreter():
    """``sine_by_quadrant`` (one sine per positional-encoding column, cos by quadrant) against fp64 up to its exact
    range, and ``encoding_product``'s tile against the fp32 twin ``core.positional_encoding`` for sample coordinates
    and for coordinates past that range (points behind the input camera: libdevice's sine must take over; with the
    quadrant sine alone the error there is ~1.6e-2). ``sine_kernel_check.py`` in a fresh interpreter process."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root}
    check = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sine_kernel_check.py")
    code = f"import runpy; g = runpy.run_path({check!r}); print({{**g['errors'](), **g['encoding_errors']()}})"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=root
    )
    assert result.returncode == 0, result.stdout + result.stderr
    errors = ast.literal_eval(result.stdout.strip().splitlines()[-1])  # the dict of floats the check prints
    assert errors["near_sin"] < 2e-7 and errors["near_cos"] < 2e-7, errors  # |x| <= 100: PE arguments of samples
    assert errors["far_sin"] < 2e-6 and errors["far_cos"] < 2e-6, errors  # the interpreter does not fuse FMAs
    assert errors["samples"] < 2e-7 and errors["behind_camera"] < 2e-7, errors
    assert errors["samples_padding"] == 0.0 and errors["behind_camera_padding"] == 0.0, errors
