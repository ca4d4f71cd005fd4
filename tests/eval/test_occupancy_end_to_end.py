"""eval-occupancy and render-bev on a bts-density checkpoint trained for 2 steps on a tiny generated KITTI-360 set."""

import json

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 64, 160  # parsed size of the shared run (tests/eval/conftest.py)


def test_eval_occupancy_reports_both_variants_for_model_and_baseline(trained_config, tmp_path):
    from bts_studio.eval import occupancy_cli

    output = tmp_path / "occ.json"
    occupancy_cli.main(
        [
            "--load-config",
            str(trained_config),
            "--output-path",
            str(output),
            "--variant",
            "both",
            "--baseline",
            "depth+4m",
        ]
    )
    report = json.loads(output.read_text())  # strict JSON: NaN became null
    assert report["num_images"] >= 2 and set(report["results"]) == {"official", "exact"}
    for variant, by_model in report["results"].items():
        assert set(by_model) == {"bts-density-tiny", "depth+4m"}
        for metrics in by_model.values():
            assert metrics["n_frames"] == report["num_images"]
            for name in ("o_acc", "ie_acc"):
                assert 0.0 <= metrics[name] <= 1.0, (variant, name)
        # The baseline is built on the model's depth: the same points are visible, so the same are invisible-empty.
        model, baseline = (report["per_image"][variant][name] for name in ("bts-density-tiny", "depth+4m"))
        assert [entry["t_ie"] for entry in model] == [entry["t_ie"] for entry in baseline]
    depth = report["depth"]["bts-density-tiny"]
    assert depth["n_frames"] == report["num_images"] and depth["abs_rel"] > 0 and 0 <= depth["a1"] <= 1
    assert all(1 <= entry["num_scans"] <= 4 for entry in report["per_image"]["official"]["depth+4m"])


def test_render_bev_writes_panels_and_a_video(trained_config, tmp_path):
    from bts_studio.eval import bev_cli

    output = tmp_path / "bev"
    argv = [
        "--load-config",
        str(trained_config),
        "--output-dir",
        str(output),
        "--max-images",
        "1",
        "--panels",
        "image",
        "depth",
        "gt",
        "baseline",
        "--grid.pixels-per-metre",
        "2",
        "--grid.height-levels",
        "8",
        "--video",
    ]
    bev_cli.main(argv)
    pngs = sorted(output.glob("bev_*.png"))
    assert len(pngs) == 1 and (output / "bev.mp4").stat().st_size > 0
    frame = np.asarray(Image.open(pngs[0]))
    bev_height = 2 * round(25 * 2)  # z 5..30 m at 2 px/m, upscaled twice
    assert frame.shape[0] == bev_height
    # camera column plus three BEV panels (model, baseline, ground truth) of 60 x 50 px upscaled to 120 x 100
    assert frame.shape[1] > 3 * 120
    with pytest.raises(SystemExit, match="not empty"):
        bev_cli.main(argv)


def test_evaluation_cameras_are_the_cameras_the_model_was_trained_with(synthetic_root):
    """The evaluation's KITTI-360 chain (files) and the dataparser's cameras agree up to the recentring."""
    import torch

    from bts_studio.core.geometry import opencv_to_opengl
    from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    outputs = Kitti360DataParserConfig(data=synthetic_root, target_height=HEIGHT, target_width=WIDTH).setup()
    outputs = outputs.get_dataparser_outputs("test")
    metadata = outputs.cameras.metadata
    calibration = Kitti360Calibration(synthetic_root, outputs.metadata["sequences"][0])
    for index in range(len(outputs.cameras)):
        expected = torch.from_numpy(
            calibration.rectified_camera_to_world(int(metadata["pose_index"][index]), int(metadata["camera_id"][index]))
        )
        expected[:3, 3] += outputs.dataparser_transform[:, 3].double()
        parsed = opencv_to_opengl(outputs.cameras.camera_to_worlds[index]).double()
        assert torch.allclose(parsed, expected[:3], atol=1e-4)
