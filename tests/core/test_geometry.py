"""Tier 1: camera geometry core."""

import math
from unittest import mock

import torch

from bts_studio.core.geometry import (
    intrinsics_matrix,
    invert_pose,
    normalize_intrinsics,
    opencv_to_opengl,
    pixels_to_normalized,
    project_points,
    ray_distance_to_z_depth,
    rows_times_points,
    to_homogeneous_pose,
    world_to_camera_points,
)


def _random_pose(generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.det(q))
    return torch.cat([q, torch.randn(3, 1, generator=generator, dtype=torch.float64)], dim=1)


def test_invert_pose_roundtrip():
    generator = torch.Generator().manual_seed(0)
    pose = _random_pose(generator)
    product = to_homogeneous_pose(pose) @ to_homogeneous_pose(invert_pose(pose))
    assert torch.allclose(product, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert invert_pose(to_homogeneous_pose(pose)).shape == (4, 4)


def test_opencv_opengl_flip_is_involution_and_flips_view_axis():
    generator = torch.Generator().manual_seed(1)
    pose = _random_pose(generator)
    assert torch.allclose(opencv_to_opengl(opencv_to_opengl(pose)), pose)
    # OpenCV looks along +z, OpenGL along -z: the world viewing direction must be the same vector.
    assert torch.allclose(pose[:, 2], -opencv_to_opengl(pose)[:, 2])
    assert torch.allclose(pose[:, 3], opencv_to_opengl(pose)[:, 3])


def test_projection_hits_principal_point_and_pixel_centres():
    K = intrinsics_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (100.0, 100.0, 32.0, 24.0)))
    w2c = torch.eye(4, dtype=torch.float64)[:3]
    points = torch.tensor([[0.0, 0.0, 5.0], [0.5, -0.25, 10.0]], dtype=torch.float64)
    uv, z = project_points(points, K, w2c)
    assert torch.allclose(uv[0], torch.tensor([32.0, 24.0], dtype=torch.float64))
    assert torch.allclose(uv[1], torch.tensor([32.0 + 100 * 0.05, 24.0 - 100 * 0.025], dtype=torch.float64))
    assert torch.allclose(z, torch.tensor([5.0, 10.0], dtype=torch.float64))
    # The centre of the first pixel lies at 0.5 and maps to -1 + 1/W under align_corners=False.
    normalized = pixels_to_normalized(torch.tensor([0.5, 0.5], dtype=torch.float64), 64, 48)
    assert torch.allclose(normalized, torch.tensor([-1 + 1 / 64, -1 + 1 / 48], dtype=torch.float64))


def test_pixels_to_normalized_number_and_tensor_sizes_agree_bit_for_bit():
    """Python sizes are filled on uv's device (no host-to-device copy in the render loop); same numbers as tensors."""
    for dtype in (torch.float32, torch.float64):
        uv = torch.rand(100, 2, dtype=dtype) * 500
        by_numbers = pixels_to_normalized(uv, 640, 192)
        by_tensors = pixels_to_normalized(uv, torch.tensor(640), torch.tensor(192.0))
        assert by_numbers.dtype == dtype and torch.equal(by_numbers, by_tensors)


def test_normalized_intrinsics_agree_with_normalized_pixels():
    K = intrinsics_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (80.0, 90.0, 30.0, 20.0)))
    Kn = normalize_intrinsics(K, 64, 48)
    point = torch.tensor([[0.3, -0.2, 4.0]], dtype=torch.float64)
    uv, _ = project_points(point, K, torch.eye(4, dtype=torch.float64)[:3])
    uvn, _ = project_points(point, Kn, torch.eye(4, dtype=torch.float64)[:3])
    assert torch.allclose(pixels_to_normalized(uv, 64, 48), uvn)


def test_projection_gradcheck():
    K = intrinsics_matrix(*(torch.tensor(v, dtype=torch.float64) for v in (50.0, 60.0, 16.0, 12.0)))
    w2c = _random_pose(torch.Generator().manual_seed(2))
    points = torch.randn(5, 3, dtype=torch.float64) + torch.tensor([0, 0, 6.0], dtype=torch.float64)
    points = (points - w2c[:, 3]) @ w2c[:, :3]  # place the points in front of the camera
    points.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: project_points(p, K, w2c)[0], (points,))


def test_ray_distance_to_z_depth():
    angle = math.radians(30.0)
    directions_norm = torch.tensor([[1.0 / math.cos(angle)]])
    z_depth = ray_distance_to_z_depth(torch.tensor([[2.0]]), directions_norm)
    assert torch.allclose(z_depth, torch.tensor([[2 * math.cos(angle)]]))


def test_projections_are_elementwise_and_equal_the_matmul_form_with_broadcast_batches():
    """``rows_times_points`` (what ``project_points`` runs) against ``points @ M^T + t`` in float64, with the batch
    shapes ``sample_view_colours`` uses (points ``[B, 1, N, 3]`` against poses ``[B, V, 3, 4]``), and without any
    matmul: a matmul would follow the TF32 flag (~1e-3 relative on a GPU)."""
    torch.manual_seed(0)
    points = 30.0 * torch.randn(2, 1, 50, 3, dtype=torch.float64)
    w2c = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    K = torch.tensor([[300.0, 0.5, 320.0], [0.0, 310.0, 96.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    K = K.expand(2, 3, 3, 3)
    reference = points @ w2c[..., :3].transpose(-1, -2) + w2c[..., None, :, 3]
    with (
        mock.patch.object(torch, "matmul", side_effect=AssertionError("matmul")),
        mock.patch.object(torch.Tensor, "__matmul__", side_effect=AssertionError("matmul")),
    ):
        camera = world_to_camera_points(points, w2c)
        uv, z = project_points(points, K, w2c)
        rows = rows_times_points(K[..., :2, :], camera)
    assert camera.shape == uv.shape[:-1] + (3,) == (2, 3, 50, 3)
    torch.testing.assert_close(camera, reference, rtol=1e-14, atol=1e-12)
    torch.testing.assert_close(z, reference[..., 2], rtol=1e-14, atol=1e-12)
    pixels = reference @ K.transpose(-1, -2)
    torch.testing.assert_close(rows, pixels[..., :2], rtol=1e-14, atol=1e-9)
    front = z > 1e-3
    torch.testing.assert_close(uv[front], (pixels[..., :2] / pixels[..., 2:])[front], rtol=1e-12, atol=1e-9)
