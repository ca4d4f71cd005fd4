"""nerfstudio dataparser for SRN's ShapeNet renderings (``srn_cars``, ``srn_chairs``, and our synthetic classes).

Cameras come out as nerfstudio wants them and otherwise untouched: OpenGL camera-to-world
(``pose @ diag(1, -1, -1, 1)``), the world neither recentred nor rescaled (identity
``dataparser_transform``, scale 1), pixel intrinsics rescaled with SRN's rule. Each camera carries the
index of its instance (for per-object latent codes) and of its view file. docs/conventions.md, section
"ShapeNet (SRN and DVR)", has the conventions; ``srn_reader.py`` the format.
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from rich.progress import track

from bts_studio.data.checks import check_held_out_splits, rgb_image_path
from bts_studio.data.shapenet.image_cache import RESIZE_CACHE_OPTION, resized_image_path
from bts_studio.data.shapenet.srn_reader import (
    SPLIT_FOLDER,
    SRNFormatError,
    SRNInstance,
    instance_files,
    is_instance_dir,
    linspace_subsample,
    list_instance_dirs,
    read_instance,
    select_instances,
)

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto an OpenCV camera-to-world to get nerfstudio's OpenGL one (docs/conventions.md)."""


@dataclass
class ShapeNetSRNDataParserConfig(DataParserConfig):
    """SRN's ShapeNet layout: ``<class>_<split>/<instance>/{rgb,pose,intrinsics.txt}``."""

    _target: Type = field(default_factory=lambda: ShapeNetSRN)
    """The dataparser class this config builds."""
    data: Path = Path("data/srn_cars")
    """A class root holding ``<class>_train``/``_val``/``_test`` (pixelNeRF) or ``_train``/``_train_val``/
    ``_test`` (SRN) folders, OR one split folder (every split then reads it), OR one instance folder (a
    single object: every split reads it)."""
    class_name: str = "auto"
    """Class prefix of the split folders (``cars``, ``chairs``); ``auto`` reads it from the folder names."""
    train_split: str = "auto"
    """Folder of the train split inside a class root; ``auto``: ``<class>_train``."""
    val_split: str = "auto"
    """Folder of the val split inside a class root; ``auto``: ``<class>_val``, else SRN's ``<class>_train_val``."""
    test_split: str = "auto"
    """Folder of the test split inside a class root; ``auto``: ``<class>_test``. SRN's training-set
    novel-view benchmark uses ``<class>_train_test``."""
    max_views_train: int = 50
    """Train views kept per instance, picked with SRN's ``linspace`` subsampling; -1 keeps all."""
    image_size: Optional[int] = None
    """Serve images at this height (width keeps the aspect ratio), resized with area averaging into
    ``resize_cache_dir``; intrinsics follow. None: the stored size. Intrinsics are always rescaled from the
    resolution on line 4 of ``intrinsics.txt`` to the actual image size first (SRN's rule)."""
    downscale_factor: Optional[float] = None
    """Divide the served image size by this (``ns-render dataset --downscale-factor``; resized like ``image_size``,
    intrinsics follow); None: 1."""
    resize_cache_dir: Path = Path(tempfile.gettempdir()) / "bts-studio-resized"
    """Where resized copies of images go when ``image_size`` differs from the stored size, and RGB copies of
    images that are not 8-bit RGB (palette, grey, alpha, 16-bit; ``bts_studio.data.checks.RGB_RULE``)."""
    few_shot_views: Tuple[int, ...] = (64,)
    """View indices (position in the sorted view files) used as inputs in val/test: SRN's 1-shot is
    ``64``, 2-shot ``64 104``. They are flagged in ``metadata["input_view_mask"]`` where they exist; whether the
    few-shot evaluation can run is checked when a pipeline that uses it starts (the srn pipeline's check)."""
    exclude_input_views: bool = True
    """pixelNeRF's protocol: evaluation skips the few-shot input views (SRN's own test script keeps them).
    The views stay in the outputs (models need them as inputs); ``metadata["exclude_input_views"]``
    tells the pipeline what to score."""
    instances: Tuple[str, ...] = ()
    """Keep only these instance folder names (empty: all)."""
    max_instances: Optional[int] = None
    """Keep only the first N instances of each split in sorted order (None: all)."""
    half_pixel_shift: bool = False
    """Add 0.5 px to cx, cy so rays pass where SRN/pixelNeRF cast them (they put pixel j at coordinate j,
    nerfstudio at j + 0.5). Off: Blender's true principal point, the geometrically correct choice for
    the ShapeNet renderer and for ``bts-studio synth-shapenet`` data."""
    near: Optional[float] = None
    """Override the suggested near distance in ``metadata["near"]`` (None: from the camera distances)."""
    far: Optional[float] = None
    """Override the suggested far distance in ``metadata["far"]`` (None: from the camera distances)."""


def object_radius(class_name: str) -> float:
    """Radius around the origin that holds an object, for near/far suggestions.

    ShapeNet objects have a unit bounding-box diagonal (radius 0.5); pixelNeRF's chair bounds
    (1.25/2.75 at camera distance 2.0) leave 0.75, which we keep so the real chairs parse as in pixelNeRF.
    """
    return 0.75 if class_name.startswith("chair") else 0.5


@dataclass
class SRNSplitLayout:
    """Where one split's instances are: the split folder and an optional instance-name filter."""

    split_dir: Path
    class_name: str
    only_instances: Tuple[str, ...] = ()


def resolve_layout(config: ShapeNetSRNDataParserConfig, split: str) -> SRNSplitLayout:
    """Find the split folder of ``split`` for whatever ``config.data`` points at (see the ``data`` field)."""
    data = config.data
    if not data.exists():
        raise SRNFormatError(f"{data} does not exist (expected an SRN class root, split folder or instance folder)")
    if is_instance_dir(data):
        match = SPLIT_FOLDER.match(data.parent.name)
        class_name = config.class_name if config.class_name != "auto" else (match["cls"] if match else "object")
        return SRNSplitLayout(data.parent, class_name, (data.name,))
    match = SPLIT_FOLDER.match(data.name)
    split_children = {path.name: SPLIT_FOLDER.match(path.name) for path in data.iterdir() if path.is_dir()}
    split_children = {name: found for name, found in split_children.items() if found}
    if match or not split_children:
        class_name = config.class_name if config.class_name != "auto" else (match["cls"] if match else data.name)
        return SRNSplitLayout(data, class_name)
    class_name = config.class_name
    if class_name == "auto":
        classes = sorted({found["cls"] for found in split_children.values()})
        if len(classes) != 1:
            raise SRNFormatError(f"{data} holds split folders of several classes {classes}; pass --class-name")
        class_name = classes[0]
    explicit = {"train": config.train_split, "val": config.val_split, "test": config.test_split}[split]
    if explicit != "auto":
        candidates = [explicit]
    elif split == "val":
        candidates = [f"{class_name}_val", f"{class_name}_train_val"]
    else:
        candidates = [f"{class_name}_{split}"]
    for name in candidates:
        if (data / name).is_dir():
            return SRNSplitLayout(data / name, class_name)
    raise SRNFormatError(
        f"no folder for the {split!r} split in {data}: looked for {', '.join(candidates)}"
        f" (found {', '.join(sorted(split_children))})"
    )


def split_instances(config: ShapeNetSRNDataParserConfig, layout: SRNSplitLayout) -> List[Path]:
    """The instance folders of one split's ``layout``, filtered by ``instances`` / ``max_instances``."""
    names = layout.only_instances or config.instances
    return select_instances(list_instance_dirs(layout.split_dir), names, config.max_instances, layout.split_dir)


@dataclass
class ShapeNetSRN(DataParser):
    """Parses SRN's ShapeNet layout into per-view cameras with instance and view indices."""

    config: ShapeNetSRNDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; shapenet-srn-data answers train, val and test")
        layout = resolve_layout(self.config, split)
        instance_dirs = split_instances(self.config, layout)
        check_held_out_splits(
            split,
            lambda other: split_instances(self.config, resolve_layout(self.config, other)),
            instance_files,
            SRNFormatError,
            "an instance of the",
        )
        iterator = instance_dirs if len(instance_dirs) < 200 else track(instance_dirs, description="Reading SRN poses")
        instances = [read_instance(path) for path in iterator]

        max_views = self.config.max_views_train if split == "train" else -1
        few_shot = () if split == "train" else self.config.few_shot_views
        columns: dict[str, list] = {key: [] for key in ("image", "c2w", "K", "hw", "instance", "view", "input")}
        for instance_idx, instance in enumerate(instances):
            views = linspace_subsample(instance.num_views, max_views)
            image_paths, intrinsics = self._served_images(instance, views)
            for view in views.tolist():
                columns["image"].append(image_paths[view])
                columns["c2w"].append(instance.poses_opencv[view] @ OPENCV_TO_OPENGL)
                columns["K"].append(intrinsics)
                columns["hw"].append(intrinsics[3:])
                columns["instance"].append(instance_idx)
                columns["view"].append(view)
                columns["input"].append(view in few_shot)

        c2w = torch.from_numpy(np.stack(columns["c2w"])[:, :3, :]).float()
        intrinsics = torch.tensor([k[:3] for k in columns["K"]], dtype=torch.float64)
        hw = torch.tensor(columns["hw"], dtype=torch.long)
        cameras = Cameras(
            camera_to_worlds=c2w,
            fx=intrinsics[:, 0:1].float(),
            fy=intrinsics[:, 0:1].float(),
            cx=intrinsics[:, 1:2].float(),
            cy=intrinsics[:, 2:3].float(),
            height=hw[:, 0:1],
            width=hw[:, 1:2],
            camera_type=CameraType.PERSPECTIVE,
            metadata={
                "instance_idx": torch.tensor(columns["instance"], dtype=torch.long)[:, None],
                "view_idx": torch.tensor(columns["view"], dtype=torch.long)[:, None],
            },
        )
        near, far = self._near_far(c2w, layout.class_name)
        metadata = {
            "instance_names": [instance.name for instance in instances],
            "num_instances": len(instances),
            "input_view_mask": torch.tensor(columns["input"], dtype=torch.bool),
            "few_shot_views": tuple(few_shot),
            "exclude_input_views": self.config.exclude_input_views,
            "near": near,
            "far": far,
            "class_name": layout.class_name,
            "split_dir": str(layout.split_dir),
        }
        return DataparserOutputs(
            image_filenames=columns["image"],
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
            metadata=metadata,
        )

    def _served_images(self, instance: SRNInstance, views: np.ndarray) -> Tuple[List[Path], Tuple]:
        """Image paths (resized copies if ``image_size`` asks for it) and ``(f, cx, cy, H, W)`` for them."""
        intrinsics = instance.intrinsics
        paths = list(instance.image_paths)
        target = self.config.image_size
        if self.config.downscale_factor not in (None, 1, 1.0):
            if self.config.downscale_factor <= 0:
                raise ValueError(f"shapenet-srn-data: downscale_factor must be > 0, got {self.config.downscale_factor}")
            target = max(1, round((target or intrinsics.height) / self.config.downscale_factor))
        if target is not None and target != intrinsics.height:
            width = round(intrinsics.width * target / intrinsics.height)
            intrinsics = intrinsics.rescaled(target, width)
            for view in views.tolist():
                paths[view] = resized_image_path(paths[view], target, width, self.config.resize_cache_dir)
        else:
            for view in views.tolist():
                paths[view] = rgb_image_path(
                    paths[view], self.config.resize_cache_dir, "a PNG or JPEG view", RESIZE_CACHE_OPTION, SRNFormatError
                )
        shift = 0.5 if self.config.half_pixel_shift else 0.0
        return paths, (
            intrinsics.focal,
            intrinsics.cx + shift,
            intrinsics.cy + shift,
            intrinsics.height,
            intrinsics.width,
        )

    def _near_far(self, c2w: torch.Tensor, class_name: str) -> Tuple[float, float]:
        distances = c2w[:, :3, 3].norm(dim=-1)
        radius = object_radius(class_name)
        near = max(float(distances.min()) - radius, 0.05) if self.config.near is None else self.config.near
        far = float(distances.max()) + radius if self.config.far is None else self.config.far
        return near, far
