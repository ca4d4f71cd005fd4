"""Tier 1: BTS photometric loss (patch SSIM + L1, min over views, invalid rule, optional Monodepth2 auto-mask) and
edge-aware smoothness."""

import pytest
import torch
import torch.nn.functional as F

from bts_studio.methods.bts.losses import (
    automasked_pixels,
    discarded_pixels,
    edge_aware_smoothness,
    identity_patches,
    invalid_views,
    masked_smoothness_loss,
    min_view_errors,
    min_view_photometric_loss,
    photometric_error,
    pixels_without_valid_view,
    ssim_dissimilarity,
)


def _official_ssim_term(x, y):
    """BTS ``SSIM(pad_reflection=False, gaussian_average=True, comp_mode=True)``, transcribed."""
    window = torch.tensor([[0.0947, 0.1183, 0.0947], [0.1183, 0.1478, 0.1183], [0.0947, 0.1183, 0.0947]], dtype=x.dtype)
    kernel = window.repeat(x.shape[1], 1, 1, 1)

    def pool(v):
        return F.conv2d(v, kernel, padding=0, groups=x.shape[1])

    x, y = F.pad(x, (1, 1, 1, 1)), F.pad(y, (1, 1, 1, 1))
    mu_x, mu_y = pool(x), pool(y)
    sigma_x = pool(x**2) - mu_x**2
    sigma_y = pool(y**2) - mu_y**2
    sigma_xy = pool(x * y) - mu_x * mu_y
    n = (2 * mu_x * mu_y + 0.01**2) * (2 * sigma_xy + 0.03**2)
    d = (mu_x**2 + mu_y**2 + 0.01**2) * (sigma_x + sigma_y + 0.03**2)
    return torch.clamp(1 - n / d, 0, 1) / 2


def test_ssim_term_matches_official_and_error_mix():
    x, y = torch.rand(4, 3, 8, 8, dtype=torch.float64), torch.rand(4, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(ssim_dissimilarity(x, y), _official_ssim_term(x, y))
    expected = 0.85 * _official_ssim_term(x, y).mean(1) + 0.15 * (x - y).abs().mean(1)
    assert torch.allclose(photometric_error(x, y), expected)
    assert float(photometric_error(x, x).abs().max()) < 1e-9


def test_min_over_views_discard_rule_and_mean_counts_discarded():
    target = torch.rand(2, 3, 8, 8)
    good, bad = target.clone(), torch.rand(2, 3, 8, 8)
    rendered = torch.stack([bad, good], dim=1)  # view 1 is perfect -> loss 0
    no_discard = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert float(min_view_photometric_loss(rendered, target, no_discard)) < 1e-6
    # View 1 missing: only the bad view counts.
    missing = torch.tensor([[False, True], [False, True]])
    only_bad = min_view_photometric_loss(rendered, target, no_discard, missing)
    assert torch.allclose(only_bad, photometric_error(bad, target).mean())
    # Discarding half of the pixels halves the loss (they still count in the mean).
    half = torch.zeros(2, 8, 8, dtype=torch.bool)
    half[:, :4] = True
    errors = photometric_error(bad, target)
    assert torch.allclose(
        min_view_photometric_loss(rendered, target, half, missing), (errors * ~half).sum() / errors.numel()
    )


def test_discarded_pixels_needs_every_view_invalid():
    mass = torch.zeros(1, 2, 2, 2)
    mass[0, 0] = 0.95
    assert not discarded_pixels(mass).any()
    mass[0, 1, 0, 0] = 0.91
    assert discarded_pixels(mass)[0].tolist() == [[True, False], [False, False]]


def test_smoothness_zero_for_constant_depth_and_edge_aware():
    image = torch.rand(3, 3, 8, 8)
    assert float(edge_aware_smoothness(image, torch.full((3, 8, 8), 10.0)).abs().max()) == 0.0
    distance = torch.full((1, 8, 8), 10.0)
    distance[..., 4:] = 20.0  # a depth edge between columns 3 and 4
    flat, edged = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    edged[..., 4:] = 1.0  # an image edge at the same place
    assert float(edge_aware_smoothness(edged, distance).sum()) < float(edge_aware_smoothness(flat, distance).sum())
    assert edge_aware_smoothness(flat, distance).shape == (1, 8, 8)
    discard = torch.ones(1, 8, 8, dtype=torch.bool)
    assert float(masked_smoothness_loss(flat, distance, discard)) == 0.0


def test_gradients_float64():
    # fast_mode checks one random projection of the Jacobian: full float64 conv Jacobians are slow on 2 cores.
    target = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    rendered = torch.rand(1, 2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    discard = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda r: min_view_photometric_loss(r, target, discard), (rendered,), fast_mode=True
    )
    distance = (torch.rand(1, 4, 4, dtype=torch.float64) * 20 + 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda d: masked_smoothness_loss(target, d, discard), (distance,), fast_mode=True)


def test_patches_without_any_render_view_contribute_zero():
    target, rendered = torch.rand(2, 3, 8, 8), torch.rand(2, 2, 3, 8, 8)
    keep = torch.zeros(2, 8, 8, dtype=torch.bool)
    missing = torch.tensor([[True, True], [False, True]])
    loss = min_view_photometric_loss(rendered, target, keep, missing)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, photometric_error(rendered[1:, 0], target[1:]).sum() / (2 * 64))


def test_min_view_errors_is_the_per_pixel_minimum_and_skips_missing_views():
    target, a, b = torch.rand(3, 2, 3, 8, 8).unbind(0)
    errors = min_view_errors(torch.stack([a, b], 1), target)
    assert torch.equal(errors, torch.minimum(photometric_error(a, target), photometric_error(b, target)))
    only_a = min_view_errors(torch.stack([a, b], 1), target, torch.tensor([[False, True], [False, True]]))
    assert torch.equal(only_a, photometric_error(a, target))


def test_the_valid_view_minimum_skips_invalid_views_per_pixel_and_equals_bts_without_any():
    target = torch.rand(1, 3, 8, 8)
    good, bad = target.clone(), torch.rand(1, 3, 8, 8)
    rendered = torch.stack([bad, good], dim=1)  # view 1 reproduces the target
    mass = torch.zeros(1, 2, 8, 8)
    mass[0, 1, :, :4] = 0.95  # view 1 is invalid on the left half: there only the bad view may win
    invalid = invalid_views(mass)
    assert invalid[0, 1, :, :4].all() and not invalid[0, 0].any() and not invalid[0, 1, :, 4:].any()
    best = min_view_errors(rendered, target, view_invalid=invalid)
    bad_errors = photometric_error(bad, target)
    assert torch.equal(best[0, :, :4], bad_errors[0, :, :4])
    assert float(best[0, :, 4:].abs().max()) < 1e-6
    # BTS's rule lets the invalid view win (its error is 0 everywhere); nothing invalid: the two rules agree.
    no_discard = discarded_pixels(mass)
    assert not no_discard.any()
    bts = min_view_photometric_loss(rendered, target, no_discard)
    valid = min_view_photometric_loss(rendered, target, no_discard, view_invalid=invalid)
    assert float(bts) < 1e-6 < float(valid)
    assert torch.allclose(valid, bad_errors[0, :, :4].sum() / 64)
    none = invalid_views(torch.zeros(1, 2, 8, 8))
    assert torch.equal(min_view_photometric_loss(rendered, target, no_discard, view_invalid=none), bts)


def test_a_pixel_without_a_valid_view_contributes_zero_not_the_largest_float():
    target, rendered = torch.rand(1, 3, 8, 8), torch.rand(1, 2, 3, 8, 8)
    mass = torch.zeros(1, 2, 8, 8)
    mass[0, 0, 0, 0] = 0.95  # view 0 invalid at (0, 0) and view 1 missing: no view left there
    missing = torch.tensor([[False, True]])
    invalid = invalid_views(mass)
    assert pixels_without_valid_view(invalid, missing)[0].nonzero().tolist() == [[0, 0]]
    # A discard that keeps (0, 0) (a caller whose missing view carries no invalid mass): the loss must zero it.
    keep = torch.zeros(1, 8, 8, dtype=torch.bool)
    rendered.requires_grad_(True)
    loss = min_view_photometric_loss(rendered, target, keep, missing, invalid)
    errors = photometric_error(rendered[:, 0].detach(), target)
    errors[0, 0, 0] = 0.0
    assert torch.isfinite(loss) and torch.allclose(loss, errors.mean())
    loss.backward()
    assert torch.isfinite(rendered.grad).all() and rendered.grad[:, 0].abs().sum() > 0


def test_identity_patches_read_every_render_frame_at_the_loss_pixels():
    g, v, height, width = 2, 3, 5, 7
    # Pixel value = a code of (group, view, channel, row, column): the gather must return exactly those.
    codes = torch.arange(g * v * 3 * height * width, dtype=torch.float32).reshape(g, v, 3, height, width)
    pixels = torch.tensor(
        [[[[[0, 0], [4, 6]], [[2, 3], [1, 5]]]], [[[[3, 1], [0, 6]], [[4, 0], [2, 2]]]]]
    )  # [G,1,2,2,2]
    patches = identity_patches(codes, pixels)
    assert patches.shape == (g, 1, v, 3, 2, 2)
    for gi in range(g):
        for y in range(2):
            for x in range(2):
                row, col = pixels[gi, 0, y, x].tolist()
                assert torch.equal(patches[gi, 0, :, :, y, x], codes[gi, :, :, row, col])


def test_automask_drops_exactly_the_patches_an_unwarped_frame_explains():
    """Four 6x6 patches, two render views each (hand-made: either a view reproduces the target exactly, error 0,
    or it is unrelated noise, error ~0.2):

    0: a rendered reprojection is exact, no un-warped frame is: kept;
    1: an un-warped frame is exact, every rendering is noise: masked (any depth is as good as the far plane);
    2: as 1, but the exact un-warped frame is a missing view (it repeats a loss frame) and a rendering is close
       (target + 0.02): kept;
    3: every view missing: kept (nothing to compare; the loss is 0 there anyway);
    4: rendering and un-warped frame both exact (a tie, what the far plane gives on a flat surface): masked.
    """
    torch.manual_seed(0)
    target = torch.rand(5, 3, 6, 6)
    noise = torch.rand(5, 2, 3, 6, 6)
    exact = target[:, None].expand(5, 2, 3, 6, 6)
    rendered, identity = noise.clone(), torch.rand(5, 2, 3, 6, 6)
    rendered[0, 1] = exact[0, 1]
    identity[1, 0] = exact[1, 0]
    identity[2, 1] = exact[2, 1]
    rendered[2, 0] = (target[2] + 0.02).clamp(0, 1)
    rendered[4, 0], identity[4, 1] = exact[4, 0], exact[4, 1]
    missing = torch.zeros(5, 2, dtype=torch.bool)
    missing[2, 1] = True
    missing[3] = True
    for tie_noise in (0.0, 1e-5):
        masked = automasked_pixels(rendered, identity, target, missing, tie_noise=tie_noise)
        assert masked.shape == (5, 6, 6)
        per_patch = masked.float().mean(dim=(1, 2))
        expected = [0.0, 1.0, 0.0, 0.0, 1.0] if tie_noise == 0 else [0.0, 1.0, 0.0, 0.0, None]
        for got, want in zip(per_patch.tolist(), expected, strict=True):
            assert want is None or got == want, (per_patch, tie_noise)
    # The loss drops the masked patches (they still count in the mean, as BTS's discarded pixels).
    masked = automasked_pixels(rendered, identity, target, missing, tie_noise=0.0)
    no_discard = torch.zeros(5, 6, 6, dtype=torch.bool)
    best = min_view_errors(rendered, target, missing).masked_fill(missing.all(1)[:, None, None], 0.0)
    loss = min_view_photometric_loss(rendered, target, no_discard | masked, missing)
    assert torch.allclose(loss, (best * ~masked).sum() / best.numel())
    assert float(best[1].mean()) > 0.05  # what patch 1 would have pushed towards without the mask


def test_ray_distortion_loss_by_hand_and_by_gradient():
    """One ray whose weight sits on one sample costs only the intra term, w^2 * width / 3 in disparity-linear s;
    spreading the same weight over two distant samples costs more; the gradient is the finite differences'."""
    from bts_studio.core.sampling import disparity_linear_distances
    from bts_studio.methods.bts.losses import ray_distortion_loss

    near, far = 3.0, 80.0
    offsets = torch.tensor([[0.1, 0.4, 0.7]], dtype=torch.float64)
    distances = disparity_linear_distances(offsets, near, far)
    one = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    assert float(ray_distortion_loss(one, distances, near, far)) == pytest.approx((0.7 - 0.4) / 3)
    split = torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64)
    by_hand = 2 * 0.5 * 0.5 * abs((0.1 + 0.4) / 2 - (0.7 + 1.0) / 2) + (0.25 * 0.3 + 0.25 * 0.3) / 3
    assert float(ray_distortion_loss(split, distances, near, far)) == pytest.approx(by_hand)
    assert by_hand > (0.7 - 0.4) / 3
    weights = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    rays = disparity_linear_distances(torch.sort(torch.rand(3, 5, dtype=torch.float64), dim=-1).values, near, far)
    assert torch.autograd.gradcheck(lambda w: ray_distortion_loss(w, rays, near, far), (weights,))
    # Refused: by the run-time shape check in the tests, by the function's own assert where that is off.
    with pytest.raises((AssertionError, TypeError)):
        ray_distortion_loss(weights[:, :4], rays, near, far)
