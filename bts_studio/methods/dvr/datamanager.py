"""DVR's data manager: ``B`` images x ``R`` random integer pixels per step, with masks, depth and input views.

As DVR's ``Shapes3dDataset`` + ``DVRTrainer``: each batch item is one (object, supervision view) pair with
``n_training_points`` pixels drawn at integer locations (``sample_continuous: False``), its mask and depth, and
the object's encoder input view (``img_choy2016`` view at random while training; view 0 at evaluation, as
DVR's ShapeNet test loader). Images, masks and depth are cached once (uint8 / bool / float32).

The eval split's cameras are tagged ``dvr_split = 1`` (train: 0) next to ``instance_idx``, so that a render of
any camera (viewer, ns-render, ns-eval) is conditioned on the input view of the object that camera shows.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from jaxtyping import Float, UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import (
    AnnotatedDataParserUnion,
    VanillaDataManager,
    VanillaDataManagerConfig,
)
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.dvr_reader import read_depth
from bts_studio.methods.common.cameras import PixelRayGenerator
from bts_studio.methods.common.conditioning_rules import PATH_INDEX_KEY, PATH_SPLIT_KEY
from bts_studio.methods.common.distributed import ShardedOrder, rank_and_world_size, shared_seed
from bts_studio.methods.common.image_store import load_images
from bts_studio.methods.dvr.batch import DVRBatch

SPLIT_CODES = {"train": 0, "test": 1}


@dataclass
class DVRDataManagerConfig(VanillaDataManagerConfig):
    """Image x pixel batches for DVR."""

    _target: Type = field(default_factory=lambda: DVRDataManager)
    """The data manager class this config builds."""
    dataparser: AnnotatedDataParserUnion = field(default_factory=ShapeNetDVRDataParserConfig)
    """Dataparser; it must provide masks, ``instance_idx`` and ``input_image_filenames`` (shapenet-dvr-data)."""
    images_per_batch: int = 64
    """Images (object, view pairs) per training batch (DVR ``batch_size`` 64)."""
    rays_per_image: int = 1024
    """Pixels per image per batch (DVR ``n_training_points`` 1024; 768 in ``ours_combined``)."""
    input_image_size: int = 224
    """Side of the encoder input views after resizing (DVR ``img_size_input`` 224); 0: no input views (an
    unconditioned multi-view model)."""
    random_input_view: bool = True
    """Training: a random input view of the object per item (DVR ``random_view``); False: always view 0."""
    load_depth: bool = True
    """Cache the depth maps when the dataset has them (depth loss, occupancy points at the true depth)."""
    cache_on_device: bool = True
    """Keep the caches on the training device (uint8 images; 256x256 x 24 views take 4.5 MiB per object)."""


def read_rgb(path: Path, size: Optional[int] = None) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0]  # DVR uses the first channel
    return array > (127 if array.dtype == np.uint8 else 0.5)


def read_all(function, paths: Sequence, *args) -> List[np.ndarray]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda path: function(path, *args), paths))


class DVRDataManager(VanillaDataManager):
    """Caches supervision images, masks, depth and encoder input views; serves :class:`DVRBatch` batches."""

    config: DVRDataManagerConfig

    def create_train_dataset(self) -> InputDataset:
        return self._tagged(super().create_train_dataset(), "train")

    def create_eval_dataset(self) -> InputDataset:
        return self._tagged(super().create_eval_dataset(), "test")

    @staticmethod
    def _tagged(dataset: InputDataset, split: str) -> InputDataset:
        metadata = dataset.cameras.metadata
        if metadata is None or "instance_idx" not in metadata:
            raise ValueError("dvr needs 'instance_idx' in the camera metadata (use the shapenet-dvr-data dataparser)")
        metadata["dvr_split"] = torch.full_like(metadata["instance_idx"], SPLIT_CODES[split])
        return dataset

    # ---------------------------------------------------------------------------------------------- caches
    def _cache(self, dataset: InputDataset) -> Dict[str, Optional[Tensor]]:
        device = self.device if self.config.cache_on_device else "cpu"
        metadata = dataset.metadata
        if not metadata.get("mask_filenames"):
            raise ValueError(f"dvr needs object masks (mask/*.png) for every image; {self.config.data} has none")
        images = load_images(dataset, range(len(dataset)), device, "Caching DVR images")
        masks = np.stack(read_all(read_mask, metadata["mask_filenames"]))
        if tuple(images.shape[:3]) != masks.shape:
            raise ValueError(
                f"dvr: masks {masks.shape} do not match images {tuple(images.shape[:3])} in {self.config.data}"
            )
        depth = None
        if self.config.load_depth and metadata.get("depth_filenames"):
            depth = torch.from_numpy(np.stack(read_all(read_depth, metadata["depth_filenames"]))).to(device)
            if depth.shape != masks.shape:
                raise ValueError(f"dvr: depth maps {tuple(depth.shape)} do not match the masks {masks.shape}")
        instance = dataset.cameras.metadata["instance_idx"].reshape(-1)
        num_objects = int(metadata.get("num_instances", int(instance.max()) + 1))
        views = [torch.nonzero(instance == obj)[:, 0] for obj in range(num_objects)]
        counts = torch.tensor([len(v) for v in views])
        if (counts == 0).any():
            raise ValueError(f"dvr: object {int(torch.nonzero(counts == 0)[0])} has no images in this split")
        table = torch.stack([torch.cat([v, v[:1].repeat(int(counts.max()) - len(v))]) for v in views])
        return {
            "images": images,
            "masks": torch.from_numpy(masks).to(device),
            "depth": depth,
            "views": table.to(device),
            "view_counts": counts.to(device),
        }

    def _input_views(self, dataset: InputDataset, objects: Sequence[int]) -> UInt8[Tensor, "O V 3 S S"]:
        size = self.config.input_image_size
        lists = dataset.metadata.get("input_image_filenames")
        if not lists:
            raise ValueError("dvr: the dataparser gave no input_image_filenames (use shapenet-dvr-data)")
        chosen = [lists[obj] for obj in objects]
        count = min(len(paths) for paths in chosen)
        flat = [paths[view] for paths in chosen for view in range(count)]
        arrays = np.stack(read_all(read_rgb, flat, size)).reshape(len(chosen), count, size, size, 3)
        return torch.from_numpy(arrays).permute(0, 1, 4, 2, 3).contiguous()

    def setup_train(self) -> None:
        self.train_cache = self._cache(self.train_dataset)
        self.num_train_objects = int(self.train_cache["views"].shape[0])
        self.train_inputs = None
        if self.config.input_image_size > 0:
            inputs = self._input_views(self.train_dataset, range(self.num_train_objects))
            self.train_inputs = inputs.to(self.device if self.config.cache_on_device else "cpu")
        # nerfstudio's RayGenerator, bit for bit, without its 6 host syncs per batch (issue 13).
        self.train_ray_generator = PixelRayGenerator(self.train_dataset.cameras.to(self.device))
        # Multi-GPU (docs/multi_gpu.md): images_per_batch is per process; the step's objects are one permutation
        # seeded by (seed, step), cut into per-rank slices, when there are enough objects; else each rank draws
        # with replacement on its own (as one process does when the batch exceeds the objects).
        rank, world_size = rank_and_world_size()
        seed = shared_seed()  # a collective under DDP: every rank builds its datamanager at the same time
        self.train_order: Optional[ShardedOrder] = None
        if world_size * self.config.images_per_batch <= self.num_train_objects:
            self.train_order = ShardedOrder(
                self.num_train_objects, self.config.images_per_batch, seed, rank, world_size, per_step=True
            )
        CONSOLE.print(
            f"dvr: {self.num_train_objects} training objects, {len(self.train_dataset)} images, depth "
            f"{'cached' if self.train_cache['depth'] is not None else 'absent'}"
        )

    def setup_eval(self) -> None:
        self.eval_ray_generator = PixelRayGenerator(self.eval_dataset.cameras.to(self.device))
        # nerfstudio's eval loaders (no images read until asked): ns-render spiral starts from
        # ``eval_dataloader.get_camera(0)``; the evaluation itself uses ``eval_image``.
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device
        )
        self.eval_dataloader = RandIndicesEvalDataloader(input_dataset=self.eval_dataset, device=self.device)

    # --------------------------------------------------------------------------------------------- batches
    def get_train_rays_per_batch(self) -> int:
        return self.config.images_per_batch * self.config.rays_per_image

    def sample_batch(
        self,
        cache: Dict[str, Optional[Tensor]],
        inputs: Optional[Tensor],
        random_input: bool,
        objects: Optional[Tensor] = None,
    ):
        """Indices ``[B * R, 3]`` (image, row, col) and the :class:`DVRBatch` of one random batch (of the given
        ``objects [B]``, else of random ones)."""
        batch_size, rays = self.config.images_per_batch, self.config.rays_per_image
        images, masks, depth = cache["images"], cache["masks"], cache["depth"]
        assert images is not None and masks is not None
        device = images.device
        num_objects = int(cache["views"].shape[0])
        if objects is not None:
            # A host tensor (ShardedOrder): from pinned memory the copy does not wait for the device.
            pinned = objects.pin_memory() if device.type == "cuda" else objects
            objects = pinned.to(device, non_blocking=True)
        elif batch_size <= num_objects:
            objects = torch.randperm(num_objects, device=device)[:batch_size]
        else:
            objects = torch.randint(0, num_objects, (batch_size,), device=device)
        pick = (torch.rand(batch_size, device=device) * cache["view_counts"][objects]).long()
        image_idx = cache["views"][objects, pick.clamp_max(cache["views"].shape[1] - 1)]
        _, height, width, _ = images.shape
        rows = torch.randint(0, height, (batch_size, rays), device=device)
        cols = torch.randint(0, width, (batch_size, rays), device=device)
        flat_images = image_idx[:, None].expand(batch_size, rays)
        input_images = None
        if inputs is not None:
            count = inputs.shape[1]
            # Drawn where the views are cached (the CPU generator for a CPU cache, as before; no copy for a GPU one).
            view = (
                torch.randint(0, count, (batch_size,), device=inputs.device)
                if random_input
                else torch.zeros(batch_size, dtype=torch.long, device=inputs.device)
            )
            input_images = inputs[objects.to(inputs.device), view].to(self.device).float() / 255.0
        batch = DVRBatch(
            rgb=images[flat_images, rows, cols].to(self.device).float() / 255.0,
            mask=masks[flat_images, rows, cols].to(self.device),
            depth=None if depth is None else depth[flat_images, rows, cols].to(self.device),
            image_indices=image_idx.to(self.device),
            object_indices=objects.to(self.device),
            input_images=input_images,
        )
        indices = torch.stack([flat_images, rows, cols], dim=-1).reshape(-1, 3).to(self.device)
        return indices, batch

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        objects = self.train_order.batch(step) if self.train_order is not None else None
        indices, batch = self.sample_batch(self.train_cache, self.train_inputs, self.config.random_input_view, objects)
        return self.train_ray_generator(indices), {"dvr": batch, "image": batch.rgb.reshape(-1, 3)}

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        # Loss curves on training objects with input view 0 (the held-out objects are scored by ns-eval).
        self.eval_count += 1
        indices, batch = self.sample_batch(self.train_cache, self.train_inputs, False)
        return self.train_ray_generator(indices), {"dvr": batch, "image": batch.rgb.reshape(-1, 3)}

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        image_idx = int(torch.randint(0, len(self.eval_dataset), ()).item())
        return self.eval_image(image_idx)

    def eval_image(self, image_idx: int) -> Tuple[Cameras, Dict]:
        """Camera (with ``instance_idx`` and ``dvr_split``), image and mask of one eval-split image."""
        camera = self.eval_dataset.cameras[image_idx : image_idx + 1].to(self.device)
        image = torch.from_numpy(read_rgb(self.eval_dataset.image_filenames[image_idx]).copy()).float() / 255.0
        mask = torch.from_numpy(read_mask(self.eval_dataset.metadata["mask_filenames"][image_idx]))
        return camera, {"image": image.to(self.device), "mask": mask.to(self.device), "image_idx": image_idx}

    # ------------------------------------------------------------------------------------------ conditioning
    def input_view(self, split: int, obj: int, view: int = 0) -> Float[Tensor, "1 3 S S"]:
        """The encoder input of object ``obj`` of split ``split`` (0 train, 1 eval), in [0, 1]."""
        if self.config.input_image_size <= 0:
            raise ValueError("dvr: this model has no input views (input_image_size 0)")
        train_inputs = getattr(self, "train_inputs", None)
        if split == SPLIT_CODES["train"] and train_inputs is not None:
            image = train_inputs[obj, min(view, train_inputs.shape[1] - 1)]
        else:
            # Eval objects, and training objects when setup_train did not run (ns-render camera-path loads the
            # pipeline with test_mode "inference", which skips setup_train/setup_eval): read on first use.
            cache: Optional[Dict[Tuple[int, int], Tensor]] = getattr(self, "input_view_cache", None)
            if cache is None:  # (split code, object) -> input views; made on first use, the only use
                cache = self.input_view_cache = {}
            if (split, obj) not in cache:
                dataset = self.train_dataset if split == SPLIT_CODES["train"] else self.eval_dataset
                cache[(split, obj)] = self._input_views(dataset, [obj])[0]
            cached = cache[(split, obj)]
            image = cached[min(view, cached.shape[0] - 1)]
        return image[None].to(self.device).float() / 255.0

    def object_of_camera(self, camera: Cameras) -> Tuple[int, int]:
        """``(split code, object)`` a camera shows: its metadata, else the source a camera path stores
        (``bts-studio camera-path``), else its ``cam_idx`` (a training image), else training object 0.

        Raises:
            IndexError: a path source or ``cam_idx`` past the end of its split (the message gives the valid range).
        """
        metadata = camera.metadata or {}
        if "instance_idx" in metadata and "dvr_split" in metadata:
            split = int(torch.as_tensor(metadata["dvr_split"]).reshape(-1)[0])
            return split, int(torch.as_tensor(metadata["instance_idx"]).reshape(-1)[0])
        if metadata.get(PATH_SPLIT_KEY) is not None and metadata.get(PATH_INDEX_KEY) is not None:
            split = int(torch.as_tensor(metadata[PATH_SPLIT_KEY]).reshape(-1)[0])
            image = int(torch.as_tensor(metadata[PATH_INDEX_KEY]).reshape(-1)[0])
            dataset = self.train_dataset if split == SPLIT_CODES["train"] else self.eval_dataset
            return split, self._object_of_image(dataset, image, "the camera path's source")
        if metadata.get("cam_idx") is not None:
            image = int(torch.as_tensor(metadata["cam_idx"]).reshape(-1)[0])
            return SPLIT_CODES["train"], self._object_of_image(self.train_dataset, image, "--camera-idx")
        return SPLIT_CODES["train"], 0

    @staticmethod
    def _object_of_image(dataset: InputDataset, image: int, what: str) -> int:
        instance = dataset.cameras.metadata["instance_idx"].reshape(-1)
        if not 0 <= image < len(instance):
            raise IndexError(f"dvr: {what} {image} is not an image of the split (valid: 0..{len(instance) - 1})")
        return int(instance[image])
