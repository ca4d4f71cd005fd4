"""A nerfstudio ``Sampler`` that places BTS's point samples: stratified and linear in disparity.

nerfstudio's ``LinearDisparitySampler`` jitters bin *edges* and evaluates the field at bin midpoints in
euclidean space; BTS evaluates at ``t_k`` drawn inside bin ``k`` of the disparity spacing and composites with
``delta_k = t_{k+1} - t_k``. This sampler keeps BTS's maths (``core.sampling``) and returns standard
``RaySamples``: ``frustums.starts`` are the sample distances ``t_k`` (evaluate at
``frustums.get_start_positions()``), ``deltas`` are BTS's deltas (``core.compositing.sample_deltas``).
Near and far are fixed distances along the unit ray (the bundle's ``nears``/``fars`` are ignored, as in BTS).
"""

from typing import Optional, Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.model_components.ray_samplers import Sampler
from torch import Tensor

from bts_studio.core.compositing import sample_deltas
from bts_studio.core.sampling import disparity_linear_distances, disparity_linear_samples


class DisparityLinearPointSampler(Sampler):
    """``num_samples`` BTS samples per ray between ``near`` and ``far``.

    Args:
        num_samples: samples per ray (BTS: 64).
        near: first-bin distance (BTS KITTI-360: 3 m).
        far: last-bin distance (BTS: 80 m).
        train_stratified: jitter inside each bin while training.
        eval_stratified: jitter in eval mode too (BTS does; off gives deterministic renders at bin centres).
    """

    def __init__(
        self, num_samples: int, near: float, far: float, train_stratified: bool = True, eval_stratified: bool = False
    ) -> None:
        super().__init__(num_samples=num_samples)
        self.near = near
        self.far = far
        self.train_stratified = train_stratified
        self.eval_stratified = eval_stratified

    def sample_distances(
        self, num_rays: int, device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> Tuple[Float[Tensor, "num_rays num_samples"], Float[Tensor, "num_rays num_samples"]]:
        """Bin positions ``s`` in ``[0, 1]`` and distances ``t`` (along the unit ray) of ``num_rays`` rays: what
        ``generate_ray_samples`` wraps, without building ``RaySamples`` (the model's render path uses this)."""
        stratified = self.train_stratified if self.training else self.eval_stratified
        return disparity_linear_samples(
            num_rays, int(self.num_samples or 0), self.near, self.far, stratified, device=device, dtype=dtype
        )

    def generate_ray_samples(self, ray_bundle: Optional[RayBundle] = None) -> RaySamples:
        """Samples for every ray of a flat bundle ``[R]``; ``RaySamples`` has shape ``[R, S]``."""
        assert ray_bundle is not None and ray_bundle.origins.dim() == 2, "give a flat ray bundle [R]"
        offsets, distances = self.sample_distances(
            ray_bundle.origins.shape[0], ray_bundle.origins.device, ray_bundle.origins.dtype
        )
        return ray_bundle.get_ray_samples(
            bin_starts=distances[..., None],
            bin_ends=(distances + sample_deltas(distances))[..., None],
            spacing_starts=offsets[..., None],
            spacing_ends=torch.cat([offsets[:, 1:], torch.ones_like(offsets[:, :1])], dim=-1)[..., None],
            spacing_to_euclidean_fn=lambda s: disparity_linear_distances(s, self.near, self.far),
        )
