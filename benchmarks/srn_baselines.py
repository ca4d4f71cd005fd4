"""Trivial baselines for SRN's protocol, scored by the same code as ns-eval, and SRN's forward time.

    python benchmarks/srn_baselines.py --load-config RUN/config.yml --output baselines.json

Baselines (no learning beyond averaging / copying):

- ``mean_training_image``: every prediction is the per-pixel mean of all images the model trained on.
- ``nearest_training_view``: every prediction is the view, among those the method may see for that
  instance, whose camera centre is closest in angle (seen from the object centre, the world origin) to
  the target camera: the k conditioning views for k-shot test instances, the training views for the
  held-out views of training instances.

The scored views, their ground truth and the metrics are exactly those of ns-eval
(``bts_studio.methods.srn.evaluation``). ``--timing-images N`` also times the model's forward pass on N
full training-resolution images (CUDA synchronised, after warm-up).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import torch
import tyro

from bts_studio.methods.common.image_store import load_images
from bts_studio.methods.srn.datamanager import SRNDataManager
from bts_studio.methods.srn.evaluation import (
    InstanceTask,
    ScoreBoard,
    few_shot_tasks,
    heldout_tasks,
    score_images,
)


@dataclass
class BaselineConfig:
    """Score the trivial baselines of an srn run with ns-eval's protocol."""

    load_config: Path
    """The run's config.yml."""
    output: Path = Path("srn_baselines.json")
    """JSON file to write."""
    timing_images: int = 0
    """Also time the model's forward pass on this many training images (0: skip)."""


def camera_directions(cameras) -> torch.Tensor:
    """Unit vectors from the origin to each camera centre ``[N, 3]``."""
    return torch.nn.functional.normalize(cameras.camera_to_worlds[:, :3, 3].float(), dim=-1)


def nearest(candidates: List[int], targets: List[int], source_dirs: torch.Tensor, target_dirs: torch.Tensor) -> List:
    """For each target image, the candidate image whose camera direction is closest in angle."""
    similarity = target_dirs[targets] @ source_dirs[candidates].T
    return [candidates[int(i)] for i in similarity.argmax(dim=1)]


def score_tasks(
    tasks: List[InstanceTask], targets_of: Callable[[InstanceTask], torch.Tensor], predict: Callable
) -> ScoreBoard:
    board = ScoreBoard.empty()
    for task in tasks:
        if task.target_images:
            targets = targets_of(task)
            board.add(task.name, *score_images(predict(task, targets), targets))
    return board


def time_forward(pipeline, count: int) -> Dict[str, float]:
    """Seconds per full image of ``model.get_outputs_for_camera`` on training cameras."""
    model, datamanager = pipeline.model, pipeline.datamanager
    cameras = datamanager.train_dataset.cameras.to(model.device)
    count = min(count, len(cameras))

    def sync() -> None:
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)

    for index in range(min(3, count)):  # warm-up (CUDA kernels, allocator)
        model.get_outputs_for_camera(cameras[index : index + 1])
    sync()
    start = time.perf_counter()
    for index in range(count):
        model.get_outputs_for_camera(cameras[index : index + 1])
    sync()
    seconds = (time.perf_counter() - start) / count
    height, width = int(cameras.height[0]), int(cameras.width[0])
    return {
        "forward_seconds_per_image": seconds,
        "forward_images_per_second": 1.0 / seconds,
        "image_height": height,
        "image_width": width,
        "timed_images": count,
        "device": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else "cpu",
    }


def main(argv: List[str] | None = None) -> None:
    config = tyro.cli(BaselineConfig, args=argv)
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config.load_config, test_mode="test")
    datamanager = pipeline.datamanager
    assert isinstance(datamanager, SRNDataManager), "not an srn run"
    device = pipeline.model.device
    few_shot = pipeline.config.few_shot
    mean_image = datamanager.mean_training_image().to(device)
    eval_dataset, train_dataset = datamanager.eval_dataset, datamanager.train_dataset
    eval_dirs, train_dirs = camera_directions(eval_dataset.cameras), camera_directions(train_dataset.cameras)

    def test_targets(task: InstanceTask) -> torch.Tensor:
        return load_images(eval_dataset, task.target_images, device).float() / 255.0

    def heldout_targets(task: InstanceTask) -> torch.Tensor:
        return datamanager.image_cache[task.target_images].to(device).float() / 255.0

    def mean_prediction(task: InstanceTask, targets: torch.Tensor) -> torch.Tensor:
        return mean_image.expand_as(targets)

    def nearest_test_view(task: InstanceTask, targets: torch.Tensor) -> torch.Tensor:
        picks = nearest(task.input_images, task.target_images, eval_dirs, eval_dirs)
        return load_images(eval_dataset, picks, device).float() / 255.0

    def nearest_train_view(task: InstanceTask, targets: torch.Tensor) -> torch.Tensor:
        picks = nearest(task.input_images, task.target_images, train_dirs, train_dirs)
        return datamanager.image_cache[picks].to(device).float() / 255.0

    mean_scores: Dict = {}
    nearest_scores: Dict = {}
    shots_list = () if pipeline.model.config.single_scene else tuple(few_shot.shots)
    for shots in shots_list:
        tasks = few_shot_tasks(datamanager, few_shot, shots)
        mean_scores.update(score_tasks(tasks, test_targets, mean_prediction).summary(f"{shots}shot_"))
        nearest_scores.update(score_tasks(tasks, test_targets, nearest_test_view).summary(f"{shots}shot_"))
    heldout = heldout_tasks(datamanager)
    if heldout:
        mean_scores.update(score_tasks(heldout, heldout_targets, mean_prediction).summary("train_heldout_"))
        nearest_scores.update(score_tasks(heldout, heldout_targets, nearest_train_view).summary("train_heldout_"))
    results = {"mean_training_image": mean_scores, "nearest_training_view": nearest_scores}
    report: Dict = {"load_config": str(config.load_config), "baselines": results}
    if config.timing_images > 0:
        report["timing"] = time_forward(pipeline, config.timing_images)
    text = json.dumps(report, indent=2, allow_nan=False)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = config.output.with_name(f".{config.output.name}.partial")
    temporary.write_text(text)
    temporary.replace(config.output)
    print(text)


if __name__ == "__main__":
    main()
