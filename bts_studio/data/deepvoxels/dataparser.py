"""nerfstudio dataparser ``deepvoxels-data`` for the DeepVoxels scene layout (``reader.py``).

Cameras come out as nerfstudio wants them and otherwise untouched: OpenGL camera-to-world (``pose @ diag(1, -1,
-1, 1)``), the world neither recentred nor rescaled (identity ``dataparser_transform``, scale 1), intrinsics rescaled
from line 5 of ``intrinsics.txt`` to the stored images with the official rule. The voxel grid's placement (grid
barycentre, scale) and the near plane go into the metadata for the model. nerfstudio's ``val`` split reads
``validation/`` (``test/`` when a scene has none), ``test`` reads ``test/``.
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from bts_studio.data.checks import check_held_out_splits, rgb_image_path
from bts_studio.data.deepvoxels.reader import DeepVoxelsFormatError, read_intrinsics, read_split, scene_folders

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto an OpenCV camera-to-world to get nerfstudio's OpenGL one (docs/conventions.md)."""

SPLIT_FOLDERS = {"train": ("train",), "val": ("validation", "test"), "test": ("test",)}
"""nerfstudio split -> folders tried in order."""


def split_folders(root: Path, scene: str, split: str) -> List[Path]:
    """The scene's folders of ``split`` that exist, in :data:`SPLIT_FOLDERS`' order (the first one is read)."""
    return [root / folder / scene for folder in SPLIT_FOLDERS[split] if (root / folder / scene).is_dir()]


@dataclass
class DeepVoxelsDataParserConfig(DataParserConfig):
    """DeepVoxels' layout: ``<root>/{train,validation,test}/<scene>/{rgb,pose}``, ``train/<scene>/intrinsics.txt``."""

    _target: Type = field(default_factory=lambda: DeepVoxels)
    """The dataparser class this config builds."""
    data: Path = Path("data/deepvoxels")
    """A root holding ``train/`` (``validation/``, ``test/``), or one scene folder ``<root>/<split>/<scene>``."""
    scene: str = ""
    """Scene folder name inside the split folders; empty: the only one there (or the one ``data`` points at)."""
    downscale_factor: Optional[float] = None
    """``ns-render dataset --downscale-factor`` (nerfstudio requires the field): only None or 1, views are served at
    their stored size; render smaller with ``ns-render camera-path/interpolate/spiral --downscale-factor``."""
    image_cache_dir: Path = Path(tempfile.gettempdir()) / "bts-studio-rgb"
    """Where RGB copies of views that are not 8-bit RGB go (palette, grey, alpha, 16-bit; the rule is
    ``bts_studio.data.checks.RGB_RULE``: alpha dropped, as the official OpenCV ``imread`` does)."""


@dataclass
class DeepVoxels(DataParser):
    """Parses one DeepVoxels scene into per-view cameras plus the grid placement."""

    config: DeepVoxelsDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"unknown split {split!r}; deepvoxels-data answers train, val and test")
        if self.config.downscale_factor not in (None, 1, 1.0):
            raise ValueError(
                f"deepvoxels-data: downscale_factor {self.config.downscale_factor} is not supported (views are served "
                "at their stored size); use ns-render camera-path/interpolate/spiral --downscale-factor"
            )
        root, scene = scene_folders(self.config.data, self.config.scene)
        found = split_folders(root, scene, split)
        if not found:
            candidates = [root / folder / scene for folder in SPLIT_FOLDERS[split]]
            raise DeepVoxelsFormatError(
                f"no folder for the {split!r} split: looked for {', '.join(map(str, candidates))}"
            )
        split_dir = found[0]
        own = split_dir / "intrinsics.txt"
        intrinsics_path = own if own.is_file() else root / "train" / scene / "intrinsics.txt"
        views = read_split(split_dir)
        check_held_out_splits(
            split, lambda other: split_folders(root, scene, other)[:1], read_split, DeepVoxelsFormatError, "the"
        )
        intrinsics = read_intrinsics(intrinsics_path).rescaled(views.height, views.width)

        count = len(views.image_paths)
        c2w = torch.from_numpy((views.poses_opencv @ OPENCV_TO_OPENGL)[:, :3, :]).float()
        cameras = Cameras(
            camera_to_worlds=c2w,
            fx=torch.full((count, 1), intrinsics.focal),
            fy=torch.full((count, 1), intrinsics.focal),
            cx=torch.full((count, 1), intrinsics.cx),
            cy=torch.full((count, 1), intrinsics.cy),
            height=torch.full((count, 1), views.height, dtype=torch.long),
            width=torch.full((count, 1), views.width, dtype=torch.long),
            camera_type=CameraType.PERSPECTIVE,
        )
        barycentre = torch.tensor(intrinsics.grid_barycentre, dtype=torch.float32)
        half = intrinsics.scale / 2.0
        metadata = {
            "grid_barycentre": barycentre,
            "grid_scale": intrinsics.scale,
            "near_plane": intrinsics.near_plane,
            "scene_name": scene,
            "split_dir": str(split_dir),
        }
        return DataparserOutputs(
            image_filenames=[
                rgb_image_path(
                    path,
                    self.config.image_cache_dir,
                    "a PNG view",
                    "--image-cache-dir (dataparser option: 'ns-train ... deepvoxels-data --image-cache-dir DIR')",
                    DeepVoxelsFormatError,
                )
                for path in views.image_paths
            ],
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.stack([barycentre - half, barycentre + half])),
            metadata=metadata,
        )
