"""Tier 3: a dvr-tiny run resumed with ``--load-dir`` continues exactly as if it had not stopped.

benchmarks/gpu_dvr.sh (``STAGES``) splits one training into several calls, each ending with a time budget and the
next resuming from its checkpoint; bts_studio/utils/trainer.py saves the random generators' states and the last
trained step so that the split run is the same run. Checked on the CPU through nerfstudio's ``train_loop``:
6 steps in one go, 3 + 3 steps, and 2 steps stopped by ``--pipeline.max-train-seconds`` + 4 resumed steps give the
same per-step losses and the same final weights, bit for bit (same process, same threads: CPU float arithmetic is
deterministic here).
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.methods.dvr.method_config import dvr_tiny_trainer_config
from bts_studio.methods.dvr.pipeline import DVRPipeline


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth_tiny_dvr) -> Path:
    out = tmp_path_factory.mktemp("dvr_resume_data") / "synthetic"
    return synth_tiny_dvr(out, instances=3, views=3, input_views=2) / "dvr"


@pytest.fixture
def losses(monkeypatch) -> List[Tuple[int, float]]:
    """(step, total training loss) of every training step run while the test runs."""
    recorded: List[Tuple[int, float]] = []
    original = DVRPipeline.get_train_loss_dict

    def recording(self, step: int):
        outputs, loss_dict, metrics = original(self, step)
        recorded.append((step, float(sum(value.detach() for value in loss_dict.values()))))
        return outputs, loss_dict, metrics

    monkeypatch.setattr(DVRPipeline, "get_train_loss_dict", recording)
    return recorded


def _train(
    data: Path, output_dir: Path, name: str, iterations: int, seconds: float = 0.0, load_dir: Optional[Path] = None
) -> Tuple[Path, Dict]:
    """Train dvr-tiny (tiny batch) into ``output_dir/name``; the checkpoint folder and its newest checkpoint."""
    from nerfstudio.scripts.train import train_loop

    config = dvr_tiny_trainer_config()
    config.experiment_name, config.timestamp = name, "run"
    config.machine.device_type, config.vis = "cpu", "tensorboard"
    config.max_num_iterations, config.load_dir = iterations, load_dir
    config.steps_per_eval_batch = 2  # eval batches draw from the same generators: they must be resumed too
    config.steps_per_eval_image, config.steps_per_save = 0, 10**8
    config.output_dir = output_dir
    config.viewer.quit_on_train_completion = True
    config.pipeline.max_train_seconds = seconds
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser = ShapeNetDVRDataParserConfig()
    config.pipeline.datamanager.images_per_batch, config.pipeline.datamanager.rays_per_image = 2, 32
    config.pipeline.model.hidden_size = 16
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    folder = config.get_base_dir() / "nerfstudio_models"
    newest = sorted(folder.glob("step-*.ckpt"))[-1]
    return folder, torch.load(newest, map_location="cpu")


def _assert_same_weights(one: Dict, other: Dict) -> None:
    assert one["step"] == other["step"]
    assert one["pipeline"].keys() == other["pipeline"].keys()
    different = [key for key, value in one["pipeline"].items() if not torch.equal(value, other["pipeline"][key])]
    assert not different, f"weights differ after resuming: {different[:5]}"


def test_resumed_run_equals_the_uninterrupted_one(data, tmp_path, losses):
    _, whole = _train(data, tmp_path, "whole", 6)
    reference = list(losses)
    assert [step for step, _ in reference] == list(range(6))

    losses.clear()
    folder, first = _train(data, tmp_path, "split", 3)
    assert first["step"] == 2 and "rng" in first
    _, split = _train(data, tmp_path, "split", 3, load_dir=folder)  # --max-num-iterations counts from the resume
    assert losses == reference, "3 + 3 resumed steps: the same losses, step for step"
    _assert_same_weights(whole, split)

    # A time budget stops after step 1 (its clock starts after step 0); the checkpoint is that of step 1, not of
    # the step nerfstudio's loop was about to start, so the resume runs steps 2-5 with no step index skipped.
    losses.clear()
    folder, stopped = _train(data, tmp_path, "budget", 100, seconds=1e-9)
    assert stopped["step"] == 1 and [step for step, _ in losses] == [0, 1]
    _, budget = _train(data, tmp_path, "budget", 4, load_dir=folder)
    assert losses == reference, "2 budgeted + 4 resumed steps: the same losses, step for step"
    _assert_same_weights(whole, budget)
