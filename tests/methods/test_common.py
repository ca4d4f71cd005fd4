"""Units of methods/common: camera conversion round trip, chunked rendering, the time budget's config field."""

import torch

from bts_studio.core.geometry import project_points
from bts_studio.methods.common.cameras import cameras_to_opencv, cameras_to_opencv_w2c, opencv_to_cameras
from bts_studio.methods.common.rendering import render_in_chunks


def _cameras():
    K = torch.tensor([[[50.0, 0.0, 32.0], [0.0, 40.0, 24.0], [0.0, 0.0, 1.0]]]).repeat(2, 1, 1)
    c2w = torch.eye(4)[:3].repeat(2, 1, 1)
    c2w[1, :, 3] = torch.tensor([1.0, -2.0, 0.5])
    return K, c2w


def test_opencv_cameras_round_trip_and_rays_project_to_their_pixels():
    K, c2w = _cameras()
    cameras = opencv_to_cameras(K, c2w, width=64, height=48)
    K_back, c2w_back = cameras_to_opencv(cameras)
    assert torch.allclose(K_back, K) and torch.allclose(c2w_back[:, :3], c2w)
    K_w2c, w2c = cameras_to_opencv_w2c(cameras)
    assert w2c.shape == (2, 3, 4)
    coords = torch.tensor([[10.5, 20.5]])  # (row, column)
    rays = cameras.generate_rays(camera_indices=torch.tensor([[1]]), coords=coords)
    uv, z = project_points(rays.origins + 3.0 * rays.directions, K_w2c[1], w2c[1])
    assert torch.allclose(uv, coords.flip(-1), atol=1e-4) and bool((z > 0).all())


def test_render_in_chunks_equals_one_pass():
    values = torch.randn(10, 3)
    one = render_in_chunks(lambda s, e: {"x": values[s:e] * 2}, 10, 100, "cpu")
    chunked = render_in_chunks(lambda s, e: {"x": values[s:e] * 2}, 10, 3, "cpu")
    assert torch.equal(one["x"], chunked["x"]) and torch.equal(one["x"], values * 2)
    strided = render_in_chunks(lambda s, e: {"x": values[s:e, :2]}, 10, 100, "cpu")["x"]  # one pass, a slice
    assert strided.is_contiguous() and torch.equal(strided, values[:, :2])


def test_frame_chunk_size_takes_the_whole_frame_when_memory_allows():
    from bts_studio.methods.common.rendering import RENDER_BYTES_PER_SAMPLE, frame_chunk_size

    assert frame_chunk_size(1000, 50_000, 64, "cpu", 0.5) == 1000  # the CPU keeps the configured chunk
    per_ray = 64 * RENDER_BYTES_PER_SAMPLE
    assert frame_chunk_size(1000, 50_000, 64, "cpu", 0.5, free_bytes=2 * 50_000 * per_ray) == 50_000  # whole frame
    assert frame_chunk_size(1000, 50_000, 64, "cpu", 0.5, free_bytes=2 * 7_000 * per_ray) == 7_000  # what fits
    assert frame_chunk_size(1000, 50_000, 64, "cpu", 0.5, free_bytes=10) == 1000  # never below the configured one
    assert frame_chunk_size(1000, 50_000, 64, "cpu", 0.0, free_bytes=1 << 40) == 1000  # fraction 0: off
