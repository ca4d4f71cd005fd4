"""Photometric and smoothness losses of Behind the Scenes, on small image patches.

Follows ``models/bts/model/loss.py`` and ``models/common/model/layers.py`` of the official code:
    * SSIM with a 3x3 Gaussian window (weights 0.0947 / 0.1183 / 0.1478), C1 = 0.01^2, C2 = 0.03^2 and
      **zero** padding of one pixel, computed inside each patch; dissimilarity ``clamp(1 - SSIM, 0, 1) / 2``;
    * per-pixel error ``0.85 mean_c(dissimilarity) + 0.15 mean_c |pred - target|``;
    * minimum of that error over the render views;
    * ``weight_guided`` invalid rule: a pixel is discarded when more than 90 % of its compositing weight is
      invalid in **every** render view; discarded pixels contribute 0 but still count in the mean;
    * edge-aware smoothness of the disparity ``1 / clamp(distance, 1e-3, 80)`` normalised by its patch mean;
    * optional (off in BTS's configs and by default here): Monodepth2's auto-masking (Godard et al., ICCV 2019,
      Sec. 3.3; ``trainer.py`` ``compute_losses`` of the official monodepth2 code), see :func:`automasked_pixels`;
    * optional (this project's deviation, off by default): the minimum over the valid views only, per pixel,
      see :func:`invalid_views`;
    * optional (this project's deviation, off by default): mip-NeRF 360's distortion loss on each ray's weights,
      see :func:`ray_distortion_loss`.

Shapes: ``P`` patches, ``V`` render views, ``C`` channels, ``h x w`` patch size.
"""

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from bts_studio.core.sampling import disparity_linear_offsets

SSIM_WEIGHT = 0.85
"""Share of the SSIM term in the photometric error (the L1 term gets the rest)."""
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
INVALID_MASS_THRESHOLD = 0.9
DISPARITY_MIN_DISTANCE = 1e-3
DISPARITY_MAX_DISTANCE = 80.0
AUTOMASK_TIE_NOISE = 1e-5
"""Standard deviation of the noise added to the identity errors to break ties (monodepth2's ``randn * 0.00001``)."""


@functools.lru_cache(maxsize=16)
def _window(dtype: torch.dtype, device: torch.device) -> Tensor:
    with torch.inference_mode(False):  # a cached inference tensor could not be saved for a later backward
        return torch.tensor(
            [[0.0947, 0.1183, 0.0947], [0.1183, 0.1478, 0.1183], [0.0947, 0.1183, 0.0947]], dtype=dtype, device=device
        )


def gaussian_window_3x3(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Float[Tensor, "3 3"]:
    """BTS's fixed 3x3 averaging window (a sampled Gaussian; it sums to 1.0).

    Made once per dtype and device: on CUDA, building it from a Python list is a copy from host memory that waits
    for all queued GPU work, and each SSIM built it five times per training step (11.7 ms of an H200 step's host
    time, issue 17, twelfth session). Callers must not write to it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # one cache entry per GPU, whichever is current
        device = torch.device("cuda", torch.cuda.current_device())
    return _window(dtype, device)


def _window_average(x: Float[Tensor, "N C h w"]) -> Float[Tensor, "N C h w"]:
    channels = x.shape[1]
    kernel = gaussian_window_3x3(x.dtype, x.device).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel, groups=channels)


def ssim_dissimilarity(x: Float[Tensor, "N C h w"], y: Float[Tensor, "N C h w"]) -> Float[Tensor, "N C h w"]:
    """``clamp(1 - SSIM(x, y), 0, 1) / 2`` per pixel and channel, 3x3 Gaussian window, zero padding."""
    assert x.shape == y.shape and x.dim() == 4, f"x {tuple(x.shape)} vs y {tuple(y.shape)}; need [N, C, h, w]"
    mu_x, mu_y = _window_average(x), _window_average(y)
    sigma_x = _window_average(x * x) - mu_x**2
    sigma_y = _window_average(y * y) - mu_y**2
    sigma_xy = _window_average(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return torch.clamp(1.0 - numerator / denominator, 0.0, 1.0) / 2.0


def photometric_error(pred: Float[Tensor, "N C h w"], target: Float[Tensor, "N C h w"]) -> Float[Tensor, "N h w"]:
    """Per-pixel ``0.85 mean_c(ssim_dissimilarity) + 0.15 mean_c |pred - target|``."""
    ssim_term = ssim_dissimilarity(pred, target).mean(dim=1)
    l1_term = (pred - target).abs().mean(dim=1)
    return SSIM_WEIGHT * ssim_term + (1.0 - SSIM_WEIGHT) * l1_term


def discarded_pixels(
    invalid_mass: Float[Tensor, "P V h w"], threshold: float = INVALID_MASS_THRESHOLD
) -> Bool[Tensor, "P h w"]:
    """BTS's ``weight_guided`` rule: discard where the invalid weight mass exceeds ``threshold`` in every view."""
    assert invalid_mass.dim() == 4, f"invalid_mass must be [P, V, h, w], got {tuple(invalid_mass.shape)}"
    return (invalid_mass > threshold).all(dim=1)


def min_view_errors(
    views: Float[Tensor, "P V C h w"],
    target: Float[Tensor, "P C h w"],
    view_missing: Optional[Bool[Tensor, "P V"]] = None,
    view_invalid: Optional[Bool[Tensor, "P V h w"]] = None,
) -> Float[Tensor, "P h w"]:
    """Per-pixel minimum over views of :func:`photometric_error` against ``target``; a missing view never wins
    (a pixel without any view gets the dtype's largest value), nor, per pixel, a view marked in ``view_invalid``
    (the opt-in valid-view minimum, :func:`invalid_views`; BTS lets every view compete)."""
    p, v, c, h, w = views.shape
    assert target.shape == (p, c, h, w), f"target {tuple(target.shape)} vs views {tuple(views.shape)}"
    errors = photometric_error(
        views.reshape(p * v, c, h, w), target[:, None].expand(p, v, c, h, w).reshape(-1, c, h, w)
    )
    errors = errors.reshape(p, v, h, w)
    if view_missing is not None:
        assert view_missing.shape == (p, v), f"view_missing {tuple(view_missing.shape)}, expected {(p, v)}"
        errors = errors.masked_fill(view_missing[:, :, None, None], torch.finfo(errors.dtype).max)
    if view_invalid is not None:
        assert view_invalid.shape == (p, v, h, w), f"view_invalid {tuple(view_invalid.shape)}, expected {(p, v, h, w)}"
        errors = errors.masked_fill(view_invalid, torch.finfo(errors.dtype).max)
    return errors.amin(dim=1)


def invalid_views(
    invalid_mass: Float[Tensor, "P V h w"], threshold: float = INVALID_MASS_THRESHOLD
) -> Bool[Tensor, "P V h w"]:
    """Per pixel, the render views whose invalid weight mass exceeds ``threshold`` (the sample colours they would
    give are mostly border values, or from outside the input frustum). BTS discards a pixel only when every view
    is invalid (:func:`discarded_pixels`) and otherwise lets invalid views compete in the minimum; excluding them
    per pixel is this project's opt-in deviation (``valid_view_minimum``; issue 18, docs/benchmarks.md,
    thirteenth session)."""
    assert invalid_mass.dim() == 4, f"invalid_mass must be [P, V, h, w], got {tuple(invalid_mass.shape)}"
    return invalid_mass > threshold


def identity_patches(
    images: Float[Tensor, "G V C H W"], patch_pixels: Int[Tensor, "G P p p 2"]
) -> Float[Tensor, "G P V C p p"]:
    """The frames ``images`` of each group read, un-warped, at the pixels ``(row, column)`` of the group's loss
    patches: Monodepth2's "identity reprojection" of the source frames (the render frames here)."""
    g, v, c, height, width = images.shape
    assert (
        patch_pixels.dim() == 5 and patch_pixels.shape[0] == g and patch_pixels.shape[-1] == 2
    ), f"patch_pixels must be [G={g}, P, p, p, 2], got {tuple(patch_pixels.shape)}"
    rows, cols = patch_pixels[..., 0], patch_pixels[..., 1]
    assert bool(((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).all()), "patch pixels outside images"
    groups = torch.arange(g, device=images.device)[:, None, None, None]
    # Advanced indices around the two slices move to the front: [G, P, p, p, V, C].
    return images[groups, :, :, rows, cols].permute(0, 1, 4, 5, 2, 3)


def automasked_pixels(
    rendered: Float[Tensor, "P V C h w"],
    identity: Float[Tensor, "P V C h w"],
    target: Float[Tensor, "P C h w"],
    view_missing: Optional[Bool[Tensor, "P V"]] = None,
    tie_noise: float = AUTOMASK_TIE_NOISE,
    view_invalid: Optional[Bool[Tensor, "P V h w"]] = None,
) -> Bool[Tensor, "P h w"]:
    """Monodepth2's auto-mask (Sec. 3.3) on BTS's min over render frames: True where the best un-warped render
    frame (``identity``, :func:`identity_patches`) explains the target pixel at least as well as the best
    rendered reprojection, i.e. the pixel would gain nothing from any depth (a surface moving with the camera, or
    a texture-less region whose colour every frame shows at the same pixel, where the far plane is as good as the
    truth; docs/benchmarks.md, "Why the tiny model misses the car").

    monodepth2 takes the minimum over the identity and the reprojection errors (ties go to the identity) and
    adds ``randn * tie_noise`` to the identity errors; here the noise is added to the best identity error. Views
    missing from a group count for neither term. Where no view exists nothing is masked (the loss is 0 there).
    ``view_invalid`` (the valid-view minimum, :func:`invalid_views`) restricts the rendered term only.
    """
    best_rendered = min_view_errors(rendered, target, view_missing, view_invalid)
    best_identity = min_view_errors(identity, target, view_missing)
    return automask_from_errors(best_rendered, best_identity, view_missing, tie_noise)


def automask_from_errors(
    best_rendered: Float[Tensor, "P h w"],
    best_identity: Float[Tensor, "P h w"],
    view_missing: Optional[Bool[Tensor, "P V"]] = None,
    tie_noise: float = AUTOMASK_TIE_NOISE,
) -> Bool[Tensor, "P h w"]:
    """:func:`automasked_pixels` from the two :func:`min_view_errors` (the loss reuses ``best_rendered``)."""
    assert best_identity.shape == best_rendered.shape, f"{tuple(best_identity.shape)} vs {tuple(best_rendered.shape)}"
    if tie_noise > 0:
        best_identity = best_identity + torch.randn_like(best_identity) * tie_noise
    masked = best_identity <= best_rendered
    if view_missing is not None:
        masked = masked & ~view_missing.all(dim=1)[:, None, None]
    return masked


def min_view_photometric_loss(
    rendered: Float[Tensor, "P V C h w"],
    target: Float[Tensor, "P C h w"],
    discard: Bool[Tensor, "P h w"],
    view_missing: Optional[Bool[Tensor, "P V"]] = None,
    view_invalid: Optional[Bool[Tensor, "P V h w"]] = None,
) -> Float[Tensor, ""]:
    """Mean over all pixels of the per-pixel minimum photometric error over render views.

    Args:
        rendered: the patch reconstructed with colours of each render view.
        target: the loss frame's patch.
        discard: pixels to zero (from :func:`discarded_pixels`, or with :func:`automasked_pixels` added); they
            still count in the mean, as in BTS.
        view_missing: render views absent from a group (their error never wins the minimum; a patch without any
            view contributes 0).
        view_invalid: per pixel, views that never win the minimum (:func:`invalid_views`; ``None`` in BTS). A
            pixel left without any view contributes 0, as a discarded one.
    """
    best = min_view_errors(rendered, target, view_missing, view_invalid)
    if view_invalid is not None:
        discard = discard | pixels_without_valid_view(view_invalid, view_missing)
    return photometric_loss_from_errors(best, discard, view_missing)


def pixels_without_valid_view(
    view_invalid: Bool[Tensor, "P V h w"], view_missing: Optional[Bool[Tensor, "P V"]] = None
) -> Bool[Tensor, "P h w"]:
    """Pixels where every render view is invalid or missing: the valid-view minimum has nothing to compare. In the
    model a missing view carries invalid mass 1, so these are already discarded; this guards callers whose missing
    views carry less."""
    excluded = view_invalid if view_missing is None else view_invalid | view_missing[:, :, None, None]
    return excluded.all(dim=1)


def photometric_loss_from_errors(
    best: Float[Tensor, "P h w"],
    discard: Bool[Tensor, "P h w"],
    view_missing: Optional[Bool[Tensor, "P V"]] = None,
) -> Float[Tensor, ""]:
    """:func:`min_view_photometric_loss` from the per-pixel :func:`min_view_errors` ``best`` (computed once when
    the auto-mask also compares with them)."""
    assert discard.shape == best.shape, f"discard {tuple(discard.shape)}, expected {tuple(best.shape)}"
    if view_missing is not None:
        best = best.masked_fill(view_missing.all(dim=1)[:, None, None], 0.0)  # nothing to compare with
    return (best * (~discard).to(best.dtype)).mean()


def edge_aware_smoothness(
    image: Float[Tensor, "P 3 h w"], distance: Float[Tensor, "P h w"], max_distance: float = DISPARITY_MAX_DISTANCE
) -> Float[Tensor, "P h w"]:
    """``|d_x D| exp(-|d_x I|) + |d_y D| exp(-|d_y I|)`` of the patch-mean-normalised disparity ``D``.

    ``D = (1 / clamp(distance, 1e-3, max_distance)) / mean_patch(...)``; image gradients are averaged over
    channels; the last column (row) has no x (y) term.
    """
    assert (
        image.dim() == 4 and distance.dim() == 3 and image.shape[-2:] == distance.shape[-2:]
    ), f"image {tuple(image.shape)} vs distance {tuple(distance.shape)}"
    disparity = 1.0 / distance.clamp(DISPARITY_MIN_DISTANCE, max_distance)
    disparity = disparity / disparity.mean(dim=(-2, -1), keepdim=True)
    d_dx = (disparity[..., :, :-1] - disparity[..., :, 1:]).abs()
    d_dy = (disparity[..., :-1, :] - disparity[..., 1:, :]).abs()
    i_dx = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(dim=1)
    i_dy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(dim=1)
    return F.pad(d_dx * torch.exp(-i_dx), (0, 1)) + F.pad(d_dy * torch.exp(-i_dy), (0, 0, 0, 1))


def masked_smoothness_loss(
    image: Float[Tensor, "P 3 h w"], distance: Float[Tensor, "P h w"], discard: Bool[Tensor, "P h w"]
) -> Float[Tensor, ""]:
    """Mean edge-aware smoothness with discarded pixels zeroed (still counted), as BTS."""
    smoothness = edge_aware_smoothness(image, distance)
    return (smoothness * (~discard).to(smoothness.dtype)).mean()


def ray_distortion_loss(
    weights: Float[Tensor, "N S"], distances: Float[Tensor, "N S"], near: float, far: float
) -> Float[Tensor, ""]:
    """Mip-NeRF 360's distortion loss (Barron et al. 2022, eq. 15; nerfstudio's ``lossfun_distortion``), mean over
    the ``N`` rays, in BTS's sample space: ``s`` linear in disparity from ``near`` (0) to ``far`` (1),
    :func:`bts_studio.core.sampling.disparity_linear_offsets`. Sample ``k``'s interval is ``[t_k, t_k+1]``, the
    compositing's (``core.compositing.sample_deltas``); the last one ends at ``far`` (half a bin on average, so weight
    on the last sample costs less in the intra-interval term). Not part of BTS: issue 18's
    opt-in (``BTSModelConfig.distortion_weight``), which penalises compositing weight spread along a ray, e.g. a
    translucent surface that leaks weight into the space behind it."""
    # Imported here: the entry points import this module, and nerfstudio's losses module is not loaded otherwise.
    from nerfstudio.model_components.losses import lossfun_distortion

    assert (
        weights.shape == distances.shape and weights.dim() == 2
    ), f"weights {tuple(weights.shape)} and distances {tuple(distances.shape)} must both be [N, S]"
    offsets = disparity_linear_offsets(distances, near, far)
    edges = torch.cat([offsets, torch.ones_like(offsets[:, :1])], dim=-1)  # [N, S + 1]
    return lossfun_distortion(edges, weights).mean()
