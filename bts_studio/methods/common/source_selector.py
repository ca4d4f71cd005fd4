"""One object per model that answers "which dataset image conditions this camera?" for every caller.

:class:`SourceSelector` binds the rules of ``conditioning_rules.py`` to a datamanager's datasets and to the viewer
control (``viewer_controls.py``): ``choose(camera)`` applies the rules, checks the index, logs the choice when it
changes and shows it in the viewer. Models hold one (``attach_source_selector``) and call it from
``get_outputs_for_camera``; the viewer, ``ns-render`` and ``ns-eval`` all reach the model through that method.
"""

import json
import math
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor, nn

from bts_studio.methods.common.conditioning_rules import (
    CAM_IDX_KEY,
    ChoiceLog,
    SourceCatalogue,
    SourceChoice,
    check_index,
    choose_source,
    image_names,
    own_image,
)
from bts_studio.methods.common.viewer_controls import NEAREST, SourceControls

VIEWER_LOG_ENV = "BTS_STUDIO_VIEWER_LOG"
"""Environment variable naming a JSON-lines file that receives every viewer render's camera and source."""


class SourceSelector(nn.Module):
    """The source rules for one model, over the datasets of its datamanager (no parameters, nothing saved).

    Args:
        method: method name for logs.
        datasets: ``{"train": dataset, "test": dataset}``; the train cameras are the nearest-rule candidates.
        nearest: allow the nearest-image rule (off for srn, whose source is an object instance).
        default_index: train image used when ``nearest`` is off and nothing names a source.
        default_rule: the viewer control's initial rule.
        frustum_scale: training-frustum size in scene units for the viewer.
        direction_weight: scene units one unit of ``1 - cos(angle)`` costs in the nearest rule.
    """

    def __init__(
        self,
        method: str,
        datasets: Dict[str, Optional[InputDataset]],
        nearest: bool = True,
        default_index: int = 0,
        default_rule: str = NEAREST,
        frustum_scale: float = 1.0,
        direction_weight: float = 10.0,
    ) -> None:
        super().__init__()
        self.method = method
        self.datasets = {name: dataset for name, dataset in datasets.items() if dataset is not None}
        if "train" not in self.datasets:
            raise ValueError(f"{method}: the source rules need the train dataset")
        self.sizes = {name: len(dataset) for name, dataset in self.datasets.items()}
        self.names = {
            name: image_names(dataset.image_filenames, len(dataset)) for name, dataset in self.datasets.items()
        }
        self.nearest, self.default_index = nearest, default_index
        self.catalogue = SourceCatalogue.from_camera_to_worlds(
            self.datasets["train"].cameras.camera_to_worlds, direction_weight
        )
        self.log = ChoiceLog(method)
        self.controls = SourceControls(
            method,
            self.sizes,
            self.names,
            self.catalogue,
            image_of=self.image,
            camera_of=self.camera_pose_and_fov,
            default_rule=default_rule,
            frustum_scale=frustum_scale,
            default_index=default_index,
        )

    def image(self, split: str, index: int) -> Tensor:
        """Image ``[3, H, W]`` in [0, 1] of ``split`` image ``index``."""
        return self.datasets[split].get_image_float32(index)[..., :3].permute(2, 0, 1)

    def camera_pose_and_fov(self, split: str, index: int) -> Tuple[Tensor, float]:
        """OpenGL camera-to-world ``[3, 4]`` and vertical field of view (radians) of a dataset image."""
        camera = self.datasets[split].cameras[index]
        fov = 2 * math.atan(float(camera.height) / 2 / float(camera.fy))
        return camera.camera_to_worlds.detach().cpu(), fov

    def choose(self, camera: Union[Cameras, RayBundle]) -> SourceChoice:
        """The source of a one-camera ``Cameras``, or of rays generated from one (their metadata is the camera's;
        the first origin and the mean direction stand for its pose); rules in ``conditioning_rules.py``; logged and
        shown in the viewer."""
        metadata = dict(camera.metadata or {})
        if isinstance(camera, Cameras):
            # One device-to-host copy of the pose; the viewer's control and the nearest-image rule then read it on
            # the host (each .cpu() of a GPU tensor is a sync: issue 17, docs/benchmarks.md).
            camera_to_world = camera.camera_to_worlds.reshape(-1, 3, 4)[0].detach().cpu()
        else:
            direction = camera.directions.reshape(-1, 3).mean(dim=0)
            camera_to_world = torch.zeros(3, 4)
            camera_to_world[:, 2] = -direction.cpu() / direction.norm().clamp_min(1e-9).cpu()
            camera_to_world[:, 3] = camera.origins.reshape(-1, 3)[0].cpu()
        request = None
        if self.controls.in_viewer and own_image(metadata) is None:
            # nerfstudio's viewer always sends its last clicked frustum as cam_idx (0 before any click); only the
            # control's "Clicked camera frustum" rule uses it.
            metadata.pop(CAM_IDX_KEY, None)
            request = self.controls.request(camera_to_world)
        choice = choose_source(metadata, camera_to_world, self.catalogue, request, self.nearest, self.default_index)
        check_index(choice, self.sizes)
        self.log(choice, self.names[choice.split][choice.index])
        self.controls.show(choice)
        if self.controls.in_viewer and isinstance(camera, Cameras) and os.environ.get(VIEWER_LOG_ENV):
            append_render_record(Path(os.environ[VIEWER_LOG_ENV]), camera, choice)
        return choice


def append_render_record(path: Path, camera: Cameras, choice: SourceChoice) -> None:
    """Append one viewer render (its camera and source) as a JSON line: lets a test or a bug report re-render
    exactly what the viewer showed."""
    flat = camera.reshape(-1)
    record = {
        "split": choice.split,
        "index": choice.index,
        "rule": choice.rule.value,
        "camera_to_world": flat.camera_to_worlds[0].tolist(),
        **{name: float(getattr(flat, name)[0, 0]) for name in ("fx", "fy", "cx", "cy")},
        "width": int(flat.width[0, 0]),
        "height": int(flat.height[0, 0]),
    }
    with path.open("a") as stream:
        stream.write(json.dumps(record) + "\n")


SCENE_KINDS = {
    "street": {"frustum_scale": 1.0, "direction_weight": 10.0},
    "object": {"frustum_scale": 0.1, "direction_weight": 0.5},
}
"""SourceSelector scales per scene kind: metric street scenes (1 m frustums; a 90 degree turn costs 10 m in the
nearest rule) and unit-size objects."""
