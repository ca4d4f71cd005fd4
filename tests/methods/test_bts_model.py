"""Tier 1-2: bts-density's encoder, density field, model outputs and losses, inference API and official import.

No dataset needed: a random image with a known pinhole camera is the source.
"""

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import yaml
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox

from bts_studio.core.geometry import opencv_to_opengl
from bts_studio.core.positional_encoding import positional_encoding
from bts_studio.methods.bts.augmentation import (
    ColourJitterDraw,
    ColourJitterRanges,
    apply_colour_jitter,
    apply_colour_jitter_batch,
    apply_colour_jitter_groups,
    draw_colour_jitter,
)
from bts_studio.methods.bts.batch import BTSBatch
from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.methods.bts.density_field import BTSDensityField
from bts_studio.methods.bts.encoder import BTSEncoder
from bts_studio.methods.bts.inference import density_in_camera, depth_map, encode_source
from bts_studio.methods.bts.model import BTSModelConfig

H, W = 64, 96
K = torch.tensor([[60.0, 0.0, 48.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]])


def _pose(yaw: float = 0.3, t=(1.0, -0.5, 2.0)) -> torch.Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    pose[:3, 3] = torch.tensor(t)
    return pose


def _camera(c2w_cv: torch.Tensor, metadata=None) -> Cameras:
    return Cameras(
        camera_to_worlds=opencv_to_opengl(c2w_cv[:3])[None],
        fx=K[0, 0].reshape(1, 1),
        fy=K[1, 1].reshape(1, 1),
        cx=K[0, 2].reshape(1, 1),
        cy=K[1, 2].reshape(1, 1),
        width=torch.tensor([[W]]),
        height=torch.tensor([[H]]),
        camera_type=CameraType.PERSPECTIVE,
        metadata=metadata,
    )


@pytest.fixture(scope="module")
def model():
    config = BTSModelConfig(
        resnet_layers=18, search_torch_hub_cache=False, num_samples=16, eval_num_rays_per_chunk=1000
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
    return built.eval()


def test_encoder_keeps_the_input_resolution_and_rejects_tiny_images():
    encoder = BTSEncoder(num_layers=18, feature_dim=16)
    assert encoder(torch.rand(2, 3, 64, 96)).shape == (2, 16, 64, 96)
    assert encoder(torch.rand(1, 3, 70, 100)).shape == (1, 16, 70, 100)  # not a multiple of 32
    with pytest.raises(ValueError, match="too small"):
        encoder(torch.rand(1, 3, 32, 96))


def test_missing_imagenet_weights_warn_once_and_do_not_crash(tmp_path):
    encoder = BTSEncoder(num_layers=18)
    with pytest.warns(UserWarning, match="from scratch"):
        assert encoder.load_imagenet_weights(tmp_path / "absent.pth", search_torch_hub=False) is None
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="bad.pth"):
        assert encoder.load_imagenet_weights(tmp_path / "bad.pth", search_torch_hub=False) is None
    good = tmp_path / "resnet18.pth"
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), good)
    assert encoder.load_imagenet_weights(good, search_torch_hub=False) == good


def test_density_follows_the_official_feature_and_code_layout():
    """softplus(lin_out(relu(lin_in([feature(x, y), PE(x, y, z_code)])))), as BTSNet.sample_features + ResnetFC."""
    field = BTSDensityField(num_layers=18, feature_dim=8).double()
    features = torch.rand(1, 8, H, W, dtype=torch.float64)
    points = torch.tensor([[[0.4, -0.3, 5.0], [-1.0, 0.2, 12.0], [30.0, 0.0, 4.0]]], dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)[None, :3]
    sigma, outside = field.density(points, features, K.double()[None], w2c)
    # Official: BTS-normalised intrinsics, xy in [-1, 1], inverse-depth code with near 3, far 80.
    fx, fy, cx, cy = 2 * K[0, 0] / W, 2 * K[1, 1] / H, 2 * K[0, 2] / W - 1, 2 * K[1, 2] / H - 1
    x, y, z = points[0].unbind(-1)
    xy = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    z_code = 2 * (1 / z - 1 / 80) / (1 / 3 - 1 / 80) - 1
    sampled = F.grid_sample(features, xy[None, None], padding_mode="border", align_corners=False)[0, :, 0].T
    mlp_in = torch.cat([sampled, positional_encoding(torch.cat([xy, z_code[:, None]], -1))], dim=-1)
    expected = F.softplus(field.mlp_coarse.lin_out(torch.relu(field.mlp_coarse.lin_in(mlp_in))))[:, 0]
    assert torch.allclose(sigma[0], expected)
    assert outside[0].tolist() == [False, False, True]


def test_self_view_render_reproduces_the_source_and_chunks_agree(model):
    image, c2w = torch.rand(3, H, W), _pose()
    source = encode_source(model, image, K, c2w)
    camera = _camera(c2w)
    outputs = model.render_camera(camera, source)
    assert set(outputs) >= {"rgb", "depth", "z_depth", "accumulation", "outside_source"}
    assert outputs["rgb"].shape == (H, W, 3) and outputs["depth"].shape == (H, W, 1)
    assert torch.allclose(outputs["rgb"].permute(2, 0, 1), image, atol=1e-4)  # colours come from the source itself
    assert torch.allclose(outputs["accumulation"], torch.ones(()), atol=1e-5)  # the last sample terminates
    assert (outputs["depth"] >= 3 - 1e-4).all() and (outputs["depth"] <= 80 + 1e-3).all()
    assert (outputs["z_depth"] <= outputs["depth"] + 1e-5).all() and outputs["depth"].std() > 0
    model.config.eval_num_rays_per_chunk = H * W
    single = model.render_camera(camera, source)
    model.config.eval_num_rays_per_chunk = 1000
    assert torch.allclose(single["depth"], outputs["depth"], atol=1e-4)  # eval sampling is deterministic
    z = depth_map(model, source)
    assert z.shape == (H, W) and torch.allclose(z, outputs["z_depth"][..., 0], atol=1e-4)


def test_render_camera_equals_rendering_the_ray_bundle(model):
    """render_camera's tensor path (sync-free rays once per frame, conditioning once, plain tensors per chunk) gives
    exactly the outputs of the path before issue 17 (nerfstudio's generate_rays, its RayBundle through render_rays),
    at any chunk size: every output (rgb, depth, z_depth, accumulation, ...) bit for bit."""
    from bts_studio.methods.common.rendering import render_bundle_in_chunks

    image, c2w = torch.rand(3, H, W), _pose()
    source = encode_source(model, image, K, c2w)
    camera = _camera(c2w)
    bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
    reference = render_bundle_in_chunks(lambda chunk: model.render_rays_from_source(chunk, source), bundle, 1000, "cpu")
    for chunk in (1000, 2500, H * W):
        model.config.eval_num_rays_per_chunk = chunk
        outputs = model.render_camera(camera, source)
        assert set(outputs) == set(reference)
        for name, value in reference.items():
            assert torch.equal(outputs[name], value), name
    model.config.eval_num_rays_per_chunk = 1000


def test_full_frame_render_makes_no_host_syncs(model, monkeypatch):
    """Issue 17: one full-frame render_camera (7 chunks here) dispatches no op that makes the host wait for the
    device (``.item()``, ``bool(tensor)``, ``nonzero``, a tensor from Python values: ``utils.profiling.SYNC_OPS``).
    Its one device-to-host read is ``camera_header`` (the image size, one ``.tolist()``: no aten op on the CPU, so
    counted here by call)."""
    from bts_studio.methods.common import cameras
    from bts_studio.utils.profiling import count_ops

    c2w = _pose()
    source = encode_source(model, torch.rand(3, H, W), K, c2w)
    camera = _camera(c2w)
    reads = []
    header = cameras.camera_header
    monkeypatch.setattr(cameras, "camera_header", lambda cam: reads.append(cam) or header(cam))
    with torch.no_grad():
        counts = count_ops(lambda: model.render_camera(camera, source))
    assert counts["sync_ops"] == 0, counts["sync_by_op"]
    assert len(reads) == 1


def test_density_in_camera_matches_world_queries(model):
    c2w = _pose()
    source = encode_source(model, torch.rand(3, H, W), K, c2w)
    points_cam = torch.tensor([[0.5, 0.2, 6.0], [-2.0, 1.0, 20.0], [0.0, 0.0, -3.0]])
    sigma, outside = density_in_camera(model, source, points_cam, return_outside=True)
    world = points_cam @ c2w[:3, :3].T + c2w[:3, 3]
    expected, expected_outside = model.net.density(world[None], source.features[None], K[None], source.w2c[None, :3])
    assert torch.allclose(sigma, expected[0], atol=1e-5) and outside.tolist() == expected_outside[0].tolist()
    assert outside.tolist() == [False, False, True] and (sigma >= 0).all()


def test_image_metrics_include_kitti_depth_metrics(model):
    image, c2w = torch.rand(3, H, W), _pose()
    source = encode_source(model, image, K, c2w)
    outputs = model.render_camera(_camera(c2w), source)
    lidar = torch.zeros(H, W, 1)
    lidar[::4, ::4] = 10.0
    metrics, images = model.get_image_metrics_and_images(
        outputs, {"image": image.permute(1, 2, 0), "lidar_depth": lidar}
    )
    assert metrics["psnr"] > 40 and {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"} <= set(metrics)
    assert images["img"].shape == (H, 2 * W, 3) and images["depth"].shape == (H, W, 3)


def test_sources_resolve_from_camera_metadata_then_cam_idx_then_default(model):
    camera = _camera(torch.eye(4), {"bts_split": torch.tensor([[1]]), "bts_image_index": torch.tensor([[4]])})
    assert model.resolve_source(camera) == ("test", 4)
    assert model.resolve_source(_camera(torch.eye(4), {"cam_idx": 7})) == ("train", 7)
    assert model.resolve_source(_camera(torch.eye(4))) == ("train", model.config.default_source_index)
    with pytest.raises(RuntimeError, match="source bank"):
        model.get_outputs_for_camera(_camera(torch.eye(4)))


def _loss_batch(groups: int = 2, views: int = 2, patch: int = 8) -> BTSBatch:
    """A training batch of one ``patch x patch`` patch per group at rows 10.., columns 20.. of random images."""
    c2w = torch.stack([_pose(0.0, (0.0, 0.0, 0.0)), _pose(0.1, (0.5, 0.0, 1.0))])
    w2c = torch.linalg.inv(c2w)[:, :3]
    images = torch.rand(groups, 3, H, W)
    camera = Cameras(
        camera_to_worlds=opencv_to_opengl(c2w[:, :3]),
        fx=K[0, 0],
        fy=K[1, 1],
        cx=K[0, 2],
        cy=K[1, 2],
        width=W,
        height=H,
        camera_type=CameraType.PERSPECTIVE,
    )
    ys, xs = torch.meshgrid(torch.arange(patch) + 10, torch.arange(patch) + 20, indexing="ij")
    coords = torch.stack([ys, xs], -1).reshape(-1, 2).repeat(groups, 1) + 0.5
    indices = torch.arange(groups).repeat_interleave(patch * patch)[:, None]
    return BTSBatch(
        rays=camera.generate_rays(camera_indices=indices, coords=coords).reshape((groups, 1, patch, patch)),
        image=torch.rand(groups, 1, patch, patch, 3),
        input_image=images,
        input_K=K.expand(groups, 3, 3),
        input_w2c=w2c,
        render_images=torch.rand(groups, views, 3, H, W),
        render_K=K.expand(groups, views, 3, 3),
        render_w2c=w2c[:, None].expand(groups, views, 3, 4).clone(),
        render_missing=torch.tensor([[False, True], [False, False]]),
        patch_pixels=torch.stack([ys, xs], -1).expand(groups, 1, patch, patch, 2),
    )


def test_training_loss_reaches_encoder_and_mlp(model):
    model.train()
    model.zero_grad()
    groups, views, patch = 2, 2, 8
    batch = _loss_batch(groups, views, patch)
    conditioning = model.condition_on_groups(batch)
    assert isinstance(conditioning, BTSConditioning) and conditioning.with_loss_outputs
    outputs = model(batch)
    assert outputs["rgb_views"].shape == (groups, 1, patch, patch, views, 3)
    assert outputs["invalid_mass"].shape == (groups, 1, patch, patch, views)
    assert (outputs["invalid_mass"][0, ..., 1] > 0.999).all()  # a missing view is all invalid
    losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
    assert set(losses) == {"photometric_loss", "smoothness_loss"}
    sum(losses.values()).backward()
    assert model.net.mlp_coarse.lin_in.weight.grad.abs().sum() > 0
    assert model.net.encoder.encoder.encoder.conv1.weight.grad.abs().sum() > 0
    model.eval()


def test_the_opt_in_distortion_loss_is_the_loss_functions_and_reaches_the_mlp(model):
    """``distortion_weight`` (issue 18's opt-in, 0 in BTS): the loss dict gains ``distortion_loss`` =
    weight * ``ray_distortion_loss`` of the outputs' weights and sample distances, and its gradient reaches the
    density MLP; at 0 the dict is BTS's."""
    from bts_studio.methods.bts.losses import ray_distortion_loss

    batch = _loss_batch()
    model.train()
    model.zero_grad()
    try:
        outputs = model(batch)
        assert outputs["weights"].shape == outputs["sample_distances"].shape
        assert outputs["weights"].shape[:-1] == outputs["depth"].shape[:-1]
        assert torch.allclose(outputs["weights"].sum(dim=-1, keepdim=True), outputs["accumulation"])
        assert set(model.get_loss_dict(outputs, batch)) == {"photometric_loss", "smoothness_loss"}
        model.config.distortion_weight = 0.01
        losses = model.get_loss_dict(outputs, batch)
        samples = model.config.num_samples
        expected = ray_distortion_loss(
            outputs["weights"].reshape(-1, samples),
            outputs["sample_distances"].reshape(-1, samples),
            model.config.near,
            model.config.far,
        )
        assert torch.allclose(losses["distortion_loss"], 0.01 * expected) and float(expected) > 0
        losses["distortion_loss"].backward()
        assert model.net.mlp_coarse.lin_in.weight.grad.abs().sum() > 0
    finally:
        model.config.distortion_weight = 0.0
        model.zero_grad()
        model.eval()


def test_automask_drops_patches_an_unwarped_render_frame_reproduces(model):
    """Group 0's first render frame shows the loss patch's colours at the patch's own pixels (an un-warped frame
    explains it; its other frame is missing): with ``automask`` its photometric loss is dropped, group 1's (whose
    frames show the negative there) is not."""
    batch = _loss_batch()
    ys, xs = batch.patch_pixels[0, 0, ..., 0], batch.patch_pixels[0, 0, ..., 1]
    batch.render_images[0, 0, :, ys, xs] = batch.image[0, 0].permute(2, 0, 1)
    # Group 1: black/white target pixels, its frames show the negative there (an un-warped frame explains nothing).
    batch.image[1] = batch.image[1].round()
    batch.render_images[1, :, :, ys, xs] = 1 - batch.image[1, 0].permute(2, 0, 1)[None]
    model.train()
    try:
        with torch.no_grad():
            outputs = model(batch)
            plain = model.get_loss_dict(outputs, batch)
            model.config.automask = True
            metrics = model.get_metrics_dict(outputs, batch)
            masked = model.get_loss_dict(outputs, batch)
            assert metrics["automasked_ratio"] == pytest.approx(0.5, abs=0.01)  # group 0's patch, not group 1's
            assert 0 < float(masked["photometric_loss"]) < 0.6 * float(plain["photometric_loss"])
            assert torch.equal(masked["smoothness_loss"], plain["smoothness_loss"])  # monodepth2: photometric only
            batch.render_images[1, :, :, ys, xs] = batch.image[1, 0].permute(2, 0, 1)[None]
            assert float(model.get_loss_dict(outputs, batch)["photometric_loss"]) < 1e-6  # all dropped (ties: noise)
            with pytest.raises(ValueError, match="patch_pixels"):
                model.get_loss_dict(outputs, dataclasses.replace(batch, patch_pixels=None))
    finally:
        model.config.automask = False
        model.eval()


def test_valid_view_minimum_is_the_losses_composition_with_and_without_automask(model):
    """``valid_view_minimum`` (issue 18's opt-in deviation): group 1's first render frame is made invalid on the
    left half of the patch; the loss is ``min_view_photometric_loss`` with ``invalid_views`` (BTS's when no frame
    is invalid), and with ``automask`` the mask compares the valid-view minimum with the identity one."""
    from bts_studio.methods.bts.losses import (
        AUTOMASK_TIE_NOISE,
        automask_from_errors,
        discarded_pixels,
        invalid_views,
        min_view_errors,
        min_view_photometric_loss,
        photometric_loss_from_errors,
    )

    batch = _loss_batch()
    model.train()
    try:
        with torch.no_grad():
            outputs = model(batch)
            plain = model.get_loss_dict(outputs, batch)["photometric_loss"]
            model.config.valid_view_minimum = True
            assert torch.equal(model.get_loss_dict(outputs, batch)["photometric_loss"], plain)  # no view invalid
            outputs["invalid_mass"][1, :, :, :4, 0] = 1.0
            valid = model.get_loss_dict(outputs, batch)["photometric_loss"]
            rendered, target, masses, _, missing = model._patches(outputs, batch)
            threshold = model.config.invalid_threshold
            expected = min_view_photometric_loss(
                rendered, target, discarded_pixels(masses, threshold), missing, invalid_views(masses, threshold)
            )
            assert torch.isfinite(valid) and torch.allclose(valid, model.config.photometric_weight * expected)
            assert not torch.equal(valid, plain)
            model.config.automask = True  # both options: the composition, with the same tie noise drawn
            invalid = invalid_views(masses, threshold)
            torch.manual_seed(0)
            both = model.get_loss_dict(outputs, batch)["photometric_loss"]
            torch.manual_seed(0)
            best = min_view_errors(rendered, target, missing, invalid)
            identity = min_view_errors(model._identity_patches(batch, rendered), target, missing)
            mask = automask_from_errors(best, identity, missing, AUTOMASK_TIE_NOISE)
            composed = photometric_loss_from_errors(best, discarded_pixels(masses, threshold) | mask, missing)
            assert torch.isfinite(both) and torch.allclose(both, model.config.photometric_weight * composed)
            no_noise = automask_from_errors(best, identity, missing, 0.0).float().mean()  # the metric, as the loss
            assert torch.equal(model.get_metrics_dict(outputs, batch)["automasked_ratio"], no_noise)
            model.config.valid_view_minimum = False
            torch.manual_seed(0)
            assert not torch.equal(model.get_loss_dict(outputs, batch)["photometric_loss"], both)
    finally:
        model.config.valid_view_minimum = False
        model.config.automask = False
        model.eval()


def test_decoder_param_group_moves_the_decoder_and_old_optimizer_states_still_load(model, tmp_path):
    from nerfstudio.engine.optimizers import Optimizers

    from bts_studio.methods.bts.method_config import bts_density_tiny_config
    from bts_studio.utils.trainer import try_load

    config = bts_density_tiny_config().optimizers
    net = model.net
    # The groups every run before the option had: the whole encoder (ResNet + decoder) and the MLP.
    old_groups = {"encoder": list(net.encoder.parameters()), "density_mlp": list(net.mlp_coarse.parameters())}
    assert {k: [id(p) for p in v] for k, v in model.get_param_groups().items()} == {
        k: [id(p) for p in v] for k, v in old_groups.items()
    }
    old = Optimizers({name: config[name] for name in old_groups}, old_groups)
    for params in old_groups.values():
        for p in params:
            p.grad = torch.randn_like(p)
    old.optimizer_step_all()
    saved = {name: optimizer.state_dict() for name, optimizer in old.optimizers.items()}
    for params in old_groups.values():
        for p in params:
            p.grad = None

    # Option off: the preset's optimizers (with the unused "decoder" entry) take the old state exactly.
    current = Optimizers(dict(config), model.get_param_groups())
    assert list(current.optimizers) == ["encoder", "density_mlp"]
    current.load_optimizers(saved)
    for name, optimizer in current.optimizers.items():
        state = optimizer.state_dict()
        assert state["param_groups"] == saved[name]["param_groups"]
        for key, value in saved[name]["state"].items():
            assert all(torch.equal(state["state"][key][k], v) for k, v in value.items())
    checkpoint = tmp_path / "step-000000001.ckpt"
    torch.save({"step": 1, "pipeline": {}, "optimizers": saved}, checkpoint)
    assert try_load(checkpoint, list(current.optimizers)) == (None, None)

    # Option on: the decoder has its own group at its own learning rate; the old checkpoint is refused by name.
    model.config.decoder_param_group = True
    try:
        groups = model.get_param_groups()
    finally:
        model.config.decoder_param_group = False
    assert list(groups) == ["encoder", "decoder", "density_mlp"]
    assert [id(p) for p in groups["encoder"] + groups["decoder"]] == [id(p) for p in old_groups["encoder"]]
    assert [id(p) for p in groups["decoder"]] == [id(p) for p in net.encoder.decoder.parameters()]
    config["decoder"]["optimizer"].lr = 1e-3
    split = Optimizers(dict(config), groups)
    assert split.optimizers["decoder"].param_groups[0]["lr"] == 1e-3
    assert split.optimizers["encoder"].param_groups[0]["lr"] == 1e-4
    problem, _ = try_load(checkpoint, list(split.optimizers))
    assert problem is not None and "['density_mlp', 'encoder']" in problem and "'decoder'" in problem


def test_colour_jitter_identity_and_shared_draw():
    images = torch.rand(8, 3, 16, 16)
    identity = ColourJitterDraw([0, 1, 2, 3], 1.0, 1.0, 1.0, 0.0)
    assert torch.allclose(apply_colour_jitter(images, identity), images, atol=1e-5)
    draw = ColourJitterDraw([3, 0, 2, 1], 1.2, 0.8, 1.1, 0.05)
    jittered = apply_colour_jitter(images, draw)
    assert torch.allclose(jittered[2:3], apply_colour_jitter(images[2:3], draw), atol=1e-6)  # per image, same draw


def test_the_batched_colour_jitter_equals_the_per_group_reference():
    """``apply_colour_jitter_batch`` (CUDA's path) against torchvision per group (the CPU's), over many drawn orders,
    including hue shifts that wrap around and groups that share a position's operation."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(12, 3, 3, 9, 11, generator=generator)
    images[0, 0] = 0.5  # a grey image: saturation 0, the hue of its HSV form undefined
    draws = [draw_colour_jitter(ColourJitterRanges(), generator) for _ in range(12)]
    draws[1] = ColourJitterDraw([3, 2, 1, 0], 0.8, 1.2, 0.8, -0.1)  # the extremes of BTS's ranges
    assert len({tuple(d.order) for d in draws}) > 6
    reference = apply_colour_jitter_groups(images, draws)
    before = images.clone()
    batched = apply_colour_jitter_batch(images, draws)
    assert batched.shape == images.shape and torch.equal(images, before), "the input is left as it was"
    torch.testing.assert_close(batched, reference, atol=2e-6, rtol=0)
    # one order for every group takes the unindexed branch at every position
    same = [ColourJitterDraw([2, 0, 3, 1], d.brightness, d.contrast, d.saturation, d.hue) for d in draws]
    reference = apply_colour_jitter_groups(images, same)
    torch.testing.assert_close(apply_colour_jitter_batch(images, same), reference, atol=2e-6, rtol=0)
    # one operation for every group at the first position, different ones later: the in-place path after the
    # unindexed one
    rests = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]]
    mixed = [ColourJitterDraw([3, *rests[i % 4]], *_factors(d)) for i, d in enumerate(draws)]
    reference = apply_colour_jitter_groups(images, mixed)
    torch.testing.assert_close(apply_colour_jitter_batch(images, mixed), reference, atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="B draws"):
        apply_colour_jitter_batch(images, draws[:3])


def _factors(draw: ColourJitterDraw) -> tuple:
    return draw.brightness, draw.contrast, draw.saturation, draw.hue


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the batched jitter's CUDA path (non-blocking upload)")
def test_the_batched_colour_jitter_equals_the_reference_on_cuda():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(16, 4, 3, 24, 40, generator=generator).cuda()
    draws = [draw_colour_jitter(ColourJitterRanges(), generator) for _ in range(16)]
    reference = apply_colour_jitter_groups(images, draws)
    torch.testing.assert_close(apply_colour_jitter_batch(images, draws), reference, atol=2e-6, rtol=0)


def _official_state(resnet_layers: int = 50) -> dict:
    """A state dict with the names and shapes of BTS's KITTI-360 checkpoint, built from the official module layout
    (``Monodepth2``: ``ResnetEncoder.encoder`` + ``Decoder.decoder`` ModuleList; ``ResnetFC`` lin_in/lin_out)."""
    import torchvision

    state = {}
    resnet = getattr(torchvision.models, f"resnet{resnet_layers}")(weights=None).state_dict()
    for key, value in resnet.items():
        state[f"renderer.net.encoder.encoder.encoder.{key}"] = torch.randn_like(value.float()).to(value.dtype)
    encoder_channels = [64, 256, 512, 1024, 2048] if resnet_layers == 50 else [64, 64, 128, 256, 512]
    decoder_channels = [max(64, c) for c in [32, 32, 64, 128, 256]]
    index = 0
    for i in range(4, -1, -1):  # ("upconv", i, 0) then ("upconv", i, 1): ConvBlock -> .conv (Conv3x3) -> .conv
        in_0 = encoder_channels[-1] if i == 4 else decoder_channels[i + 1]
        in_1 = decoder_channels[i] + (encoder_channels[i - 1] if i > 0 else 0)
        for in_channels in (in_0, in_1):
            prefix = f"renderer.net.encoder.decoder.decoder.{index}.conv.conv"
            state[f"{prefix}.weight"] = torch.randn(decoder_channels[i], in_channels, 3, 3)
            state[f"{prefix}.bias"] = torch.randn(decoder_channels[i])
            index += 1
    for scale in range(4):  # ("dispconv", s): Conv3x3 -> .conv
        state[f"renderer.net.encoder.decoder.decoder.{index}.conv.weight"] = torch.randn(
            64, decoder_channels[scale], 3, 3
        )
        state[f"renderer.net.encoder.decoder.decoder.{index}.conv.bias"] = torch.randn(64)
        index += 1
    state["renderer.net.code_xyz._freqs"] = torch.repeat_interleave(1.5 * 2.0 ** torch.arange(6), 2).view(1, -1, 1)
    state["renderer.net.code_xyz._phases"] = torch.zeros(1, 12, 1)
    state["renderer.net.mlp_coarse.lin_in.weight"] = torch.randn(64, 103)
    state["renderer.net.mlp_coarse.lin_in.bias"] = torch.randn(64)
    state["renderer.net.mlp_coarse.lin_out.weight"] = torch.randn(1, 64)
    state["renderer.net.mlp_coarse.lin_out.bias"] = torch.randn(1)
    state["renderer.renderer.iter_idx"] = torch.tensor(0)
    state["renderer.renderer.last_sched"] = torch.tensor(0)
    return state


def test_import_official_maps_every_weight(tmp_path):
    from bts_studio.methods.bts.import_official import main

    official = _official_state(50)
    checkpoint = tmp_path / "training-checkpoint.pt"
    torch.save({"model": official, "trainer": {"iteration": 1234, "epoch": 3}}, checkpoint)
    main([str(checkpoint), str(tmp_path / "runs"), "--data", str(tmp_path / "KITTI-360")])
    run = tmp_path / "runs" / "KITTI-360" / "bts-density" / "official"
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.method_name == "bts-density" and config.pipeline.model.resnet_layers == 50
    assert config.get_checkpoint_dir() == run / "nerfstudio_models"
    saved = torch.load(run / "nerfstudio_models" / "step-000001234.ckpt", map_location="cpu", weights_only=True)
    state = saved["pipeline"]
    assert torch.equal(state["_model.net.mlp_coarse.lin_in.weight"], official["renderer.net.mlp_coarse.lin_in.weight"])
    assert torch.equal(
        state["_model.net.encoder.decoder.decoder.10.conv.weight"],
        official["renderer.net.encoder.decoder.decoder.10.conv.weight"],
    )
    assert torch.equal(
        state["_model.net.encoder.encoder.encoder.layer4.2.bn3.running_var"],
        official["renderer.net.encoder.encoder.encoder.layer4.2.bn3.running_var"],
    )
    assert not any(".fc." in key or "decoder.decoder.11" in key for key in state)
    # The converted dict loads strictly into a freshly built ResNet-50 model.
    model_config = BTSModelConfig(resnet_layers=50, search_torch_hub_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = model_config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
    fresh.load_state_dict({key[len("_model.") :]: value for key, value in state.items()}, strict=True)
    with pytest.raises(SystemExit, match="overwrite"):
        main([str(checkpoint), str(tmp_path / "runs"), "--data", str(tmp_path / "KITTI-360")])


def test_import_official_rejects_other_checkpoints(tmp_path):
    from bts_studio.methods.bts.import_official import main

    bad = tmp_path / "other.pt"
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, bad)
    with pytest.raises(SystemExit, match="no BTS network weights"):
        main([str(bad), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="not found"):
        main([str(tmp_path / "absent.pt"), str(tmp_path / "out")])


def test_a_negative_distortion_weight_is_refused_when_the_model_is_built():
    config = BTSModelConfig(resnet_layers=18, search_torch_hub_cache=False, distortion_weight=-0.01)
    with pytest.raises(ValueError, match="distortion_weight"):
        config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
