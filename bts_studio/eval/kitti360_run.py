"""A trained bts-density run on KITTI-360 (real or synthetic), seen by the occupancy and bird's-eye tools.

Loads the run's pipeline, lists the evaluated images of a split (the input column of each BTS frame group, e.g.
the 446 left images of BTS's ``test_files.txt``), and turns each into a :class:`FrameField` (the model's density
function and depth map for that image) plus where it sits in KITTI-360 (sequence, frame id, pose row, camera).
Refuses, with a clear message, runs whose dataparser is not ``kitti360-data``: only it has lidar, metric poses
and the road-parallel camera tilt the protocol assumes.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import torch

from bts_studio.eval.density_field import FrameField

SPLITS = ("train", "test")
"""Dataset splits a loaded run holds (``test`` is nerfstudio's eval dataset, loaded with ``test_mode='test'``)."""


class NotKitti360RunError(SystemExit):
    """The run was not trained on kitti360-data, so it has no lidar to evaluate against."""


@dataclass(frozen=True)
class EvalImage:
    """One evaluated image: its index in the split's dataset and its place in KITTI-360."""

    index: int
    sequence: str
    frame_id: int
    pose_index: int
    camera_id: int


def _dataparser_name(dataparser_config: Any) -> str:
    return type(dataparser_config).__name__.removesuffix("Config") or "unknown"


def load_trainer_config(config_path: Path, tool: str) -> Any:
    """Read a run's ``config.yml`` and check that its dataparser can provide lidar (cheap, before loading weights)."""
    import yaml

    from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig

    config_path = Path(config_path)
    if not config_path.is_file():
        raise SystemExit(f"{tool}: {config_path}: config file not found (pass a run's config.yml to --load-config)")
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    dataparser = getattr(getattr(getattr(config, "pipeline", None), "datamanager", None), "dataparser", None)
    if dataparser is None:
        raise SystemExit(f"{tool}: {config_path} is not a nerfstudio run config (no pipeline.datamanager.dataparser)")
    if not isinstance(dataparser, Kitti360DataParserConfig):
        raise NotKitti360RunError(
            f"{tool}: {config_path} was trained with the {_dataparser_name(dataparser)} dataparser, which has no lidar "
            "scans, metric street poses or road-parallel cameras. Occupancy metrics and bird's-eye views need a run on "
            "kitti360-data (real KITTI-360 or `bts-studio synth-kitti360` output)."
        )
    return config


def load_pipeline(config_path: Path, tool: str) -> Tuple[Any, Any]:
    """Check the config, then load the pipeline (train and test datasets) and its latest checkpoint.

    Does what nerfstudio's ``eval_setup`` does, without its lookup of the method name in the installed registry,
    so a run whose preset is not (or no longer) registered still loads.
    """
    config = load_trainer_config(config_path, tool)
    from nerfstudio.utils.eval_utils import eval_load_checkpoint

    config.load_dir = config.get_checkpoint_dir()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    eval_load_checkpoint(config, pipeline)
    return config, pipeline


def split_dataset(pipeline: Any, split: str) -> Any:
    """The loaded dataset of a split."""
    datamanager = pipeline.datamanager
    dataset = datamanager.train_dataset if split == "train" else getattr(datamanager, "eval_dataset", None)
    if dataset is None or len(dataset) == 0:
        raise SystemExit(f"the run has no {split!r} images loaded")
    return dataset


def eval_images(pipeline: Any, split: str, max_images: Optional[int] = None) -> List[EvalImage]:
    """The split's evaluated images: the input image of every frame group, in dataset order."""
    dataset = split_dataset(pipeline, split)
    metadata = dataset.metadata
    for key in ("sequences", "frame_groups", "data_root"):
        if key not in metadata:
            raise SystemExit(f"the {split} dataset lacks metadata {key!r}; is it a kitti360-data dataset?")
    camera_metadata = dataset.cameras.metadata or {}
    for key in ("sequence_idx", "frame_id", "pose_index", "camera_id"):
        if key not in camera_metadata:
            raise SystemExit(f"the {split} cameras lack metadata {key!r}; is it a kitti360-data dataset?")
    inputs = sorted({int(index) for index in metadata["frame_groups"][:, 0].tolist() if int(index) >= 0})
    images = []
    for index in inputs:
        images.append(
            EvalImage(
                index=index,
                sequence=metadata["sequences"][int(camera_metadata["sequence_idx"][index])],
                frame_id=int(camera_metadata["frame_id"][index]),
                pose_index=int(camera_metadata["pose_index"][index]),
                camera_id=int(camera_metadata["camera_id"][index]),
            )
        )
    return images[:max_images] if max_images is not None else images


def data_root(pipeline: Any, split: str) -> Path:
    """The KITTI-360 folder the run's dataparser read."""
    return Path(split_dataset(pipeline, split).metadata["data_root"])


def model_field(pipeline: Any, split: str, image: EvalImage) -> Tuple[FrameField, torch.Tensor]:
    """The model's density function and predicted z-depth for one image, and the image ``[3, H, W]`` itself."""
    from bts_studio.methods.bts.inference import density_in_camera, depth_map, source_from_dataset

    model = pipeline.model
    source = source_from_dataset(pipeline, split, image.index)
    with torch.no_grad():
        depth = depth_map(model, source).float()

    def density(points_camera: torch.Tensor) -> torch.Tensor:
        return density_in_camera(model, source, points_camera.to(source.K.device))

    return FrameField(density, depth, source.K.float()), source.image


def lidar_depth(pipeline: Any, split: str, image: EvalImage) -> Optional[torch.Tensor]:
    """The dataparser's single-scan lidar z-depth map of an image (0 = no return), or None where it has none."""
    import numpy as np

    filenames = split_dataset(pipeline, split).metadata.get("lidar_depth_filenames") or []
    path = filenames[image.index] if image.index < len(filenames) else None
    if path is None:
        return None
    if not Path(path).is_file():
        raise SystemExit(f"lidar depth map {path} is missing; delete the dataparser cache folder to rebuild it")
    return torch.from_numpy(np.load(path)).float()
