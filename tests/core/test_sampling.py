"""Tier 1: BTS ray sampling (stratified, linear in disparity)."""

import torch

from bts_studio.core.sampling import (
    bin_offsets,
    disparity_linear_distances,
    disparity_linear_offsets,
    disparity_linear_samples,
)


def test_samples_are_sorted_in_range_and_one_per_bin():
    _, t = disparity_linear_samples(100, 64, near=3.0, far=80.0, stratified=True)
    assert t.shape == (100, 64)
    assert (t >= 3.0).all() and (t <= 80.0).all()
    assert (t[:, 1:] > t[:, :-1]).all()
    # Each sample lies in its own disparity bin: s = (1/t - 1/near) / (1/far - 1/near) in [k/S, (k+1)/S].
    s = (1 / t - 1 / 3.0) / (1 / 80.0 - 1 / 3.0)
    k = torch.arange(64)
    assert ((s >= k / 64 - 1e-5) & (s <= (k + 1) / 64 + 1e-5)).all()


def test_unstratified_samples_sit_at_bin_centres_and_match_the_official_formula():
    _, t = disparity_linear_samples(2, 4, near=3.0, far=80.0, stratified=False)
    s = (torch.arange(4) + 0.5) / 4
    expected = 1 / (1 / 3.0 * (1 - s) + 1 / 80.0 * s)  # nerf.py::sample_coarse with lindisp
    assert torch.allclose(t, expected.expand(2, 4))


def test_stratified_jitter_differs_between_rays_and_calls():
    a = bin_offsets(8, 16, stratified=True)
    b = bin_offsets(8, 16, stratified=True)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a[0], a[1])


def test_distance_gradient_matches_finite_differences():
    offsets = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: disparity_linear_distances(s, 3.0, 80.0), (offsets,))


def test_offsets_invert_the_distances():
    """``disparity_linear_offsets`` is the inverse map: 0 at near, 1 at far, and back to the drawn offsets."""
    offsets = torch.rand(4, 7, dtype=torch.float64)
    distances = disparity_linear_distances(offsets, 3.0, 80.0)
    assert torch.allclose(disparity_linear_offsets(distances, 3.0, 80.0), offsets, atol=1e-12)
    ends = disparity_linear_offsets(torch.tensor([3.0, 80.0], dtype=torch.float64), 3.0, 80.0)
    assert ends.tolist() == [0.0, 1.0]
    six = disparity_linear_offsets(torch.tensor([6.0], dtype=torch.float64), 3.0, 80.0)
    assert six.tolist() == [(1 / 3 - 1 / 6) / (1 / 3 - 1 / 80)]
