"""Units of methods/common: camera conversion round trip, chunked rendering, the time budget's config field."""

import torch

from bts_studio.core.geometry import project_points
from bts_studio.methods.common.cameras import (
    PixelRayGenerator,
    camera_header,
    camera_rays,
    cameras_to_opencv,
    cameras_to_opencv_w2c,
    opencv_to_cameras,
)
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


def test_camera_rays_are_nerfstudios_bit_for_bit():
    """camera_rays (core.pinhole_rays for undistorted pinholes, nerfstudio's generate_rays for any other camera)
    gives exactly the rays, unit directions and directions_norm of ``Cameras.generate_rays`` (issue 17: the
    sync-free path must not change a render)."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    generator = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    c2w = torch.cat([rotation, 5 * torch.randn(3, 1, generator=generator)], dim=1)

    def camera(camera_type=CameraType.PERSPECTIVE, distortion=None):
        intrinsics = {
            name: torch.tensor([[value]])
            for name, value in zip(("fx", "fy", "cx", "cy"), (37.3, 49.1, 26.9, 21.7), strict=True)
        }
        return Cameras(
            camera_to_worlds=c2w[None],
            **intrinsics,
            width=torch.tensor([[53]]),
            height=torch.tensor([[37]]),
            camera_type=camera_type,
            distortion_params=distortion,
        )

    cases = {
        "pinhole": (camera(), False),
        "zero distortion": (camera(distortion=torch.zeros(1, 6)), False),
        "distorted": (camera(distortion=torch.tensor([[0.05, -0.01, 0.0, 0.0, 0.001, 0.0]])), True),
        "fisheye": (camera(CameraType.FISHEYE), True),
    }
    for name, (cam, via_nerfstudio) in cases.items():
        header = camera_header(cam)
        assert (header.height, header.width) == (37, 53), name
        assert (header.camera_type != CameraType.PERSPECTIVE.value or header.distorted) == via_nerfstudio, name
        bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
        rays = camera_rays(cam)
        assert torch.equal(rays.origins, bundle.origins), name
        assert torch.equal(rays.directions, bundle.directions), name
        assert torch.equal(rays.directions_norm, bundle.metadata["directions_norm"]), name


def test_pixel_ray_generator_is_nerfstudios_bit_for_bit_without_host_syncs():
    """PixelRayGenerator (core.pinhole_pixel_rays) gives exactly nerfstudio's RayGenerator bundle for random pixels
    of several pinhole cameras (every field and the cameras' metadata), with no host-sync op (issue 13);
    distorted cameras fall back to nerfstudio's generator."""
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.model_components.ray_generators import RayGenerator

    from bts_studio.utils.profiling import count_ops

    generator = torch.Generator().manual_seed(1)
    rotations, _ = torch.linalg.qr(torch.randn(5, 3, 3, generator=generator))
    c2w = torch.cat([rotations, 3 * torch.randn(5, 3, 1, generator=generator)], dim=-1)
    intrinsics = 20 + 40 * torch.rand(5, 4, 1, generator=generator)
    cameras = Cameras(
        camera_to_worlds=c2w,
        fx=intrinsics[:, 0],
        fy=intrinsics[:, 1],
        cx=intrinsics[:, 2],
        cy=intrinsics[:, 3],
        width=torch.full((5, 1), 41),
        height=torch.full((5, 1), 29),
        metadata={"instance_idx": torch.arange(5)[:, None] // 2},
    )
    indices = torch.stack([torch.randint(0, n, (300,), generator=generator) for n in (5, 29, 41)], dim=-1)
    expected = RayGenerator(cameras)(indices)
    ours = PixelRayGenerator(cameras)
    assert ours.fallback is None
    bundle = ours(indices)
    for name in ("origins", "directions", "pixel_area", "camera_indices"):
        assert torch.equal(getattr(bundle, name), getattr(expected, name)), name
    assert bundle.times is None and bundle.nears is None and bundle.fars is None
    assert set(bundle.metadata) == set(expected.metadata) == {"instance_idx", "directions_norm"}
    for name, value in expected.metadata.items():
        assert torch.equal(bundle.metadata[name], value), name
    assert count_ops(lambda: ours(indices))["sync_ops"] == 0
    cameras.distortion_params = torch.zeros(5, 6)
    cameras.distortion_params[2, 0] = 0.05
    assert PixelRayGenerator(cameras).fallback is not None


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
