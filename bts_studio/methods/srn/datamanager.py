"""SRN's data manager: training batches of B instances x R rays, from images cached once as uint8.

SRN predicts one scene function per instance, so a batch must hold few instances with many rays each
(SRN itself trains on whole images of one instance per batch item). Each step draws
``instances_per_batch`` distinct training instances and, for each, ``rays_per_instance`` rays at random
pixels of random training views of that instance. The instance index reaches the model through the
cameras' ``instance_idx`` metadata, which nerfstudio copies into ``RayBundle.metadata``.

Held-out views: ``heldout_views_per_instance`` withholds the last views (by view index) of every training
instance from training; ns-eval scores them (novel views of training instances).

Multi-GPU (``docs/multi_gpu.md``): ``instances_per_batch`` is per process. Each step's instances are one
permutation seeded by ``(seed, step)``, shared by all ranks and cut into per-rank slices (a ``ShardedOrder``), so
the ranks train on distinct instances and together on the instances one process at ``N x instances_per_batch``
would draw; each rank draws its own rays.

Eval split: its cameras describe *other* instances (test objects), which have no trained code. Their
``instance_idx`` metadata is renamed ``test_instance_idx`` so nothing renders them with a training code
by mistake; ns-eval fits their codes first (``few_shot.py``). The eval batches nerfstudio draws during
training (``next_eval``, ``next_eval_image``) come from the held-out views of training instances (or from
training views when none are held out).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Type

import torch
from jaxtyping import Float, Int
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
from torch import Tensor

from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
from bts_studio.methods.common.cameras import PixelRayGenerator
from bts_studio.methods.common.distributed import ShardedOrder, rank_and_world_size, shared_seed
from bts_studio.methods.common.image_store import load_images
from bts_studio.methods.srn.batch import SRNBatch


@dataclass
class SRNDataManagerConfig(VanillaDataManagerConfig):
    """Instance-grouped ray batches for SRN."""

    _target: Type = field(default_factory=lambda: SRNDataManager)
    """The data manager class this config builds."""
    dataparser: AnnotatedDataParserUnion = field(default_factory=ShapeNetSRNDataParserConfig)
    """Dataparser; it must put ``instance_idx`` and ``view_idx`` into the camera metadata (shapenet-srn-data)."""
    instances_per_batch: int = 32
    """Distinct training instances per training batch and GPU (one GPU: all of them when the class has fewer;
    N GPUs: the class needs N x this many)."""
    rays_per_instance: int = 2048
    """Rays per instance per batch, at random pixels of random training views of the instance."""
    heldout_views_per_instance: int = 0
    """Views per training instance withheld from training (the last ones by view index); ns-eval scores them."""
    images_on_gpu: bool = True
    """Keep the uint8 image cache on the training device (a 128x128 view takes 48 KiB)."""


def views_by_instance(cameras: Cameras, instance_key: str) -> Dict[int, List[Tuple[int, int]]]:
    """``instance -> [(view_idx, image_idx), ...]`` sorted by view index, from the camera metadata."""
    metadata = cameras.metadata or {}
    if instance_key not in metadata or "view_idx" not in metadata:
        raise ValueError(
            f"srn needs '{instance_key}' and 'view_idx' in the camera metadata (the shapenet-srn-data dataparser "
            f"writes them); found keys {sorted(metadata)}"
        )
    instances = metadata[instance_key].reshape(-1).tolist()
    views = metadata["view_idx"].reshape(-1).tolist()
    table: Dict[int, List[Tuple[int, int]]] = {}
    for image_idx, (instance, view) in enumerate(zip(instances, views, strict=True)):
        table.setdefault(int(instance), []).append((int(view), image_idx))
    return {instance: sorted(entries) for instance, entries in sorted(table.items())}


class ViewTable:
    """Per-instance lists of image indices, padded into a matrix so batches can be drawn without loops."""

    def __init__(self, images_per_instance: List[List[int]], device: torch.device | str) -> None:
        counts = [len(images) for images in images_per_instance]
        width = max(counts)
        padded = [images + images[:1] * (width - len(images)) for images in images_per_instance]
        self.images: Int[Tensor, "I V"] = torch.tensor(padded, dtype=torch.long, device=device)
        self.counts: Int[Tensor, " I"] = torch.tensor(counts, dtype=torch.long, device=device)

    @property
    def num_instances(self) -> int:
        return self.images.shape[0]

    def sample(self, instances: Int[Tensor, " B"], rays_per_instance: int) -> Int[Tensor, "B R"]:
        """A random view (image index) of its instance for each of ``rays_per_instance`` rays."""
        uniform = torch.rand(instances.shape[0], rays_per_instance, device=self.images.device)
        choice = (uniform * self.counts[instances, None]).long().clamp_max(self.images.shape[1] - 1)
        return self.images[instances[:, None], choice]


class SRNDataManager(VanillaDataManager):
    """Caches training images once and serves instance-grouped ray batches."""

    config: SRNDataManagerConfig

    def create_train_dataset(self) -> InputDataset:
        dataset = super().create_train_dataset()
        table = views_by_instance(dataset.cameras, "instance_idx")
        if not table:
            raise ValueError("srn: the training split has no images")
        # The model maps the viewer's clicked camera (a training image) to its instance with this.
        dataset.metadata["image_instance_idx"] = dataset.cameras.metadata["instance_idx"].reshape(-1).clone()
        return dataset

    def create_eval_dataset(self) -> InputDataset:
        dataset = super().create_eval_dataset()
        metadata = dataset.cameras.metadata
        if metadata is not None and "instance_idx" in metadata:
            metadata["test_instance_idx"] = metadata.pop("instance_idx")
        return dataset

    # ----------------------------------------------------------------------------------------------
    # training

    def setup_train(self) -> None:
        cache_device = self.device if self.config.images_on_gpu else "cpu"
        table = views_by_instance(self.train_dataset.cameras, "instance_idx")
        holdout = self.config.heldout_views_per_instance
        trainable, heldout = [], []
        for instance, entries in table.items():
            if len(entries) <= holdout:
                raise ValueError(
                    f"instance {instance} has {len(entries)} training views; cannot hold out {holdout} of them"
                )
            cut = len(entries) - holdout
            trainable.append([image for _, image in entries[:cut]])
            heldout.append([image for _, image in entries[cut:]])
        if sorted(table) != list(range(len(table))):
            raise ValueError(f"training instance indices must be 0..N-1, found {sorted(table)[:10]}...")
        self.train_views = ViewTable(trainable, self.device)
        rank, world_size = rank_and_world_size()
        self._seed = shared_seed()  # a collective under DDP: every rank builds its datamanager at the same time
        count = min(self.config.instances_per_batch, len(trainable))
        if world_size * count > len(trainable):
            raise ValueError(
                f"srn: {world_size} GPUs x {count} instances per batch need {world_size * count} training instances; "
                f"the data has {len(trainable)}. Lower --pipeline.datamanager.instances-per-batch to "
                f"{len(trainable) // world_size} or less"
            )
        self.train_order = ShardedOrder(len(trainable), count, self._seed, rank, world_size, per_step=True)
        self.heldout_views = ViewTable(heldout, self.device) if holdout > 0 else None
        self.heldout_image_indices: List[int] = [image for images in heldout for image in images]
        self.image_cache = load_images(
            self.train_dataset, range(len(self.train_dataset)), cache_device, "Caching SRN training images"
        )
        # nerfstudio's RayGenerator, bit for bit, without its host syncs per batch (issues 13, 17).
        self.train_ray_generator = PixelRayGenerator(self.train_dataset.cameras.to(self.device))
        CONSOLE.print(
            f"srn: {self.train_views.num_instances} training instances, {sum(map(len, trainable))} training views, "
            f"{len(self.heldout_image_indices)} held out"
        )

    def _instance_ray_batch(
        self, views: ViewTable, generator: PixelRayGenerator, step: int, order: ShardedOrder
    ) -> Tuple[RayBundle, SRNBatch]:
        instances = order.batch(step).to(self.device)
        images = views.sample(instances, self.config.rays_per_instance)
        _, height, width, _ = self.image_cache.shape
        rows = torch.randint(0, height, images.shape, device=self.device)
        cols = torch.randint(0, width, images.shape, device=self.device)
        indices = torch.stack([images, rows, cols], dim=-1)  # [U, R, 3]
        cache_indices = indices.to(self.image_cache.device)
        colours = self.image_cache[cache_indices[..., 0], cache_indices[..., 1], cache_indices[..., 2]]
        rays = generator(indices.reshape(-1, 3)).reshape(tuple(images.shape))
        batch = SRNBatch(
            rays=rays,
            image=colours.to(self.device).float() / 255.0,
            instances=instances,
            indices=indices,
        )
        return rays, batch

    def next_train(self, step: int) -> Tuple[RayBundle, SRNBatch]:
        """Rays ``[U, R]`` (one instance per row) and their :class:`SRNBatch`."""
        self.train_count += 1
        return self._instance_ray_batch(self.train_views, self.train_ray_generator, step, self.train_order)

    def get_train_rays_per_batch(self) -> int:
        return min(self.config.instances_per_batch, self.train_views.num_instances) * self.config.rays_per_instance

    # ----------------------------------------------------------------------------------------------
    # evaluation during training (novel views of training instances; see the module docstring)

    def setup_eval(self) -> None:
        # nerfstudio's eval CacheDataloader would decode every test image as float32 up front; the
        # few-shot evaluation streams them per instance instead.
        self.eval_ray_generator = PixelRayGenerator(self.eval_dataset.cameras.to(self.device))
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )

    def next_eval(self, step: int) -> Tuple[RayBundle, SRNBatch]:
        self.eval_count += 1
        views = self.heldout_views if self.heldout_views is not None else self.train_views
        count = min(self.config.instances_per_batch, views.num_instances)
        order = ShardedOrder(views.num_instances, count, self._seed + 1, per_step=True)  # this process only
        return self._instance_ray_batch(views, self.train_ray_generator, self.eval_count, order)

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        candidates = self.heldout_image_indices or list(range(len(self.train_dataset)))
        image_idx = candidates[int(torch.randint(0, len(candidates), ()).item())]
        return self.train_image(image_idx)

    def train_image(self, image_idx: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        """Camera (with its ``instance_idx``) and cached image of one training image."""
        camera = self.train_dataset.cameras[image_idx : image_idx + 1].to(self.device)
        image = self.image_cache[image_idx].to(self.device).float() / 255.0
        return camera, {"image": image, "image_idx": image_idx}

    def mean_training_image(self) -> Float[Tensor, "H W 3"]:
        """Per-pixel mean of the images the model trains on (the "mean training image" baseline)."""
        rows, counts = self.train_views.images.tolist(), self.train_views.counts.tolist()
        used = sorted({image for row, count in zip(rows, counts, strict=True) for image in row[:count]})
        total = torch.zeros(self.image_cache.shape[1:], dtype=torch.float64, device=self.image_cache.device)
        for start in range(0, len(used), 1024):
            total += self.image_cache[used[start : start + 1024]].double().sum(dim=0)
        return (total / (255.0 * len(used))).float()
