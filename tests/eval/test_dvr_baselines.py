"""benchmarks/dvr_baselines.py mean-shape on a tiny generated cars class (3 training cars, 4 views of 24 px).

The refined row runs DVR's vertex refinement on the mean grid's trilinear field, whose normal term needs a double
backward in the points. The GPU image's PyTorch (2.11) has no double backward for ``grid_sample`` 3-D (issue 13:
"derivative for aten::grid_sampler_3d_backward is not implemented") while newer ones do, so the test runs with a
``grid_sample`` that, as 2.11's, can be differentiated only once: a field built on it fails here too.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("dvr_baselines")


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth_tiny_dvr) -> Path:
    out = tmp_path_factory.mktemp("dvr_baselines") / "synthetic"
    return synth_tiny_dvr(out, instances=3, views=4, input_views=1) / "dvr"


def once_differentiable_grid_sample(original):
    """``grid_sample`` with the first derivatives of ``original`` and no second ones (PyTorch 2.11's 3-D case).

    Its backward refuses to build a graph (``create_graph=True``, the only way to a second derivative), with
    PyTorch 2.11's message: a little earlier than 2.11, which fails at the second backward itself.
    """

    class GridSample(torch.autograd.Function):
        @staticmethod
        def forward(ctx, volume, grid, kwargs):
            ctx.save_for_backward(volume, grid)
            ctx.kwargs = kwargs
            return original(volume, grid, **kwargs)

        @staticmethod
        def backward(ctx, grad_output):
            if torch.is_grad_enabled():  # autograd enables grad mode in backward only for create_graph=True
                raise RuntimeError("derivative for aten::grid_sampler_3d_backward is not implemented")
            volume, grid = (tensor.detach().requires_grad_(True) for tensor in ctx.saved_tensors)
            with torch.enable_grad():
                sampled = original(volume, grid, **ctx.kwargs)
            return (*torch.autograd.grad(sampled, (volume, grid), grad_output), None)

    def grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
        kwargs = {"mode": mode, "padding_mode": padding_mode, "align_corners": align_corners}
        return GridSample.apply(volume, grid, kwargs)

    return grid_sample


def test_the_stand_in_grid_sample_refuses_a_double_backward():
    grid_sample = once_differentiable_grid_sample(F.grid_sample)
    points = torch.rand(1, 4, 1, 1, 3, requires_grad=True)
    volume = torch.rand(1, 1, 3, 3, 3)
    value = grid_sample(volume, points, align_corners=True).sum()
    (gradient,) = torch.autograd.grad(value, points)  # first derivatives as grid_sample's
    (expected,) = torch.autograd.grad(F.grid_sample(volume, points, align_corners=True).sum(), points)
    assert torch.equal(gradient, expected)
    with pytest.raises(RuntimeError, match="grid_sampler_3d_backward is not implemented"):
        torch.autograd.grad(grid_sample(volume, points, align_corners=True).sum(), points, create_graph=True)


def test_mean_shape_with_refinement_writes_a_finite_refined_row(script, data, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "grid_sample", once_differentiable_grid_sample(F.grid_sample))
    out = tmp_path / "dvr_mean_shape.json"
    argv = ["dvr_baselines.py", "mean-shape", "--data", str(data), "--out", str(out), "--resolution", "16",
            "--num-points", "2000", "--device", "cpu", "--refinement-steps", "3"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    result = json.loads(out.read_text())
    refined = result["refined"]
    assert refined["refinement_steps"] == 3
    for row in (result, refined):
        for key in ("chamfer_l1", "normal_consistency", "fscore", "accuracy", "completeness"):
            assert math.isfinite(row[key]), f"{key}: {row[key]}"
    assert refined["chamfer_l1"] < 0.5  # a mesh in the unit cube, not a blown-up one


def test_axis_regions_name_the_dominant_axis_in_the_object_frame(script):
    normals = np.array([[1, 0.2, 0], [-1, 0, 0.3], [0, 1, 0], [0.1, -1, 0], [0, 0, -1], [0, 0.5, 0.9]], dtype=float)
    assert [script.AXIS_REGIONS[index] for index in script.axis_regions(normals)] == [
        "front", "back", "up", "down", "left", "right"
    ]  # fmt: skip


def test_nc_breakdown_regions_add_up_to_the_metric(script, data, tmp_path, monkeypatch):
    """The per-region terms are the metric's own (mesh_correspondences): their deficits add up to 1 - NC of each
    direction, whose mean is mesh_metrics' normal consistency; part labels come from the rebuilt generator instance;
    a mesh read from disk (--source mesh, world frame) scores as the mesh it was written from."""
    mesh_path = tmp_path / "mean_0.ply"
    argv = ["dvr_baselines.py", "mean-shape", "--data", str(data), "--out", str(tmp_path / "mean.json"),
            "--resolution", "16", "--num-points", "2000", "--device", "cpu", "--mesh", str(mesh_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    results = {}
    for source, extra in (("mean-shape", []), ("mesh", ["--mesh", str(tmp_path / "mean_{object}.ply"), "--frame",
                                                        "world"])):  # fmt: skip
        out = tmp_path / f"nc_{source}.json"
        argv = ["dvr_baselines.py", "nc-breakdown", "--source", source, "--data", str(data), "--out", str(out),
                "--resolution", "16", "--num-points", "2000", "--device", "cpu", "--objects", "1", *extra]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        script.main()
        results[source] = json.loads(out.read_text())
    row = results["mean-shape"]["objects"][0]
    assert row["metrics"]["normal_consistency"] == pytest.approx(0.5 * (row["accuracy_nc"] + row["completeness_nc"]))
    for group in ("axis", "part"):
        for side in ("accuracy", "completeness"):
            regions = row[group][side]
            assert sum(entry["share"] for entry in regions.values()) == pytest.approx(1.0)
            assert sum(entry["deficit"] for entry in regions.values()) == pytest.approx(1 - row[f"{side}_nc"])
    assert {"body", "wheel", "cabin"} <= set(row["part"]["completeness"])
    assert row["part"]["completeness"].get("none", {"share": 0.0})["share"] < 0.05
    from_disk = results["mesh"]["objects"][0]
    assert from_disk["metrics"]["normal_consistency"] == pytest.approx(row["metrics"]["normal_consistency"], abs=1e-3)
    assert results["mean-shape"]["mean"]["normal_consistency"] == pytest.approx(row["metrics"]["normal_consistency"])


def test_part_labels_are_skipped_for_data_of_another_seed(script, data):
    from bts_studio.data.shapenet.dvr_reader import load_pointcloud

    path = next(data.glob("*/*/pointcloud.npz"))
    points, normals = load_pointcloud(path)
    assert script.part_regions(path, points, normals, 0, "cars") is not None
    assert script.part_regions(path, points, normals, 1, "cars") is None
