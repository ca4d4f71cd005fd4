"""The one-car check's verdict (issue #18): `benchmarks/onecar_check.sh` runs only the summary stage of
`benchmarks/gpu_occluders.sh`, on hand-made eval-occupancy reports (no data, no training)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def rows(ie_rec: float, o_rec: float, images: int = 4) -> list[dict]:
    return [
        {"sequence": "s", "frame_id": i, "o_acc": 0.97, "ie_acc": 0.6, "ie_rec": ie_rec, "o_rec": o_rec}
        for i in range(images)
    ]


def summary(tmp_path: Path, script: str, ie_rec: float, o_rec: float, **env: str) -> subprocess.CompletedProcess:
    """Run SCRIPT with STAGES=summary on a WORK whose evaluation scored the model at (ie_rec, o_rec) per image."""
    results = tmp_path / "work" / "results"
    results.mkdir(parents=True)
    exact = {"bts-density-tiny": rows(ie_rec, o_rec), "depth+4m": rows(0.7, 0.4)}
    report = {"num_images": 4, "per_image": {"exact": exact}}
    (results / "occupancy.json").write_text(json.dumps(report))
    (results / "occupancy_steps_seconds.txt").write_text("65000 60\n")
    environment = {key: value for key, value in os.environ.items() if not key.endswith("_FLOOR")}
    environment.update(
        WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"), STAGES="summary", PYTHON=sys.executable, **env
    )
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / script)], env=environment, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "ie_rec, o_rec, verdict",
    [
        (0.6, 0.6, "PASS"),
        (0.35, 0.25, "PASS"),  # the floors themselves pass
        (0.6, 0.2, "FAIL"),  # the car not found (seed 0 at 22k steps: O_rec 0.207)
        (1.0, 0.0, "FAIL"),  # a field empty everywhere in the cuboid
        (0.3, 0.6, "FAIL"),  # the car found, the space behind it filled
    ],
)
def test_verdict_and_exit_status(tmp_path, ie_rec, o_rec, verdict):
    done = summary(tmp_path, "onecar_check.sh", ie_rec, o_rec)
    line = f"One-car check: exact IE_rec {ie_rec:.3f} (floor 0.350), exact O_rec {o_rec:.3f} (floor 0.250): {verdict}"
    assert line in done.stdout, done.stdout + done.stderr
    assert done.returncode == (0 if verdict == "PASS" else 3), done.stderr
    assert line in (tmp_path / "out" / "occluders_summary.md").read_text()


def test_the_wrapper_fixes_the_knobs(tmp_path):
    done = summary(tmp_path, "onecar_check.sh", 0.6, 0.6, WORLD="street", RAYS="4096", STEPS="100")
    header = (tmp_path / "out" / "occluders_summary.md").read_text().splitlines()[2]
    assert "World one-car, 1 x 32 frames, scale 0.25" in header, header
    assert "bts-density-tiny, ResNet-18, 96x320, 2 groups x 512 rays x 32 samples" in header
    assert "of 100 steps" in header, "STEPS passes through"
    assert done.returncode == 0


def test_an_ie_rec_floor_alone_is_refused_before_any_work(tmp_path):
    done = summary(tmp_path, "gpu_occluders.sh", 0.6, 0.6, IE_REC_FLOOR="0.35")
    assert done.returncode == 1
    assert "IE_REC_FLOOR=0.35 needs O_REC_FLOOR too" in done.stderr
    assert not (tmp_path / "out").exists()


def test_without_floors_there_is_no_check(tmp_path):
    done = summary(tmp_path, "gpu_occluders.sh", 1.0, 0.0)
    assert done.returncode == 0, done.stderr
    assert "One-car check" not in done.stdout
