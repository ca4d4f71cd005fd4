"""The one-car check (issue #18): `benchmarks/onecar_check.sh` and the floors of `benchmarks/gpu_occluders.sh`, run
with STAGES=summary (or train) on hand-made work folders: eval-occupancy reports and run markers, no data, no
training."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Knobs a caller's environment could carry into the scripts; each test sets what it needs.
INHERITED = (
    "IE_REC_FLOOR",
    "O_REC_FLOOR",
    "O_ACC_FLOOR",
    "STEPS",
    "SEED",
    "DEADLINE",
    "RESERVE",
    "SPLIT",
    "MAX_IMAGES",
)
# Every knob the wrapper fixes, set to another value in the caller's environment.
HOSTILE = {
    "WORLD": "street",
    "SEQUENCES": "2",
    "FRAMES": "100",
    "SCALE": "0.52",
    "DATA_SEED": "7",
    "METHOD": "bts-density",
    "RESNET": "50",
    "BATCH_GROUPS": "16",
    "RAYS": "4096",
    "SAMPLES": "64",
    "LR": "5e-4",
    "NEAR": "1.0",
    "TARGET_H": "192",
    "TARGET_W": "640",
    "TEST_EVERY": "5",
    "BEV_IMAGES": "2",
    "FISHEYE": "0",
    "TF32": "0",
    "IMAGENET": "/weights.pth",
    "AUTOMASK": "1",
    "HEAD_LR": "1e-3",
    "EXTRA_TRAIN_ARGS": "--pipeline.model.distortion-weight 0.01",
    "EXTRA_DATA_ARGS": "--split-file x.txt",
    "IE_REC_FLOOR": "0",
    "O_REC_FLOOR": "0",
    "O_ACC_FLOOR": "0",
    "SPLIT": "train",
    "MAX_IMAGES": "2",
}


def rows(ie_rec: float, o_rec: float | None, o_acc: float, images: int = 4) -> list[dict]:
    return [
        {"sequence": "s", "frame_id": i, "o_acc": o_acc, "ie_acc": 0.6, "ie_rec": ie_rec, "o_rec": o_rec}
        for i in range(images)
    ]


def run(tmp_path: Path, script: str, stages: str = "summary", args=(), **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED}
    environment.update(WORK=str(tmp_path / "work"), OUT=str(tmp_path / "out"), STAGES=stages, PYTHON=sys.executable)
    environment.update(env)
    command = ["bash", str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, check=False, timeout=120)


def evaluated(tmp_path: Path, ie_rec: float, o_rec: float | None, o_acc: float) -> None:
    """A work folder whose evaluation, at 64968 steps, scored the model at (ie_rec, o_rec, o_acc) on every image
    (o_rec None: undefined, as on images without car points)."""
    results = tmp_path / "work" / "results"
    results.mkdir(parents=True, exist_ok=True)
    exact = {"bts-density-tiny": rows(ie_rec, o_rec, o_acc), "depth+4m": rows(0.7, 0.4, 0.97)}
    report = {"num_images": 4, "per_image": {"exact": exact}}
    (results / "occupancy.json").write_text(json.dumps(report))
    (results / "occupancy_steps_seconds.txt").write_text("64968 60\n")


@pytest.mark.parametrize(
    "ie_rec, o_rec, o_acc, verdict",
    [
        (0.6, 0.55, 0.976, "PASS"),  # the 65k-step runs
        (0.34, 0.27, 0.96, "PASS"),  # the floors themselves (four equal values: the means are exact)
        (0.3399, 0.6, 0.976, "FAIL"),  # more of the hidden space filled than the 65k-step models
        (0.6, None, 0.976, "FAIL"),  # O_rec undefined on every image (no car points): no verdict can pass
        (0.6, 0.269, 0.976, "FAIL"),  # the car not found (seed 0 at 22k steps: O_rec 0.207)
        (0.6, 0.6, 0.959, "FAIL"),  # O_acc just below its floor: too much else called occupied
        (1.0, 0.0, 0.97, "FAIL"),  # a field empty everywhere in the cuboid
        (0.655, 0.308, 0.728, "FAIL"),  # the untrained model (20 CPU steps): a third of the cuboid occupied
    ],
)
def test_verdict_and_exit_status(tmp_path, ie_rec, o_rec, o_acc, verdict):
    evaluated(tmp_path, ie_rec, o_rec, o_acc)
    done = run(tmp_path, "onecar_check.sh")

    def cell(name, value, floor):
        below = "" if value is not None and value >= floor else "below the "
        return f"exact {name} {'nan' if value is None else f'{value:.4f}'} ({below}floor {floor:g})"

    cells = [cell("IE_rec", ie_rec, 0.34), cell("O_rec", o_rec, 0.27), cell("O_acc", o_acc, 0.96)]
    line = f"One-car check at 64968 steps: {', '.join(cells)}: {verdict}"
    assert line in done.stdout, done.stdout + done.stderr
    assert done.returncode == (0 if verdict == "PASS" else 3), done.stderr
    assert line in (tmp_path / "out" / "occluders_summary.md").read_text()


def test_a_failed_check_does_not_stick_to_the_work_folder(tmp_path):
    """Chained calls share WORK: a FAIL at ~22k steps must not turn a later PASS into exit 3."""
    evaluated(tmp_path, 0.6, 0.2, 0.976)
    assert run(tmp_path, "onecar_check.sh").returncode == 3
    evaluated(tmp_path, 0.6, 0.55, 0.976)
    done = run(tmp_path, "onecar_check.sh")
    assert done.returncode == 0 and ": PASS" in done.stdout, done.stdout + done.stderr


def test_the_evaluation_scores_the_whole_test_split(tmp_path):
    """SPLIT and MAX_IMAGES of the caller's environment (read by gpu_occupancy.sh) must not reach eval-occupancy."""
    work = tmp_path / "work"
    run_dir = work / "outputs" / "occluders" / "bts-density-tiny" / "run"
    (run_dir / "nerfstudio_models").mkdir(parents=True)
    (run_dir / "nerfstudio_models" / "step-000000099.ckpt").write_bytes(b"")
    (run_dir / "config.yml").write_text("")
    (work / "occl_data_knobs.txt").write_text("world=one-car sequences=1 frames=32 scale=0.25 data_seed=0\n")
    calls = tmp_path / "python_calls.txt"
    stub = tmp_path / "python"  # records each call's arguments instead of running anything
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{calls}"\n')
    stub.chmod(0o755)
    done = run(tmp_path, "onecar_check.sh", stages="eval", PYTHON=str(stub), SPLIT="train", MAX_IMAGES="2")
    evaluations = [line for line in calls.read_text().splitlines() if "eval-occupancy" in line]
    assert len(evaluations) == 1, done.stdout + done.stderr
    assert "--split test" in evaluations[0] and "--max-images" not in evaluations[0], evaluations[0]


def test_help_prints_the_header_and_runs_nothing(tmp_path):
    done = run(tmp_path, "onecar_check.sh", stages="data", args=["--help"])
    assert done.returncode == 0
    assert "exact IE_rec >= 0.34" in done.stdout and "CPU smoke" in done.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
    wrong = run(tmp_path, "onecar_check.sh", stages="data", args=["--steps", "10"])
    assert wrong.returncode == 2 and "no arguments expected" in wrong.stderr
    assert not (tmp_path / "out").exists()


def test_no_evaluation_is_a_failure(tmp_path):
    done = run(tmp_path, "onecar_check.sh")
    assert "One-car check: not evaluated (run the eval stage): FAIL" in done.stdout
    assert done.returncode == 3


def test_the_wrapper_fixes_the_knobs_and_floors(tmp_path):
    evaluated(tmp_path, 0.6, 0.55, 0.976)
    done = run(tmp_path, "onecar_check.sh", **HOSTILE)
    for name, value in HOSTILE.items():
        assert f"onecar_check.sh: ignoring {name}={value} from the environment" in done.stderr, name
    header = (tmp_path / "out" / "occluders_summary.md").read_text().splitlines()[2]
    assert "World one-car, 1 x 32 frames, scale 0.25, data seed 0" in header, header
    assert "bts-density-tiny, ResNet-18, 96x320, 2 groups x 512 rays x 32 samples, lr 1e-4, near 3.0 m" in header
    assert "fisheyes True, ImageNet: none" in header
    assert "; 0 of 65000 steps in 0 training stage(s)" in header, "STEPS defaults to 65000"
    assert "(floor 0.34)" in done.stdout and "(floor 0.27)" in done.stdout and "(floor 0.96)" in done.stdout
    assert done.returncode == 0


def test_knobs_outside_the_summary_are_fixed_too(tmp_path):
    """TEST_EVERY, TF32, AUTOMASK, HEAD_LR and the extra arguments enter the run's marker, which a resume must match:
    a leaked knob would be refused (exit 1) instead of reaching 'train: skipped'."""
    work = tmp_path / "work"
    checkpoints = work / "outputs" / "occluders" / "bts-density-tiny" / "run" / "nerfstudio_models"
    checkpoints.mkdir(parents=True)
    (checkpoints / "step-000000099.ckpt").write_bytes(b"")  # 100 steps done
    (work / "occl_data_knobs.txt").write_text("world=one-car sequences=1 frames=32 scale=0.25 data_seed=0\n")
    (work / "occl_train_knobs.txt").write_text(
        "method=bts-density-tiny seed=0 fisheye=1 groups=2 rays=512 samples=32 resnet=18 lr=1e-4 near=3.0 "
        "target=96x320 test_every=3 tf32=1 imagenet= extra_train= extra_data=\n"
    )
    done = run(tmp_path, "onecar_check.sh", stages="train", STEPS="100", SEED="0", **HOSTILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "train: skipped (100 steps done, STEPS=100)" in done.stdout
    refused = run(tmp_path, "onecar_check.sh", stages="train", STEPS="100", SEED="1")
    assert refused.returncode == 1 and "use the same knobs in every call" in refused.stdout


FLOORS = ("IE_REC_FLOOR", "O_REC_FLOOR", "O_ACC_FLOOR")


@pytest.mark.parametrize("given", [combo for n in (1, 2) for combo in itertools.combinations(FLOORS, n)])
def test_some_floors_alone_are_refused_before_any_work(tmp_path, given):
    done = run(tmp_path, "gpu_occluders.sh", **{name: "0.3" for name in given})
    assert done.returncode == 1
    assert "the one-car check needs all three floors" in done.stderr
    assert not (tmp_path / "out").exists()


def test_without_floors_there_is_no_check(tmp_path):
    evaluated(tmp_path, 1.0, 0.0, 0.97)
    done = run(tmp_path, "gpu_occluders.sh")
    assert done.returncode == 0, done.stderr
    assert "One-car check" not in done.stdout
