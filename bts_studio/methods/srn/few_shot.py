"""Few-shot reconstruction of unseen instances: fit new latent codes with every network frozen.

SRN reconstructs a test object from one or two views by optimising a fresh code (N(0, 0.01^2) init) under
the training loss while the hypernetwork, ray marcher and pixel generator stay fixed (SRN's
``--overwrite_embeddings --freeze_networks`` run of ``train.py``; classics.md A.4). The codes of many
instances are fitted together: their losses are independent and Adam's update is per element, so one
joint optimisation equals separate ones.

Deviation (documented in docs/benchmarks.md): SRN runs this for 100k steps at learning rate 5e-5; an
evaluation command cannot, so the defaults take fewer steps at a higher learning rate.
"""

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Tuple

import torch
from jaxtyping import Float
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from bts_studio.methods.srn.model import SRNModel


@dataclass
class FewShotConfig:
    """How ns-eval reconstructs test instances from a few views and scores them."""

    shots: Tuple[int, ...] = (1, 2)
    """Protocols to run: k-shot conditions on the first k views of ``input_views``."""
    input_views: Tuple[int, ...] = (64, 104)
    """Conditioning view indices in order (SRN: 1-shot view 64, 2-shot views 64 and 104). Empty: the
    dataparser's ``few_shot_views``."""
    num_steps: int = 1000
    """Optimisation steps of the new codes (SRN: 100k at lr 5e-5)."""
    learning_rate: float = 1.0e-3
    """Adam learning rate of the new codes."""
    rays_per_instance: int = 4096
    """Rays per instance per step, drawn from its input views (all of them when they have fewer pixels)."""
    instances_per_batch: int = 16
    """Test instances fitted together (memory grows with ``instances_per_batch * rays_per_instance``; 16 x 4096
    rays take roughly 10 GB at SRN's sizes)."""
    max_instances: int = -1
    """Evaluate only the first N test instances (-1: all)."""
    view_stride: int = 1
    """Score every k-th remaining view (1: all, the protocol; larger only for quick looks)."""
    seed: int = 0
    """Seed of the code initialisation and ray sampling."""
    saved_views_per_instance: int = 3
    """With ``ns-eval --render-output-path``: rendered views saved per instance and protocol."""


@dataclass
class InstanceRays:
    """The conditioning rays of ``U`` instances, ``M`` rays each (all pixels of their input views)."""

    origins: Float[Tensor, "U M 3"]
    directions: Float[Tensor, "U M 3"]
    directions_norm: Float[Tensor, "U M 1"]
    colours: Float[Tensor, "U M 3"]


@contextmanager
def frozen_networks(model: SRNModel) -> Iterator[None]:
    """Turn off gradients of every network parameter (and the training codes); restore them afterwards."""
    parameters = list(model.parameters())
    previous = [parameter.requires_grad for parameter in parameters]
    try:
        for parameter in parameters:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in zip(parameters, previous, strict=True):
            parameter.requires_grad_(flag)


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=True,
    )


def fit_latent_codes(
    model: SRNModel, rays: InstanceRays, config: FewShotConfig, description: str = "Fitting latent codes"
) -> Tuple[Float[Tensor, "U D"], List[float]]:
    """Fit one new code per instance to its conditioning rays; networks frozen.

    Args:
        model: a trained multi-instance SRN.
        rays: the conditioning rays, on the model's device.
        config: steps, learning rate, batch size and seed.
        description: progress bar label.

    Returns:
        The codes ``[U, D]`` and the loss of every step (on that step's ray sample).
    """
    if model.config.single_scene:
        raise ValueError("few-shot reconstruction needs a multi-instance SRN (single_scene=False)")
    num_instances, num_rays = rays.colours.shape[:2]
    device = rays.colours.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    codes = torch.randn(num_instances, model.config.latent_dim, generator=generator, device=device)
    codes = (codes * model.config.latent_init_std).requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=config.learning_rate)
    take = min(config.rays_per_instance, num_rays)
    losses: List[float] = []
    with frozen_networks(model), torch.enable_grad(), _progress() as progress:
        task = progress.add_task(description, total=config.num_steps, status="")
        for _ in range(config.num_steps):
            sample = _sample_rays(rays, take, generator)
            # No start-depth jitter: the fitted code should not chase the marcher's noise.
            outputs = model.render_grouped(model.scene_function(codes), *sample[:3], jitter=False)
            terms = model.srn_loss_terms(outputs["rgb_signed"], sample[3], outputs["z_depth"], codes)
            loss = sum(terms.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            progress.update(task, advance=1, status=f"loss {losses[-1]:.4f}")
    return codes.detach(), losses


def _sample_rays(rays: InstanceRays, take: int, generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    num_instances, num_rays = rays.colours.shape[:2]
    fields = (rays.origins, rays.directions, rays.directions_norm, rays.colours)
    if take >= num_rays:
        return fields
    device = rays.colours.device
    choice = torch.randint(0, num_rays, (num_instances, take), generator=generator, device=device)
    return tuple(field.gather(1, choice[..., None].expand(-1, -1, field.shape[-1])) for field in fields)
