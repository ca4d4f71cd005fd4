"""nerfstudio dataparser for DVR's ShapeNet layout (``.lst`` splits, masks, depth, point clouds).

``world_mat_i`` (world->camera, OpenCV) is inverted, ``scale_mat_i`` undone, the y-up ShapeNet object
frame turned z-up (pixelNeRF's world transform, on by default) and the camera flipped to OpenGL. The
normalised ``camera_mat_i`` becomes pixel intrinsics. Masks, depth maps and point clouds reach models
through ``metadata``. docs/conventions.md, section "ShapeNet (SRN and DVR)", has the conventions.
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

from bts_studio.data.checks import (
    check_held_out_splits,
    check_pixel_intrinsics,
    nested_root_hint,
    rgb_image_path,
    verify_image_file,
)
from bts_studio.data.shapenet.dvr_reader import (
    DVRFormatError,
    DVRObject,
    normalized_to_pixel_intrinsics,
    object_files,
    read_metadata,
    read_object,
    read_split_list,
)
from bts_studio.data.shapenet.srn_reader import image_size

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking ShapeNet's y-up object frame to nerfstudio's z-up world (new z = old y), as pixelNeRF."""

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])
"""Right-multiplied onto an OpenCV camera-to-world to get nerfstudio's OpenGL one (docs/conventions.md)."""

UNIT_CUBE_RADIUS = 0.5 * 3**0.5
"""Radius of the sphere around the unit cube [-0.5, 0.5]^3 the objects are normalised to."""


@dataclass
class ShapeNetDVRDataParserConfig(DataParserConfig):
    """DVR's ShapeNet layout: ``<root>/<synset>/<split>.lst`` and ``<root>/<synset>/<model>/...``."""

    _target: Type = field(default_factory=lambda: ShapeNetDVR)
    """The dataparser class this config builds."""
    data: Path = Path("data/dvr_shapenet")
    """Dataset root holding ``metadata.yaml`` and one folder per synset."""
    classes: Tuple[str, ...] = ()
    """Synset ids or class names (from metadata.yaml) to keep; empty: all."""
    split_prefix: str = ""
    """Prefix of the split list names, ``<prefix><split>.lst``: empty for DVR's renderings, ``softras_``
    for the NMR set."""
    instances: Tuple[str, ...] = ()
    """Keep only these model ids (empty: all in the split lists)."""
    max_instances: Optional[int] = None
    """Keep only the first N objects of each split (list order; None: all)."""
    orient_z_up: bool = True
    """Rotate the y-up ShapeNet frame to nerfstudio's z-up world (recorded in ``dataparser_transform``)."""
    corner_aligned_pixels: bool = False
    """Convert ``camera_mat`` with DVR's own pixel grid (first/last pixel centres at -1/+1) instead of the
    edge-to-edge [-1, 1] span that pixelNeRF and nerfstudio use; a sub-pixel difference."""
    use_masks_for_sampling: bool = False
    """Also hand the masks to nerfstudio as ``mask_filenames``, which makes its pixel samplers draw rays
    on the object only. Off: masks are only in ``metadata["mask_filenames"]`` (DVR's mask loss needs
    background rays too)."""
    downscale_factor: Optional[float] = None
    """``ns-render dataset --downscale-factor``: only None or 1 (DVR's images are served at their stored size;
    render smaller with ``ns-render camera-path/interpolate/spiral --downscale-factor``)."""
    near: Optional[float] = None
    """Override the suggested near distance in ``metadata["near"]`` (None: from the camera distances)."""
    far: Optional[float] = None
    """Override the suggested far distance in ``metadata["far"]`` (None: from the camera distances)."""
    image_cache_dir: Path = Path(tempfile.gettempdir()) / "bts-studio-rgb"
    """Where RGB copies of images that are not 8-bit RGB go (palette, grey, alpha, 16-bit; the rule is
    ``bts_studio.data.checks.RGB_RULE``: alpha dropped, as DVR's ``convert("RGB")``)."""
    scene_heldout_every: int = 0
    """Single-object folders only (multi-view fitting): every k-th view (0, k, 2k, ...) is the eval split and
    is left out of training; 0: every view is in both splits (DVR's multi-view fitting uses all views)."""


IMAGE_CACHE_OPTION = (
    "--image-cache-dir (the dataparser option, e.g. 'ns-train ... shapenet-dvr-data --image-cache-dir DIR')"
)


def is_single_object(path: Path) -> bool:
    """``--data`` names one object/scene folder (it has ``cameras.npz``) rather than a dataset root."""
    return (path / "cameras.npz").is_file()


def split_objects(config: ShapeNetDVRDataParserConfig, split: str) -> List[Tuple[Path, str]]:
    """``(synset_dir, model_id)`` of the split, synsets in sorted order, models in list order.

    When ``config.data`` is itself one object folder (DVR's multi-view setting, e.g. a DTU-style scan), that
    object is every split; ``scene_heldout_every`` then decides which of its views each split keeps.
    """
    if is_single_object(config.data):
        return [(config.data.parent, config.data.name)]
    if (config.data / "image").is_dir() and not (config.data / "metadata.yaml").is_file():
        # An object folder (images at its top level) lacking its cameras: say so, not "no train.lst".
        raise DVRFormatError(
            f"missing {config.data / 'cameras.npz'}: {config.data} looks like one object folder (it has image/), "
            "which needs cameras.npz (world_mat_i and camera_mat_i, or DTU-style projections world_mat_i with "
            f"scale_mat_i); a dataset root instead holds metadata.yaml and <synset>/{config.split_prefix}{split}.lst"
        )
    synsets = read_metadata(config.data)
    wanted = set(config.classes)
    chosen = [syn for syn, name in sorted(synsets.items()) if not wanted or syn in wanted or name in wanted]
    if wanted and not chosen:
        raise DVRFormatError(f"{config.data}: none of the classes {sorted(wanted)} is in {sorted(synsets.items())}")
    objects = []
    lists_found = []
    for synset in chosen:
        list_path = config.data / synset / f"{config.split_prefix}{split}.lst"
        if not list_path.is_file():
            continue
        lists_found.append(list_path)
        objects.extend((config.data / synset, model) for model in read_split_list(list_path))
    if config.instances:
        objects = [entry for entry in objects if entry[1] in set(config.instances)]
    if config.max_instances is not None:
        objects = objects[: config.max_instances]
    if not objects:
        where = ", ".join(str(path) for path in lists_found) or f"no {config.split_prefix}{split}.lst file"
        hint = "" if lists_found else nested_root_hint(config.data, lambda path: (path / "metadata.yaml").is_file())
        raise DVRFormatError(f"empty split {split!r} in {config.data} ({where}){hint}")
    return objects


@dataclass
class ShapeNetDVR(DataParser):
    """Parses DVR's ShapeNet layout into per-view cameras with object and view indices."""

    config: ShapeNetDVRDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; shapenet-dvr-data answers train, val and test")
        if self.config.downscale_factor not in (None, 1, 1.0):
            raise ValueError(
                f"shapenet-dvr-data: downscale_factor {self.config.downscale_factor} is not supported (images are "
                "served at their stored size); use ns-render camera-path/interpolate/spiral --downscale-factor"
            )
        entries = split_objects(self.config, split)
        check_held_out_splits(
            split,
            lambda other: split_objects(self.config, other),
            lambda entry: object_files(*entry),
            DVRFormatError,
            "an object of the",
        )
        iterator = entries if len(entries) < 200 else track(entries, description="Reading DVR cameras")
        objects = [read_object(synset_dir, model) for synset_dir, model in iterator]
        scale, offset = self._world_scale(objects)
        rotation = Y_UP_TO_Z_UP if self.config.orient_z_up else np.eye(3)
        object_to_world = np.concatenate([rotation, np.zeros((3, 1))], axis=1)

        c2w, intrinsics, sizes, instance_idx, view_idx = [], [], [], [], []
        images, masks, depths = [], [], []
        for index, obj in enumerate(objects):
            height, width = image_size(obj.image_paths[0])
            views = scene_views(self.config, split, len(obj.image_paths))
            for view in views:
                pose = obj.c2w_opencv[view].copy()
                pose[:3] = object_to_world[:, :3] @ pose[:3]
                c2w.append((pose @ OPENCV_TO_OPENGL)[:3])
                if obj.pixel_intrinsics is not None:
                    pixel_intrinsics = tuple(float(value) for value in obj.pixel_intrinsics[view])
                else:
                    camera_mat = obj.camera_mats[view]
                    corner_aligned = self.config.corner_aligned_pixels
                    pixel_intrinsics = normalized_to_pixel_intrinsics(camera_mat, height, width, corner_aligned)
                check_pixel_intrinsics(
                    *pixel_intrinsics,
                    height,
                    width,
                    f"{obj.path / 'cameras.npz'}: "
                    + (f"world_mat_{view}" if obj.pixel_intrinsics is not None else f"camera_mat_{view}"),
                    "Expected DVR's normalised intrinsics (image spans [-1, 1]) or a DTU-style projection.",
                    DVRFormatError,
                )
                intrinsics.append(pixel_intrinsics)
                sizes.append((height, width))
                instance_idx.append(index)
                view_idx.append(view)
            images.extend(
                rgb_image_path(
                    obj.image_paths[view],
                    self.config.image_cache_dir,
                    "a PNG or JPEG view",
                    IMAGE_CACHE_OPTION,
                    DVRFormatError,
                )
                for view in views
            )
            if obj.mask_paths:
                for view in views:
                    verify_image_file(obj.mask_paths[view], "a mask PNG (object > 0)", DVRFormatError)
                masks.extend(obj.mask_paths[view] for view in views)
            depths.extend(obj.depth_paths[view] for view in views if obj.depth_paths)
        has_masks = all(obj.mask_paths for obj in objects)
        has_depth = all(obj.depth_paths for obj in objects)

        c2w_tensor = torch.from_numpy(np.stack(c2w)).float()
        k = torch.tensor(intrinsics, dtype=torch.float32)
        hw = torch.tensor(sizes, dtype=torch.long)
        cameras = Cameras(
            camera_to_worlds=c2w_tensor,
            fx=k[:, 0:1],
            fy=k[:, 1:2],
            cx=k[:, 2:3],
            cy=k[:, 3:4],
            height=hw[:, 0:1],
            width=hw[:, 1:2],
            camera_type=CameraType.PERSPECTIVE,
            metadata={
                "instance_idx": torch.tensor(instance_idx, dtype=torch.long)[:, None],
                "view_idx": torch.tensor(view_idx, dtype=torch.long)[:, None],
            },
        )
        distances = c2w_tensor[:, :3, 3].norm(dim=-1)
        near = max(float(distances.min()) - UNIT_CUBE_RADIUS, 0.05) if self.config.near is None else self.config.near
        far = float(distances.max()) + UNIT_CUBE_RADIUS if self.config.far is None else self.config.far
        metadata = {
            "instance_names": [f"{obj.synset}/{obj.model_id}" for obj in objects],
            "num_instances": len(objects),
            "mask_filenames": masks if has_masks else None,
            "depth_filenames": depths if has_depth else None,
            "depth_unit_scale_factor": 1.0,
            "depth_kind": "z",
            "pointcloud_filenames": [obj.pointcloud_path for obj in objects],
            "input_image_filenames": [
                obj.input_views.image_paths if obj.input_views is not None else obj.image_paths for obj in objects
            ],
            "object_to_world": torch.from_numpy(object_to_world).float(),
            "near": near,
            "far": far,
        }
        # nerfstudio's record of how the stored world maps to its world: p_ns = R (p - t) / s.
        transform = np.concatenate([rotation, -(rotation @ offset)[:, None]], axis=1)
        return DataparserOutputs(
            image_filenames=images,
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.tensor([[-0.55, -0.55, -0.55], [0.55, 0.55, 0.55]])),
            mask_filenames=masks if (has_masks and self.config.use_masks_for_sampling) else None,
            metadata=metadata,
            dataparser_transform=torch.from_numpy(transform).float(),
            dataparser_scale=1.0 / scale,
        )

    @staticmethod
    def _world_scale(objects: List[DVRObject]) -> Tuple[float, np.ndarray]:
        """The one ``scale_mat`` (scale, offset) shared by all objects: nerfstudio records a single transform."""
        first = objects[0]
        for obj in objects:
            same_scale = abs(obj.world_scale - first.world_scale) <= 1e-9 * first.world_scale
            if not same_scale or np.abs(obj.world_offset - first.world_offset).max() > 1e-9 * first.world_scale:
                raise DVRFormatError(
                    f"{obj.path / 'cameras.npz'}: its scale_mat differs from that of {first.path}; nerfstudio records "
                    "one world transform per dataset, so parse such objects separately"
                )
        return first.world_scale, first.world_offset


def scene_views(config: ShapeNetDVRDataParserConfig, split: str, num_views: int) -> List[int]:
    """Views of an object in ``split``: all of them, except for single-object folders with a held-out stride."""
    every = config.scene_heldout_every
    if not is_single_object(config.data) or every <= 0:
        return list(range(num_views))
    heldout = [view for view in range(num_views) if view % every == 0]
    return heldout if split != "train" else [view for view in range(num_views) if view % every != 0]
