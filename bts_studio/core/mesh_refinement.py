"""DVR's mesh refinement: a few optimiser steps on marching-cubes vertices towards the occupancy surface.

Source: ``Generator3D.refine_mesh`` in ``im2mesh/dvr/generation.py`` of
``autonomousvision/differentiable_volumetric_rendering`` (inherited from Occupancy Networks, Mescheder et al.,
CVPR 2019, Sec. 3.3), run after marching cubes with ``generation.refinement_step: 30`` and
``refine_max_faces: 10000`` in DVR's ``configs/default.yaml``. Per step, on a batch of faces:

- a random point ``p`` on each face, barycentric weights ~ Dirichlet(1/2, 1/2, 1/2);
- the face normal ``n = (v1 - v0) x (v2 - v1) / (|.| + 1e-10)``;
- ``o = sigmoid(f(p))`` and the target normal ``t = -do/dp / (|do/dp| + 1e-10)`` (outwards, where the occupancy
  falls), kept in the graph (the original differentiates it with ``create_graph=True``);
- loss ``mean((o - threshold)^2) + normal_weight * mean(|n - t|^2)`` (threshold 0.5 as a probability, weight 0.01);
- one ``torch.optim.RMSprop`` step (lr 1e-5, PyTorch's defaults otherwise) on the vertex positions.

Faces are batched as the original's shuffling ``DataLoader``: each pass over the faces is a fresh permutation cut
into batches of ``faces_per_step`` (the last one smaller), and every batch is one step. Faces must be oriented
outwards (as :func:`bts_studio.eval.meshes.grid_to_mesh` makes them), else the normal term pulls them the wrong
way. Framework-free torch.
"""

from typing import Callable, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["OccupancyLogits", "dirichlet_half_weights", "refine_mesh_vertices"]

OccupancyLogits = Callable[[Float[Tensor, "P 3"]], Float[Tensor, " P"]]
"""Occupancy logits at points ``[P, 3]``, differentiable twice in the points (a closure over a latent code)."""


def dirichlet_half_weights(count: int, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
    """``[count, 3]`` barycentric weights ~ Dirichlet(1/2, 1/2, 1/2) (DVR's face-point sampling).

    A Gamma(1/2, 1) variable is ``z^2 / 2`` for a standard normal ``z``, and a Dirichlet sample is normalised
    Gamma variables, so the weights are ``z_i^2 / sum_j z_j^2`` (``torch.distributions.Dirichlet`` takes no
    generator).
    """
    squares = torch.randn(count, 3, generator=generator, device=device).square()
    return squares / squares.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def refine_mesh_vertices(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    occupancy_logits_fn: OccupancyLogits,
    steps: int = 30,
    lr: float = 1e-5,
    threshold: float = 0.5,
    normal_weight: float = 0.01,
    faces_per_step: int = 10_000,
    generator: Optional[torch.Generator] = None,
    batch_points: int = 20_000,
    step_callback: Optional[Callable[[int], None]] = None,
) -> Float[Tensor, "V 3"]:
    """Vertices after DVR's ``steps`` refinement steps (see the module docstring); the input is not modified.

    Args:
        vertices: ``[V, 3]`` float vertex positions (the device and dtype of the computation).
        faces: ``[F, 3]`` vertex indices, oriented outwards.
        occupancy_logits_fn: logits at ``[P, 3]`` points -> ``[P]``; called with gradients enabled.
        steps: optimiser steps (DVR: 30); 0 returns a copy of ``vertices``.
        lr: RMSprop learning rate (DVR: 1e-5).
        threshold: iso-level as an occupancy probability (DVR: 0.5).
        normal_weight: weight of the normal term (DVR: 0.01).
        faces_per_step: faces per step (DVR's ``refine_max_faces``: 10,000).
        generator: random source of the face order and the points (None: the global one).
        batch_points: points per call of ``occupancy_logits_fn`` (DVR: 20,000).
        step_callback: called with the step index after each step (a progress bar: 30 steps of a 512-wide decoder
            take minutes on a CPU).

    Returns:
        ``[V, 3]`` refined vertices, detached, same dtype and device.

    Raises:
        ValueError: wrong shapes, face indices out of range, or non-positive ``faces_per_step``/``batch_points``.
    """
    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if faces_per_step <= 0 or batch_points <= 0 or steps < 0:
        raise ValueError(f"need steps >= 0 and positive sizes, got {steps=}, {faces_per_step=}, {batch_points=}")
    if len(faces) and (int(faces.min()) < 0 or int(faces.max()) >= len(vertices)):
        raise ValueError(f"face indices must lie in [0, {len(vertices)}), got [{int(faces.min())}, {int(faces.max())}]")
    refined = vertices.detach().clone()
    if steps == 0 or len(faces) == 0:
        return refined
    device = vertices.device
    faces = faces.to(device=device, dtype=torch.long)
    refined.requires_grad_(True)
    optimizer = torch.optim.RMSprop([refined], lr=lr)
    order = torch.empty(0, dtype=torch.long, device=device)
    random_device = generator.device if generator is not None else device  # draws happen where the generator is
    with torch.enable_grad():  # callers extract meshes under no_grad
        for step in range(steps):
            if len(order) == 0:  # a new pass over the faces, as a shuffling DataLoader
                order = torch.randperm(len(faces), generator=generator, device=random_device).to(device)
            batch, order = faces[order[:faces_per_step]], order[faces_per_step:]
            corners = refined[batch]  # [B, 3 corners, 3]
            weights = dirichlet_half_weights(len(batch), generator, random_device).to(
                device=device, dtype=vertices.dtype
            )
            points = (corners * weights[:, :, None]).sum(dim=1)
            normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1], dim=-1)
            normal = normal / (normal.norm(dim=-1, keepdim=True) + 1e-10)
            occupancy = torch.cat(
                [torch.sigmoid(occupancy_logits_fn(chunk)) for chunk in points.split(batch_points)]
            ).reshape(len(batch))
            (gradient,) = torch.autograd.grad(occupancy.sum(), points, create_graph=True)
            target = -gradient / (gradient.norm(dim=-1, keepdim=True) + 1e-10)
            loss_value = (occupancy - threshold).square().mean()
            loss_normal = (normal - target).square().sum(dim=-1).mean()
            loss = loss_value + normal_weight * loss_normal
            # Gradients for the vertices only: the network's parameters keep no .grad from mesh extraction.
            (refined.grad,) = torch.autograd.grad(loss, refined)
            optimizer.step()
            if step_callback is not None:
                step_callback(step)
    return refined.detach()
