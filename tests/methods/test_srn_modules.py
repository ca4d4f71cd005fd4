"""Tier 1: SRN's networks (hypernetwork, ray marcher, pixel generator) and the model's instance grouping."""

import math

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import SceneBox

from bts_studio.methods.srn.hypernetwork import HyperFC, batch_linear
from bts_studio.methods.srn.model import SRNModel, SRNModelConfig
from bts_studio.methods.srn.pixel_generator import PixelGenerator
from bts_studio.methods.srn.raymarcher import LSTMRayMarcher

SMALL = dict(latent_dim=8, phi_hidden=16, hyper_hidden=16, marcher_hidden=4, marcher_steps=3, rendering_layers=2)


def test_hypernetwork_output_shapes_official_sizes():
    hyper = HyperFC()  # SRN: z 256 -> phi 3 -> 256 x 4, hypernets 256 -> 256 -> 256 -> (in*out + out)
    assert len(hyper.layers) == 4
    linears = [m for m in hyper.layers[1].net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 256), (256, 256), (256, 256 * 256 + 256)]
    codes = torch.randn(3, 256) * 0.01
    with torch.no_grad():
        phi = hyper(codes)
        shapes = [(tuple(w.shape), tuple(b.shape)) for w, b in phi.layers]
        assert shapes == [((3, 256, 3), (3, 256))] + [((3, 256, 256), (3, 256))] * 3
        features = phi(torch.randn(3, 5, 3))
    assert features.shape == (3, 5, 256)
    assert (features >= 0).all(), "phi's last layer ends in LayerNorm + ReLU"
    # Last hypernetwork layer: Kaiming-normal (std sqrt(2 / 256)) scaled by 0.1.
    last = linears[-1].weight
    assert last.std().item() == pytest.approx(0.1 * math.sqrt(2.0 / 256), rel=0.05)


def test_batch_linear_matches_per_group_linear():
    x, w, b = torch.randn(2, 4, 3), torch.randn(2, 5, 3), torch.randn(2, 5)
    out = batch_linear(x, w, b)
    for u in range(2):
        assert torch.allclose(out[u], torch.nn.functional.linear(x[u], w[u], b[u]), atol=1e-6)


def test_pixel_generator_has_six_linear_layers():
    generator = PixelGenerator()
    linears = [m for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 and linears[-1].out_features == 3
    assert not isinstance(list(generator.mlp.net)[-1], torch.nn.ReLU), "the output is linear"


def test_marcher_initialisation_and_gradients_reach_lstm_and_phi():
    torch.manual_seed(0)
    hyper = HyperFC(latent_dim=8, hidden_features=16, out_features=16, hyper_hidden=16)
    marcher = LSTMRayMarcher(feature_dim=16, hidden_dim=4, num_steps=4)
    hidden = marcher.lstm.hidden_size
    assert torch.all(marcher.lstm.bias_ih[hidden : 2 * hidden] == 1) and marcher.lstm.bias_ih[:hidden].abs().sum() == 0
    codes = (torch.randn(2, 8) * 0.01).requires_grad_(True)
    origins = torch.tensor([0.0, 0.0, 1.3]).expand(2, 6, 3)
    directions = torch.nn.functional.normalize(torch.randn(2, 6, 3) * 0.1 + torch.tensor([0, 0, -1.0]), dim=-1)
    norms = torch.ones(2, 6, 1) * 1.01
    phi = hyper(codes)
    points, distance = marcher(phi, origins, directions, norms)
    assert points.shape == (2, 6, 3) and distance.shape == (2, 6, 1)
    assert torch.allclose(points, origins + directions * distance, atol=1e-6)
    (phi(points).sum() + distance.sum()).backward()
    for name, parameter in [
        ("lstm input weights", marcher.lstm.weight_ih),
        ("lstm hidden weights", marcher.lstm.weight_hh),
        ("step head", marcher.step_head.weight),
        ("hypernetwork of phi's first layer", hyper.layers[0].net.last_linear.weight),
    ]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"no gradient reaches the {name}"
    assert codes.grad is not None and codes.grad.abs().sum() > 0


def test_marcher_start_depth_is_camera_z():
    marcher = LSTMRayMarcher(feature_dim=4, hidden_dim=2, num_steps=0).eval()
    norms = torch.tensor([[[1.0], [1.25]]])
    origins, directions = torch.zeros(1, 2, 3), torch.tensor([[[0, 0, 1.0], [0.6, 0, 0.8]]])
    _, distance = marcher(lambda x: torch.zeros(*x.shape[:2], 4), origins, directions, norms)
    assert torch.allclose(distance / norms, torch.full_like(distance, 0.05))


def _small_model(num_instances: int = 3, single_scene: bool = False) -> SRNModel:
    config = SRNModelConfig(single_scene=single_scene, eval_num_rays_per_chunk=7, **SMALL)
    metadata = {"num_instances": num_instances, "image_instance_idx": torch.tensor([2, 0, 1, 1])}
    return config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=4, metadata=metadata)


def _rays(count: int, instance: torch.Tensor) -> RayBundle:
    generator = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    return RayBundle(
        origins=torch.randn(count, 3, generator=generator),
        directions=directions,
        pixel_area=torch.ones(count, 1),
        metadata={"instance_idx": instance[:, None], "directions_norm": torch.ones(count, 1) * 1.1},
    )


def test_model_groups_mixed_instances_like_separate_renders():
    model = _small_model().eval()
    instance = torch.tensor([2, 0, 2, 1, 0, 0, 2, 1, 1, 2])
    rays = _rays(10, instance)
    with torch.no_grad():
        outputs = model(rays)
        for key in ("rgb", "depth", "z_depth", "accumulation"):
            assert outputs[key].shape[0] == 10
        assert outputs["latent_codes"].shape == (3, model.config.latent_dim)  # the codes of instances 0, 1, 2
        for index in range(3):
            mask = instance == index
            alone = model.render_rays_with_code(
                rays.origins[mask],
                rays.directions[mask],
                rays.metadata["directions_norm"][mask],
                model.latent_code_for_instance(index),
            )
            assert torch.allclose(outputs["rgb"][mask], alone["rgb"], atol=1e-5)
            assert torch.allclose(outputs["depth"][mask], alone["depth"], atol=1e-5)
    assert torch.allclose(outputs["z_depth"], outputs["depth"] / 1.1)
    assert torch.all(outputs["accumulation"] == 1) and (outputs["rgb"] >= 0).all() and (outputs["rgb"] <= 1).all()
    loss = model.get_loss_dict(outputs, {"image": torch.rand(10, 3)})
    assert set(loss) == {"rgb_loss", "depth_reg", "latent_reg"}
    assert set(model.get_param_groups()) == {"networks", "latent_codes"}


def test_model_rejects_unknown_instances():
    model = _small_model()
    with pytest.raises(ValueError, match="3 latent codes"):
        model(_rays(4, torch.tensor([0, 1, 2, 3])))


def _camera(metadata):
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1.3]])[None]
    return Cameras(
        c2w, fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8, camera_type=CameraType.PERSPECTIVE, metadata=metadata
    )


def test_camera_instance_resolution_and_full_image_outputs():
    model = _small_model().eval()
    assert model.resolve_camera_instance(_camera({"instance_idx": torch.tensor([[1]])})) == 1
    assert model.resolve_camera_instance(_camera({"cam_idx": 0})) == 2  # viewer: training image 0 shows instance 2
    assert model.resolve_camera_instance(_camera({"cam_idx": 3})) == 1
    assert model.resolve_camera_instance(_camera(None)) == 0
    outputs = model.get_outputs_for_camera(_camera({"cam_idx": 0}))
    reference = model.render_camera(_camera(None), model.latent_code_for_instance(2))
    for key, channels in (("rgb", 3), ("depth", 1), ("z_depth", 1), ("accumulation", 1), ("normals", 3)):
        assert outputs[key].shape == (8, 8, channels), key
    assert torch.allclose(outputs["rgb"], reference["rgb"])
    metrics, images = model.get_image_metrics_and_images(outputs, {"image": torch.rand(8, 8, 3)})
    assert set(metrics) == {"psnr", "ssim"} and images["img"].shape == (8, 16, 3)


def test_single_scene_mode_has_no_codes():
    model = _small_model(single_scene=True)
    assert not hasattr(model, "latent_codes") and not hasattr(model, "hyper_phi")
    outputs = model(_rays(5, torch.zeros(5, dtype=torch.long)))
    assert "latent_codes" not in outputs
    assert set(model.get_param_groups()) == {"networks"}
    assert model.get_outputs_for_camera(_camera(None))["rgb"].shape == (8, 8, 3)
