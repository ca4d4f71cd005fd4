"""Tier 1: framework-free functions SRN uses (ray grouping, normals from depth, skimage metrics, losses)."""

import numpy as np
import pytest
import torch

from bts_studio.core.depth_normals import normals_from_point_map, normals_from_ray_depth
from bts_studio.core.image_quality import psnr, ssim
from bts_studio.core.ray_groups import from_padded, group_by_key, to_padded
from bts_studio.methods.srn.losses import latent_prior, negative_depth_penalty, signed_image_loss


def test_ray_groups_roundtrip_and_layout():
    keys = torch.tensor([5, 2, 5, 9, 2, 2, 5, 5])
    values = torch.arange(8, dtype=torch.float32)[:, None].expand(8, 2).clone()
    groups = group_by_key(keys)
    assert groups.keys.tolist() == [2, 5, 9]
    assert groups.max_count == 4
    padded = to_padded(values, groups)
    assert padded.shape == (3, 4, 2)
    # Rays keep their order inside a group; padding repeats the group's first ray.
    assert padded[0, :, 0].tolist() == [1, 4, 5, 1]
    assert padded[1, :, 0].tolist() == [0, 2, 6, 7]
    assert padded[2, :, 0].tolist() == [3, 3, 3, 3]
    assert torch.equal(from_padded(padded, groups), values)


def test_ray_groups_random_roundtrip():
    generator = torch.Generator().manual_seed(1)
    keys = torch.randint(0, 7, (500,), generator=generator)
    values = torch.randn(500, 3, generator=generator)
    groups = group_by_key(keys)
    padded = to_padded(values, groups)
    assert torch.equal(from_padded(padded * 2.0, groups), values * 2.0)
    for group, key in enumerate(groups.keys.tolist()):
        count = int((keys == key).sum())
        assert torch.equal(padded[group, :count], values[keys == key])


def test_normals_of_a_plane_face_the_camera():
    # OpenCV camera at the origin looking at the plane z = 2 - 0.5 x (tilted about the y axis).
    height, width, focal = 9, 11, 10.0
    rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    directions = torch.stack([(cols - width / 2) / focal, (rows - height / 2) / focal, torch.ones_like(rows)], -1)
    # Ray-plane intersection: t * (dz + 0.5 dx) = 2.
    t = 2.0 / (directions[..., 2] + 0.5 * directions[..., 0])
    unit = torch.nn.functional.normalize(directions, dim=-1)
    depth = (t * directions.norm(dim=-1))[..., None]
    normals = normals_from_ray_depth(torch.zeros_like(unit), unit, depth)
    expected = torch.nn.functional.normalize(torch.tensor([-0.5, 0.0, -1.0]), dim=0)
    assert torch.allclose(normals, expected.expand_as(normals), atol=1e-5)
    assert (normals * unit).sum(-1).lt(0).all(), "normals must face the camera"


def test_normals_are_unit_and_finite_on_degenerate_maps():
    points = torch.zeros(2, 4, 5, 3)
    normals = normals_from_point_map(points)
    assert normals.shape == (2, 4, 5, 3) and torch.isfinite(normals).all()


def test_metrics_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(2, 24, 20, 3, generator=generator, dtype=torch.float64)
    prediction = (target + 0.1 * torch.randn(2, 24, 20, 3, generator=generator, dtype=torch.float64)).clamp(0, 1)
    ours_psnr, ours_ssim = psnr(prediction, target), ssim(prediction, target)
    for i in range(2):
        p, t = prediction[i].numpy(), target[i].numpy()
        assert ours_psnr[i].item() == pytest.approx(metrics.peak_signal_noise_ratio(t, p, data_range=1), abs=1e-9)
        reference = metrics.structural_similarity(p, t, channel_axis=-1, data_range=1)
        assert ours_ssim[i].item() == pytest.approx(reference, abs=1e-9)


def test_masked_psnr_is_the_psnr_of_the_selected_pixels():
    generator = torch.Generator().manual_seed(3)
    prediction, target = torch.rand(2, 5, 6, 3, generator=generator), torch.rand(2, 5, 6, 3, generator=generator)
    mask = torch.rand(2, 5, 6, generator=generator) > 0.5
    mask[1] = False
    masked = psnr(prediction, target, mask=mask)
    assert masked[0].item() == pytest.approx(psnr(prediction[0][mask[0]][None], target[0][mask[0]][None]).item())
    assert torch.isnan(masked[1]), "no selected pixel: NaN"


def test_psnr_of_identical_images_is_finite():
    image = torch.rand(8, 8, 3)
    assert np.isfinite(psnr(image, image).item()) and psnr(image, image).item() == pytest.approx(100.0)
    assert ssim(image, image).item() == pytest.approx(1.0)


def test_srn_loss_terms():
    target = torch.tensor([[1.0, 0.0, 0.5]])
    assert signed_image_loss(torch.tensor([[1.0, -1.0, 0.0]]), target).item() == 0.0
    assert signed_image_loss(torch.zeros(1, 3), target).item() == pytest.approx(2.0 / 3.0)
    z = torch.tensor([[0.5], [-0.1], [-0.2]])
    assert negative_depth_penalty(z).item() == pytest.approx(1e4 * (0.01 + 0.04) / 3)
    assert latent_prior(torch.full((2, 4), 0.5)).item() == pytest.approx(0.25)
