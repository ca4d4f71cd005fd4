"""Tier 1: DVR's mesh refinement (``core/mesh_refinement.py``) pulls marching-cubes vertices onto a sphere."""

import numpy as np
import pytest
import torch

from bts_studio.core.mesh_refinement import dirichlet_half_weights, refine_mesh_vertices
from bts_studio.core.mise import grid_points
from bts_studio.eval.meshes import grid_to_mesh

RADIUS = 0.3
SLOPE = 20.0  # logit per unit length: the sigmoid goes 0.12 -> 0.88 within 0.1 (1.6 coarse voxels)


def sphere_logits(points: torch.Tensor) -> torch.Tensor:
    """Occupancy logit ``k (r - |p|)`` (positive inside)."""
    return SLOPE * (RADIUS - points.norm(dim=-1))


def staircase_sphere():
    """Marching cubes of a near-binary sphere on a 16^3 grid: vertices at edge midpoints, voxel-scale normal noise."""
    points = grid_points(16, 0.5).reshape(-1, 3)
    values = torch.sigmoid(1000 * (RADIUS - points.norm(dim=-1))).reshape(17, 17, 17)
    mesh = grid_to_mesh(values, 0.5, 0.5)
    return torch.tensor(np.asarray(mesh.vertices), dtype=torch.float32), torch.tensor(np.asarray(mesh.faces))


def radial_error(vertices: torch.Tensor) -> float:
    return float((vertices.norm(dim=-1) - RADIUS).abs().mean())


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Mean ``|n . n_true|`` of the faces (the true normal of a sphere is the direction of the face centre)."""
    corners = vertices[faces]
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    centre = corners.mean(dim=1)
    cosine = (normal * centre).sum(-1) / (normal.norm(dim=-1) * centre.norm(dim=-1))
    return float(cosine.abs().mean())


def test_refinement_moves_vertices_onto_the_sphere_and_straightens_normals():
    vertices, faces = staircase_sphere()
    before_error, before_nc = radial_error(vertices), normal_consistency(vertices, faces)
    assert before_error > 0.006 and before_nc < 0.95, "the coarse staircase mesh is off the sphere"
    refined = refine_mesh_vertices(
        vertices, faces, sphere_logits, steps=30, lr=1e-3, generator=torch.Generator().manual_seed(0)
    )
    assert refined.shape == vertices.shape and refined.dtype == vertices.dtype
    assert radial_error(refined) < before_error / 4, "mean |‖v‖ - r| drops at least 4x (measured ~7x)"
    assert normal_consistency(refined, faces) > 0.99


def test_dvr_defaults_move_in_the_right_direction():
    """With DVR's own settings (30 steps, lr 1e-5, all 824 faces per step) the error falls, if only a little."""
    vertices, faces = staircase_sphere()
    refined = refine_mesh_vertices(vertices, faces, sphere_logits, generator=torch.Generator().manual_seed(0))
    assert radial_error(refined) < 0.95 * radial_error(vertices)
    assert normal_consistency(refined, faces) > normal_consistency(vertices, faces)
    # 30 RMSprop steps of lr 1e-5 move a vertex by at most ~sum_n 1e-5 / sqrt(1 - 0.99^n) ~ 1e-3.
    assert float((refined - vertices).norm(dim=-1).max()) < 3e-3


def test_face_subsets_cover_every_face_and_keep_the_input():
    vertices, faces = staircase_sphere()
    original = vertices.clone()
    touched = torch.zeros(len(vertices), dtype=torch.bool)
    calls = []

    def counting_logits(points: torch.Tensor) -> torch.Tensor:
        calls.append(len(points))
        return sphere_logits(points)

    # 824 faces in batches of 300: 300, 300, 224, then a fresh permutation.
    refined = refine_mesh_vertices(vertices, faces, counting_logits, steps=4, lr=1e-3, faces_per_step=300)
    assert calls == [300, 300, 224, 300]
    touched = (refined - original).norm(dim=-1) > 0
    assert touched.float().mean() > 0.95, "every face took part within one pass"
    assert torch.equal(vertices, original), "the input is not modified"


def test_zero_steps_and_empty_meshes_return_the_input():
    vertices, faces = staircase_sphere()
    unchanged = refine_mesh_vertices(vertices, faces, sphere_logits, steps=0)
    assert torch.equal(unchanged, vertices) and unchanged.data_ptr() != vertices.data_ptr()
    empty = refine_mesh_vertices(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), sphere_logits)
    assert empty.shape == (0, 3)


def test_network_parameters_get_no_gradients_and_no_grad_callers_work():
    vertices, faces = staircase_sphere()
    network = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Softplus(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        refined = refine_mesh_vertices(vertices, faces, lambda p: network(p)[:, 0], steps=2, lr=1e-3)
    assert refined.shape == vertices.shape and not refined.requires_grad
    assert all(parameter.grad is None for parameter in network.parameters())


def test_bad_shapes_raise():
    vertices, faces = staircase_sphere()
    # The test run's jaxtyping hook (a TypeError) or our own check (ValueError) answers first.
    with pytest.raises((ValueError, TypeError)):
        refine_mesh_vertices(vertices[:, :2], faces, sphere_logits)
    with pytest.raises((ValueError, TypeError)):
        refine_mesh_vertices(vertices, faces[:, :2], sphere_logits)
    with pytest.raises(ValueError, match="face indices"):
        refine_mesh_vertices(vertices[:10], faces, sphere_logits)


def test_dirichlet_half_weights_have_the_dirichlet_moments():
    weights = dirichlet_half_weights(200_000, torch.Generator().manual_seed(0))
    assert weights.shape == (200_000, 3) and torch.allclose(weights.sum(-1), torch.ones(200_000))
    assert weights.min() >= 0
    # Dirichlet(1/2, 1/2, 1/2): mean 1/3, variance a (a0 - a) / (a0^2 (a0 + 1)) = 0.5 * 1 / (2.25 * 2.5) = 0.0889.
    assert torch.allclose(weights.mean(0), torch.full((3,), 1 / 3), atol=3e-3)
    assert torch.allclose(weights.var(0), torch.full((3,), 0.5 / (2.25 * 2.5)), atol=2e-3)


def test_degenerate_faces_stay_finite():
    """A zero-area face (marching cubes can make them) has a zero normal; RMSprop bounds its steps to ~10 lr."""
    vertices = torch.tensor([[0.3, 0.0, 0.0], [0.3, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.3, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 1, 3]])
    refined = refine_mesh_vertices(vertices, faces, sphere_logits, steps=5)
    assert torch.isfinite(refined).all()
    assert float((refined - vertices).abs().max()) <= 5 * 10 * 1e-5 + 1e-7


def test_step_callback_sees_every_step_and_changes_nothing():
    """The progress hook of ``bts-studio export-mesh`` is called once per step, after it, with the step index."""
    vertices, faces = staircase_sphere()
    seen = []
    kwargs = dict(steps=5, lr=1e-3, faces_per_step=300)
    with_hook = refine_mesh_vertices(
        vertices, faces, sphere_logits, generator=torch.Generator().manual_seed(0), step_callback=seen.append, **kwargs
    )
    without = refine_mesh_vertices(vertices, faces, sphere_logits, generator=torch.Generator().manual_seed(0), **kwargs)
    assert seen == [0, 1, 2, 3, 4]
    assert torch.equal(with_hook, without)
