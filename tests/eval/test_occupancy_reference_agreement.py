"""benchmarks/occupancy_reference_agreement.py on a tiny generated KITTI-360 set (22 posed frames, 84x23 images)."""

import json
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occupancy_reference_agreement")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("occref") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=24, scale=0.06, seed=0, device="cpu"))
    return root


def test_cli_writes_report_and_reference_matches_exact_occupancy(script, synthetic_root, tmp_path, monkeypatch):
    output = tmp_path / "agreement.json"
    argv = ["occupancy_reference_agreement.py", "--data", str(synthetic_root), "--output-json", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    assert torch.is_grad_enabled(), "the script must not switch autograd off for the rest of the process"
    report = json.loads(output.read_text())
    assert [entry["pose_index"] for entry in report["per_image"]] == [0, 5, 10, 15, 20]  # test_every 5
    summary = report["summary"]
    counts = summary["mean_counts_per_image"]
    assert counts["n_points"] == 80 * 160
    parts = counts["n_exact_occupied"] + counts["n_exact_free_visible"] + counts["n_exact_occluded_free"]
    assert parts == pytest.approx(80 * 160)
    assert counts["n_exact_occupied"] > 0
    assert summary["raw"]["ref_occupied_given_exact_occupied"]["pooled"] > 0.5
    assert summary["scored_scan"]["agreement_all"]["pooled"] > 0.8


def test_script_reference_matches_evaluate_official_frame(script, synthetic_root):
    """The script's vote, masked by the current scan's visibility, is the protocol's reference for a model whose
    depth map is all zeros (then only the scan's visibility counts), on the same query points."""
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene
    from bts_studio.eval.density_field import FrameField
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration, evaluate_official_frame, load_lidar_sweep

    sequence, pose_index, frame_id = script.split_test_images(synthetic_root, 5)[1]
    calibration = Kitti360Calibration(synthetic_root, sequence)
    scene = load_ground_truth_scene(synthetic_root, sequence)
    masks = script.analyse_image(synthetic_root, sequence, pose_index, frame_id, calibration, scene)
    field = FrameField(lambda p: torch.zeros(len(p)), torch.zeros(4, 4), torch.eye(3))
    frame = evaluate_official_frame(field, load_lidar_sweep(calibration, pose_index))
    assert torch.equal(frame.gt_occupied, masks["scored_scan"])
    assert torch.equal(frame.query_tilted, masks["query_tilted"])


def test_data_without_ground_truth_is_refused_with_the_missing_file(script, synthetic_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "no_gt"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("bts_gt"))
    monkeypatch.setattr(sys, "argv", ["occupancy_reference_agreement.py", "--data", str(root)])
    with pytest.raises(SystemExit, match=r"bts_gt/.*scene\.json.*synth-kitti360"):
        script.main()
