"""Tier 1: MISE + marching cubes recover a sphere-like field, and DVR's mesh metrics behave as the paper's."""

from pathlib import Path

import numpy as np
import pytest
import torch

from bts_studio.core.mise import grid_points, mise_grid
from bts_studio.eval.meshes import EMPTY_MESH_DISTANCE, grid_to_mesh, mesh_metrics, write_mesh

RADIUS = 0.3


def sphere_logits(points: torch.Tensor) -> torch.Tensor:
    """Occupancy logits of a slightly bumpy sphere (positive inside), like a trained field's."""
    bump = 0.01 * torch.sin(8 * points[:, 0]) * torch.sin(8 * points[:, 1])
    return 30 * (RADIUS + bump - points.norm(dim=-1))


def sphere_points(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(count, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return normals * RADIUS, normals


def test_mise_mesh_of_a_sphere_has_small_chamfer():
    counts = []
    grid = mise_grid(sphere_logits, 0.5, resolution_0=16, upsampling_steps=3, progress=lambda _, n: counts.append(n))
    assert grid.shape == (129, 129, 129)
    assert sum(counts) < 0.3 * grid.numel(), "MISE evaluates the fine grid only near the surface"
    # Where MISE evaluated, its values equal the dense evaluation; the sign agrees everywhere.
    dense = sphere_logits(grid_points(128, 0.5).reshape(-1, 3)).reshape(grid.shape)
    assert ((grid >= 0) == (dense >= 0)).float().mean() == 1.0
    mesh = grid_to_mesh(grid, 0.5)
    outward = (mesh.face_normals * mesh.triangles_center).sum(-1) > 0
    assert outward.mean() > 0.99, "faces point outwards"
    points, normals = sphere_points(30_000)
    metrics = mesh_metrics(mesh, points, normals, num_points=30_000)
    assert metrics["chamfer_l1"] < 0.01 and metrics["chamfer_l1_x10"] == pytest.approx(10 * metrics["chamfer_l1"])
    assert metrics["normal_consistency"] > 0.98 and metrics["fscore"] > 0.85
    assert metrics["chamfer_l1"] == pytest.approx(0.5 * (metrics["accuracy"] + metrics["completeness"]))


def test_empty_and_shifted_meshes_score_worse():
    points, normals = sphere_points(5000)
    empty = grid_to_mesh(-torch.ones(9, 9, 9), 0.5)
    worst = mesh_metrics(empty, points, normals)
    assert worst["accuracy"] == EMPTY_MESH_DISTANCE and worst["fscore"] == 0.0
    mesh = grid_to_mesh(mise_grid(sphere_logits, 0.5, 16, 1), 0.5)
    shifted = mesh.copy()
    shifted.apply_translation([0.05, 0, 0])
    good, bad = mesh_metrics(mesh, points, normals, 5000), mesh_metrics(shifted, points, normals, 5000)
    assert bad["chamfer_l1"] > good["chamfer_l1"] + 0.01 and bad["fscore"] < good["fscore"]


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_meshes_are_written_with_vertex_colours(tmp_path, suffix):
    import trimesh

    mesh = grid_to_mesh(mise_grid(sphere_logits, 0.5, 8, 1), 0.5)
    mesh.visual.vertex_colors = np.tile(np.array([[200, 10, 10, 255]], np.uint8), (len(mesh.vertices), 1))
    path = write_mesh(mesh, tmp_path / f"sphere{suffix}")
    loaded = trimesh.load(path, process=False)
    assert len(loaded.vertices) == len(mesh.vertices)
    assert (np.asarray(loaded.visual.vertex_colors)[:, 0] == 200).all()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_mesh(mesh, path)


@pytest.mark.parametrize(
    "option, value",
    [("--resolution-0", "0"), ("--upsampling-steps", "-1"), ("--threshold", "1.0"), ("--refinement-steps", "-2")],
)
def test_export_mesh_refuses_bad_mesh_options_before_loading_the_run(tmp_path, option, value):
    """Each mesh option out of range names itself and what it accepts, before the (slow) run is loaded: the config
    here is a stub that loading would reject."""
    from bts_studio.cli import entrypoint

    stub = tmp_path / "config.yml"
    stub.write_text("not a nerfstudio config\n")
    with pytest.raises(SystemExit, match=rf"^{option} {value}: expected "):
        entrypoint(["export-mesh", "--load-config", str(stub), "--output", str(tmp_path / "m.ply"), option, value])


def test_export_mesh_refuses_a_source_image_that_is_no_image_before_loading_the_run(tmp_path):
    """A ``--source-image`` that is not a readable image is named, with what was expected, before the run is
    loaded (it used to fail with PIL's UnidentifiedImageError traceback after the load)."""
    from bts_studio.cli import entrypoint

    stub = tmp_path / "config.yml"
    stub.write_text("not a nerfstudio config\n")
    bad = tmp_path / "car.png"
    bad.write_text("not an image")
    args = ["export-mesh", "--load-config", str(stub), "--output", str(tmp_path / "m.ply"), "--source-image", str(bad)]
    with pytest.raises(SystemExit, match=rf"^--source-image {bad}: not a readable image .*expected an RGB image"):
        entrypoint(args)


def test_export_mesh_says_when_the_surface_is_empty():
    """An empty mesh (no point reaches the threshold) is reported as such, and no refinement step is claimed."""
    import trimesh

    from bts_studio.eval.export_mesh_cli import mesh_report

    empty = trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64))
    lines = mesh_report(empty, Path("m.ply"), refinement_steps=30, threshold=0.5, seconds=1.0)
    assert lines[0] == "wrote m.ply: 0 vertices, 0 faces (0 refinement steps) in 1.0 s"
    assert "empty" in lines[1] and "0.5" in lines[1] and "--threshold" in lines[1]
    sphere = trimesh.creation.icosphere(subdivisions=1)
    assert mesh_report(sphere, Path("m.ply"), 30, 0.5, 2.0) == [
        "wrote m.ply: 42 vertices, 80 faces (30 refinement steps) in 2.0 s"
    ]
