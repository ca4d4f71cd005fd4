"""The nerfstudio sampler adapter gives exactly the numbers of the core functions it wraps."""

import torch
from nerfstudio.cameras.rays import RayBundle

from bts_studio.core.compositing import sample_deltas
from bts_studio.core.sampling import disparity_linear_samples
from bts_studio.methods.bts.sampler import DisparityLinearPointSampler


def test_sampler_matches_core_sampling_and_deltas():
    rays = RayBundle(
        origins=torch.zeros(5, 3),
        directions=torch.nn.functional.normalize(torch.randn(5, 3), dim=-1),
        pixel_area=torch.ones(5, 1),
    )
    sampler = DisparityLinearPointSampler(16, near=3.0, far=80.0).train()
    torch.manual_seed(7)
    samples = sampler(rays)
    torch.manual_seed(7)
    offsets, distances = disparity_linear_samples(5, 16, 3.0, 80.0, stratified=True)
    assert torch.equal(samples.frustums.starts[..., 0], distances)
    assert torch.equal(samples.spacing_starts[..., 0], offsets)
    assert torch.allclose(samples.deltas[..., :-1, 0], sample_deltas(distances)[..., :-1])
    points = samples.frustums.get_start_positions()
    assert torch.allclose(points, rays.directions[:, None] * distances[..., None])


def test_sample_distances_give_the_points_of_the_ray_samples_bit_for_bit():
    """The model's tensor render path (``render_ray_tensors``) places exactly the points ``RaySamples`` would."""
    rays = RayBundle(
        origins=torch.randn(7, 3),
        directions=torch.nn.functional.normalize(torch.randn(7, 3), dim=-1),
        pixel_area=torch.ones(7, 1),
    )
    for training in (True, False):
        sampler = DisparityLinearPointSampler(16, near=3.0, far=80.0).train(training)
        torch.manual_seed(3)
        samples = sampler(rays)
        torch.manual_seed(3)
        _, distances = sampler.sample_distances(7, "cpu")
        points = rays.origins[:, None] + rays.directions[:, None] * distances[..., None]
        assert torch.equal(points, samples.frustums.get_start_positions())
