"""Tier 3: interrupted and failing training runs (bts_studio/utils/trainer.py), start-up checks, inference resolution.

- ``ns-train bts-density-tiny`` killed while writing a checkpoint (a failure injected mid-write) leaves no
  truncated checkpoint; ``--load-dir`` resumes from the last good one, falling back past damaged ones, with the
  step counter and the optimiser state continuing.
- A non-finite training step stops the run naming the step and the batch's images; no NaN checkpoint is written.
- srn's few-shot settings are checked against the data at start-up, with a hint for ns-train or ns-eval.
- ``encode_source`` answers at the model's training resolution whatever the input size.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FRAMES, SCALE = 6, 0.06
HEIGHT, WIDTH = 64, 160

INJECT_FAILURE = """
import io, os, sys, torch
real_save, calls = torch.save, [0]
def save_then_die(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["FAIL_ON_SAVE"]):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # half a checkpoint, then the process dies
        f.flush()
        os._exit(137)
    return real_save(obj, f, *args, **kwargs)
torch.save = save_then_die
from nerfstudio.scripts.train import entrypoint
sys.argv = ["ns-train", *sys.argv[1:]]
entrypoint()
"""


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run

    root = tmp_path_factory.mktemp("resume_kitti360") / "KITTI-360"
    run(SynthKitti360Config(out=root, frames=FRAMES, scale=SCALE, seed=0, device="cpu"))
    return root


def ns_train_args(data: Path, output_dir: Path, csv_path: Path, iterations: int, *extra: str) -> list:
    return [
        "bts-density-tiny", "--data", str(data), "--output-dir", str(output_dir), "--vis", "tensorboard",
        "--machine.device-type", "cpu", "--max-num-iterations", str(iterations), "--steps-per-save", "2",
        "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--timestamp", "run", *extra,
        "--pipeline.datamanager.groups-per-batch", "1", "--pipeline.datamanager.rays-per-group", "64",
        "--pipeline.datamanager.num-workers", "0", "--pipeline.model.num-samples", "8",
        "--pipeline.train-log-csv", str(csv_path), "--pipeline.train-log-every", "1",
        "kitti360-data", "--target-height", str(HEIGHT), "--target-width", str(WIDTH), "--test-every", "4",
    ]  # fmt: skip


def logged_steps(csv_path: Path) -> list:
    with open(csv_path) as stream:
        return [(int(row["step"]), float(row["rgb_loss" if "rgb_loss" in row else list(row)[2]]))
                for row in csv.DictReader(stream)]  # fmt: skip


def test_ns_train_killed_mid_checkpoint_resumes_from_the_last_good_one(synthetic_root, tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "FAIL_ON_SAVE": "2"}
    first_csv = tmp_path / "first.csv"
    killed = subprocess.run(
        [sys.executable, "-c", INJECT_FAILURE, *ns_train_args(synthetic_root, tmp_path / "out", first_csv, 6)],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == 137, killed.stdout[-3000:] + killed.stderr[-3000:]
    run_dir = next((tmp_path / "out").glob("*/bts-density-tiny/run"))
    checkpoints = run_dir / "nerfstudio_models"
    # Saves at steps 2 and 4; the second died half-way: only step 2 exists, complete; no truncated step 4.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000000002.ckpt"]
    assert torch.load(checkpoints / "step-000000002.ckpt", map_location="cpu")["step"] == 2
    first = logged_steps(first_csv)
    assert [step for step, _ in first] == [0, 1, 2, 3, 4]

    # A damaged newer checkpoint (what nerfstudio's own non-atomic save leaves) is skipped, saying so.
    (checkpoints / "step-000000003.ckpt").write_bytes(b"")
    second_csv = tmp_path / "second.csv"
    resumed = subprocess.run(
        [str(Path(sys.executable).parent / "ns-train"),
         *ns_train_args(synthetic_root, tmp_path / "out2", second_csv, 3, "--load-dir", str(checkpoints))],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert "Resuming from step-000000002.ckpt" in output and "step-000000003.ckpt (" in output
    second = logged_steps(second_csv)
    assert [step for step, _ in second] == [3, 4, 5], "the step counter continues after the loaded step"
    assert all(loss == loss for _, loss in second)
    final_dir = next((tmp_path / "out2").glob("*/bts-density-tiny/run/nerfstudio_models"))
    final = torch.load(final_dir / "step-000000005.ckpt", map_location="cpu")
    adam_steps = {int(state["step"]) for opt in final["optimizers"].values() for state in opt["state"].values()}
    assert adam_steps == {6}, "the optimiser state continues (3 steps before the interruption + 3 after)"


def test_non_finite_step_stops_the_run_naming_the_batch_and_saves_no_nan(synthetic_root, tmp_path, monkeypatch):
    from nerfstudio.scripts.train import train_loop

    from bts_studio.methods.bts.method_config import bts_density_tiny_config
    from bts_studio.methods.bts.pipeline import BTSPipeline
    from bts_studio.utils.trainer import NonFiniteTrainingError

    original = BTSPipeline.get_train_loss_dict

    def poisoned(self, step: int):
        outputs, losses, metrics = original(self, step)
        if step == 2:  # e.g. what a zero focal length did before intrinsics were checked
            losses = {name: value * float("nan") for name, value in losses.items()}
        return outputs, losses, metrics

    monkeypatch.setattr(BTSPipeline, "get_train_loss_dict", poisoned)
    config = bts_density_tiny_config()
    config.set_timestamp()
    config.machine.device_type, config.vis = "cpu", "tensorboard"
    config.max_num_iterations, config.steps_per_save = 5, 1
    config.steps_per_eval_batch = config.steps_per_eval_image = 0
    config.output_dir = tmp_path
    config.pipeline.datamanager.data = synthetic_root
    config.pipeline.datamanager.dataparser.target_height = HEIGHT
    config.pipeline.datamanager.dataparser.target_width = WIDTH
    config.pipeline.datamanager.groups_per_batch, config.pipeline.datamanager.rays_per_group = 1, 64
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.model.num_samples = 8
    config.save_config()
    with pytest.raises(
        NonFiniteTrainingError, match=r"training step 2 produced a non-finite loss.*Batch images: .*\.png"
    ):
        train_loop(local_rank=0, world_size=1, config=config)
    checkpoints = sorted((config.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["step-000000001.ckpt"], "nothing is saved at or after the bad step"
    state = torch.load(checkpoints[0], map_location="cpu")["pipeline"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.fixture(scope="module")
def srn_class(tmp_path_factory) -> Path:
    from bts_studio.data.synthetic.shapenet_cli import main as synth

    out = tmp_path_factory.mktemp("srn_fewshot") / "synthetic"
    synth([str(out), "--classes", "cars", "--instances", "2", "--val-instances", "1", "--test-instances", "1",
           "--format", "srn", "--resolution", "16", "--train-views", "3", "--test-views", "24"])  # fmt: skip
    return out / "srn_cars"


@pytest.mark.parametrize(
    "test_mode, hint", [("val", r"ns-train options --pipeline\.few-shot\.input-views"), ("test", r"config\.yml")]
)
def test_srn_few_shot_views_are_checked_at_start_up_with_a_hint_for_the_command(srn_class, test_mode, hint):
    from bts_studio.methods.srn.evaluation import FewShotSettingsError
    from bts_studio.methods.srn.method_config import srn_trainer_config

    config = srn_trainer_config().pipeline
    config.datamanager.data = srn_class
    with pytest.raises(FewShotSettingsError, match=rf"has no view\(s\) \[64\].*24 views.*{hint}"):
        config.setup(device="cpu", test_mode=test_mode)
    config.few_shot.input_views = (0, 12)  # a 24-view (NMR-style) set: what the hint asks for
    config.setup(device="cpu", test_mode=test_mode)


def test_srn_single_scene_on_an_instance_folder_starts(srn_class):
    """docs/srn.md's ``ns-train srn-single-scene --data <instance>`` on an instance with fewer than 65 views."""
    from bts_studio.methods.srn.method_config import srn_single_scene_trainer_config

    config = srn_single_scene_trainer_config().pipeline
    config.datamanager.data = sorted((srn_class / "cars_train").iterdir())[0]
    config.setup(device="cpu", test_mode="val")


def test_encode_source_answers_at_the_training_resolution():
    import warnings

    import torch.nn.functional as F
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.inference import depth_map, encode_source
    from bts_studio.methods.bts.model import BTSModelConfig

    config = BTSModelConfig(resnet_layers=18, search_torch_hub_cache=False, num_samples=8, eval_num_rays_per_chunk=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0,
                             metadata={"target_size": (64, 96)}).eval()  # fmt: skip
    image = torch.rand(3, 64, 96)
    K = torch.tensor([[60.0, 0.0, 48.0], [0.0, 60.0, 32.0], [0.0, 0.0, 1.0]])
    c2w = torch.eye(4)
    at_training = depth_map(model, encode_source(model, image, K, c2w))
    doubled = F.interpolate(image[None], scale_factor=2, mode="nearest")[0]  # the same picture at 128x192
    K2 = K * torch.tensor([2.0, 2.0, 1.0])[:, None]
    source = encode_source(model, doubled, K2, c2w)
    assert (source.height, source.width) == (64, 96) and torch.allclose(source.K, K)
    assert torch.allclose(depth_map(model, source), at_training, atol=1e-4), "same answer at both resolutions"
    with pytest.raises(ValueError, match="trained on 96x64"):
        encode_source(model, doubled, K2, c2w, resize=False)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), 1e30])
def test_non_finite_check_catches_one_bad_gradient_entry_in_one_read_back(bad):
    from types import SimpleNamespace

    from bts_studio.utils.trainer import BTSStudioTrainer

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    model(torch.ones(2, 3)).sum().backward()
    if bad is not None:
        model[0].weight.grad[1, 2] = bad
    trainer = SimpleNamespace(mixed_precision=False, pipeline=model)
    loss = torch.tensor(1.0)
    found = BTSStudioTrainer._locally_non_finite(trainer, loss, {"rgb_loss": loss})  # type: ignore[arg-type]
    assert found == (bad is not None and bad != 1e30)  # 1e30 is large but finite
    trainer.mixed_precision = True  # then only the loss is checked (the gradient scaler handles gradients)
    assert not BTSStudioTrainer._locally_non_finite(trainer, loss, {"rgb_loss": loss})  # type: ignore[arg-type]
