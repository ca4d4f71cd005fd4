"""BTS training batches: frame groups, the loss/render split, shared colour jitter and 8x8 patch rays.

A batch holds ``B`` frame groups (``metadata["frame_groups"]`` of the dataparser, columns in BTS order:
0 input t, 1 same camera t+1, 2 stereo partner t, 3 partner t+1, 4/5 same-side fisheye t+10/t+11,
6/7 other fisheye t+10/t+11). Per batch (as BTS's ``kitti360-mono`` mode) the group is split into
loss frames {0, 3, 4, 7} and render frames {1, 2, 5, 6}, or the swap, with probability 1/2. Rays are
``rays_per_group / patch_size^2`` patches per group, each from a loss frame drawn uniformly, with a top-left
corner uniform in ``[0, H - p) x [0, W - p)`` (BTS's ``PatchRaySampler``).

The datamanager subclasses ``VanillaDataManager`` so that ``--data`` propagation, ``ns-render`` and ``ns-export``
keep working, but it replaces nerfstudio's per-image ray caches with :class:`GroupImageStore`.
Every dataset camera is tagged with ``bts_split`` / ``bts_image_index`` metadata so that a render of it is
conditioned on its own image (``sources.py``).

Multi-GPU (``docs/multi_gpu.md``): ``groups_per_batch`` is per process. Each step's groups come from a
:class:`ShardedOrder` (epoch-wise shuffled, sharded across DDP ranks) and every random draw of the step (split,
jitter, patches) from a generator seeded by ``(seed, step)``, drawn for the global batch of ``world_size x
groups_per_batch`` groups; a rank keeps its rows. So N processes at ``B`` groups each train, step by step, on
exactly the batch one process at ``N x B`` groups draws with the same ``--machine.seed`` (see
:meth:`BTSDataManager.draw_batch`).
"""

from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig
from bts_studio.methods.bts.augmentation import (
    ColourJitterRanges,
    apply_colour_jitter_batch,
    apply_colour_jitter_groups,
    draw_colour_jitter,
)
from bts_studio.methods.bts.batch import BTSBatch
from bts_studio.methods.bts.sources import SPLIT_IDS
from bts_studio.methods.bts.triton_jitter import colour_jitter_triton
from bts_studio.methods.common.cameras import PixelRayGenerator, cameras_to_opencv_w2c
from bts_studio.methods.common.distributed import ShardedOrder, rank_and_world_size, shared_seed, step_generator
from bts_studio.methods.common.image_store import GroupImageStore, ImageCacheMode

LOSS_COLUMNS = (0, 3, 4, 7)
RENDER_COLUMNS = (1, 2, 5, 6)
"""BTS's ``kitti360-mono`` split for ``start_from = 0``; the other half of the draws swaps the two."""


class BTSDataset(InputDataset):
    """An InputDataset whose items also carry the lidar z-depth map (``lidar_depth`` ``[H, W, 1]``) when one exists."""

    def get_metadata(self, data: Dict) -> Dict:
        filenames = self.metadata.get("lidar_depth_filenames")
        if not filenames or filenames[data["image_idx"]] is None:
            return {}
        path = filenames[data["image_idx"]]
        try:
            depth = np.load(path).astype(np.float32)
        except Exception as error:
            raise ValueError(
                f"bts-density: cannot read lidar depth map {path} ({error}); delete it to rebuild"
            ) from error
        height, width = data["image"].shape[:2]
        if depth.shape != (height, width) or not np.isfinite(depth).all():
            raise ValueError(
                f"bts-density: lidar depth map {path} has shape {depth.shape} or non-finite values; "
                f"expected finite {(height, width)} (0 = no return)"
            )
        return {"lidar_depth": torch.from_numpy(depth)[..., None]}


@dataclass
class BTSDataManagerConfig(VanillaDataManagerConfig):
    """Frame-group batches for bts-density."""

    _target: Type = field(default_factory=lambda: BTSDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=Kitti360DataParserConfig)
    """The dataparser; it must provide metadata['frame_groups'] (kitti360-data does)."""
    groups_per_batch: int = 16
    """Frame groups per training step and GPU (BTS: batch size 16 on one GPU); with --machine.num-devices N the
    effective batch is N x this."""
    rays_per_group: int = 4096
    """Rays per frame group, as patch_size x patch_size patches (BTS: 4096 = 64 patches of 8x8)."""
    patch_size: int = 8
    """Side of the square ray patches; SSIM is computed inside each patch (BTS: 8)."""
    colour_jitter: bool = True
    """Jitter brightness, contrast, saturation and hue, one draw per group for all its frames (BTS)."""
    fused_colour_jitter: bool = True
    """On CUDA, jitter the batch in two Triton kernels (``methods/bts/triton_jitter.py``) instead of the batched
    tensor ops of ``augmentation.apply_colour_jitter_batch`` (its twin; the same formulas, float rounding apart).
    On an H200 this took the ``ns-train`` step from 51.6 to 45.2-46.5 ms (docs/benchmarks.md, thirteenth session).
    The CPU keeps torchvision per group (``apply_colour_jitter_groups``); on CUDA without Triton, or where the
    kernels fail (warned once), the twin runs (issue 17)."""
    image_cache: ImageCacheMode = "auto"
    """device/cpu: keep all images as uint8 on the GPU / in RAM; disk: decode PNGs in workers; auto: what fits."""
    image_cache_device_gib: float = 8.0
    """auto caches on the GPU up to this size."""
    image_cache_cpu_gib: float = 16.0
    """auto caches in RAM up to this size, else decodes from disk."""
    num_workers: int = 8
    """Decoding processes for image_cache=disk."""
    split_mode: Literal["kitti360-mono", "per-group"] = "kitti360-mono"
    """kitti360-mono: one loss/render draw per batch as BTS; per-group: one draw per frame group."""


class BTSDataManager(VanillaDataManager[BTSDataset]):
    """Yields BTS frame-group batches; eval cameras and images come from nerfstudio's eval dataloaders."""

    config: BTSDataManagerConfig
    draws_depend_only_on_step = True
    """``next_train(step)`` depends only on the data, config, shared seed, step and rank (no global RNG, nothing
    the training step writes): the trainer may draw step N+1's batch while step N runs (``draw_ahead``)."""

    # ------------------------------------------------------------------------------------------------ datasets
    def create_train_dataset(self) -> BTSDataset:
        return self._tagged(super().create_train_dataset(), "train")

    def create_eval_dataset(self) -> BTSDataset:
        return self._tagged(super().create_eval_dataset(), "test")

    @staticmethod
    def _tagged(dataset: BTSDataset, split: str) -> BTSDataset:
        count = len(dataset.cameras)
        metadata = dict(dataset.cameras.metadata or {})
        metadata["bts_split"] = torch.full((count, 1), SPLIT_IDS[split], dtype=torch.long)
        metadata["bts_image_index"] = torch.arange(count, dtype=torch.long)[:, None]
        dataset.cameras.metadata = metadata
        return dataset

    @staticmethod
    def frame_groups(dataset: InputDataset) -> Tensor:
        """``[G, 8]`` frame groups of a dataset; a clear error when the dataparser does not provide them."""
        groups = dataset.metadata.get("frame_groups")
        if groups is None:
            raise ValueError(
                "bts-density needs BTS frame groups (dataparser metadata 'frame_groups', [G, 8] image indices); "
                "use the kitti360-data dataparser"
            )
        groups = torch.as_tensor(groups, dtype=torch.long)
        if groups.dim() != 2 or groups.shape[1] != 8 or (groups >= len(dataset)).any() or (groups < -1).any():
            raise ValueError(f"frame_groups must be [G, 8] indices in [-1, {len(dataset)}), got {tuple(groups.shape)}")
        return groups

    @staticmethod
    def usable_groups(groups: Tensor) -> Tensor:
        """Groups with an input frame and at least one frame on the other side of either loss/render split."""
        present = groups >= 0
        return groups[present[:, 0] & present[:, list(RENDER_COLUMNS)].any(dim=1)]

    @cached_property
    def eval_input_indices(self) -> Tuple[int, ...]:
        """Image indices of the eval split's input frames (column 0 of its groups)."""
        return tuple(sorted({int(i) for i in self.frame_groups(self.eval_dataset)[:, 0].tolist() if i >= 0}))

    # ---------------------------------------------------------------------------------------------------- setup
    def setup_train(self) -> None:
        if self.config.groups_per_batch < 1 or self.config.rays_per_group < self.config.patch_size**2:
            raise ValueError(
                f"bts-density: need groups_per_batch >= 1 and rays_per_group >= patch_size^2, got "
                f"{self.config.groups_per_batch} and {self.config.rays_per_group} (patch {self.config.patch_size})"
            )
        rank, world_size = rank_and_world_size()
        self._seed = shared_seed()  # a collective under DDP: every rank builds its datamanager at the same time
        groups = self.usable_groups(self.frame_groups(self.train_dataset))
        if len(groups) < world_size * self.config.groups_per_batch:
            CONSOLE.log(
                f"[yellow]bts-density: {world_size} x {self.config.groups_per_batch} groups per step exceed the "
                f"{len(groups)} training groups; a step's batch straddles epochs (groups repeat)"
            )
        order = ShardedOrder(len(groups), self.config.groups_per_batch, self._seed, rank, world_size)
        self._train_store = self._make_store(self.train_dataset, order)
        self._train_views = self._camera_tensors(self.train_dataset)

    def setup_eval(self) -> None:
        # nerfstudio's per-image loaders are lazy; its CacheDataloader (all eval images in memory) is skipped.
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, image_indices=self.eval_input_indices, device=self.device
        )
        self.eval_dataloader = RandIndicesEvalDataloader(input_dataset=self.eval_dataset, device=self.device)
        self._eval_store: Optional[GroupImageStore] = None
        self._eval_views: Optional[Tuple[Tensor, Tensor, PixelRayGenerator]] = None

    def _make_store(self, dataset: InputDataset, order: Optional[ShardedOrder] = None) -> GroupImageStore:
        groups = self.usable_groups(self.frame_groups(dataset))
        if len(groups) == 0:
            raise ValueError("bts-density: no frame group has an input frame plus a frame to render colours from")
        height, width = int(dataset.cameras.height[0]), int(dataset.cameras.width[0])
        if not ((dataset.cameras.height == height).all() and (dataset.cameras.width == width).all()):
            raise ValueError("bts-density: all images of a split must have one size")
        store = GroupImageStore(
            dataset.image_filenames,
            groups,
            height,
            width,
            self.config.groups_per_batch,
            self.device,
            mode=self.config.image_cache,
            num_workers=self.config.num_workers,
            device_limit_gib=self.config.image_cache_device_gib,
            cpu_limit_gib=self.config.image_cache_cpu_gib,
            order=order or ShardedOrder(len(groups), self.config.groups_per_batch, getattr(self, "_seed", 0)),
        )
        CONSOLE.log(f"bts-density: {len(groups)} frame groups, images served from '{store.mode}'")
        return store

    def _camera_tensors(self, dataset: InputDataset) -> Tuple[Tensor, Tensor, PixelRayGenerator]:
        """Per image: pixel K ``[N, 3, 3]``, OpenCV w2c ``[N, 3, 4]`` (on the device), and the rays' generator.

        ``PixelRayGenerator`` gives nerfstudio's rays bit for bit without host syncs: ``Cameras.generate_rays`` read
        the cameras' sizes and types back on every batch, and each read waited for the batch's colour jitter on a
        busy GPU (4.8 ms of an H200 training step's host time, issue 17, twelfth session)."""
        K, w2c = cameras_to_opencv_w2c(dataset.cameras)
        return K.to(self.device), w2c.to(self.device), PixelRayGenerator(dataset.cameras.to(self.device))

    def get_train_rays_per_batch(self) -> int:
        return self.config.groups_per_batch * self.config.rays_per_group

    # --------------------------------------------------------------------------------------------------- batches
    def next_train(self, step: int) -> Tuple[RayBundle, BTSBatch]:
        """Rays ``[G, P, p, p]`` and their :class:`BTSBatch` (which holds the same rays)."""
        self.train_count += 1
        if getattr(self, "_train_store", None) is None:  # test_mode "inference" (ns-export) skips setup_train
            self.setup_train()
        return self.draw_batch(self._train_store, self._train_views, step, augment=True)

    def next_eval(self, step: int) -> Tuple[RayBundle, BTSBatch]:
        self.eval_count += 1
        if getattr(self, "_eval_store", None) is None:
            self._eval_store = self._make_store(self.eval_dataset)
            self._eval_views = self._camera_tensors(self.eval_dataset)
        assert self._eval_views is not None
        return self.draw_batch(self._eval_store, self._eval_views, self.eval_count - 1, augment=False)

    def _split_columns(self, global_size: int, generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Loss and render columns ``[global_size, 4]`` (BTS's kitti360-mono alternation: one draw per global
        batch, so every DDP rank uses the same split, as one process would)."""
        loss = torch.tensor(LOSS_COLUMNS)
        render = torch.tensor(RENDER_COLUMNS)
        if self.config.split_mode == "per-group":
            swap = torch.rand(global_size, 1, generator=generator) < 0.5
        else:
            swap = torch.full((global_size, 1), bool(torch.rand((), generator=generator) < 0.5))
        return torch.where(swap, render, loss), torch.where(swap, loss, render)

    def draw_batch(
        self, store: GroupImageStore, views: Tuple[Tensor, Tensor, PixelRayGenerator], step: int, augment: bool
    ) -> Tuple[RayBundle, BTSBatch]:
        """The batch of ``step`` for this rank: the store's groups for the step, and this rank's rows of the random
        draws made for the global batch (``world_size x groups_per_batch`` groups, see the module docstring).

        The result depends only on the data, the config, the shared seed, the step and the rank.
        """
        K_all, w2c_all, ray_generator = views
        order = store.order
        group_ids, images_u8 = store.next_batch(step)
        frames = store.groups[group_ids].to(self.device)  # [B, 8]
        present = frames >= 0
        batch_size, _, height, width, _ = images_u8.shape
        p = self.config.patch_size
        num_patches = max(1, self.config.rays_per_group // (p * p))

        # Every draw is made for the whole global batch, in a fixed order, then this rank's rows are kept.
        generator = step_generator(self._seed, step, stream=2 if augment else 3)
        mine, size = order.rank_slice(), order.global_batch_size
        loss_cols, render_cols = (cols[mine].to(self.device) for cols in self._split_columns(size, generator))
        jitter = [draw_colour_jitter(ColourJitterRanges(), generator) for _ in range(size)][mine]
        uniform = torch.rand(size, num_patches, generator=generator)[mine].to(self.device)
        top = torch.randint(0, height - p, (size, num_patches, 1, 1), generator=generator)[mine].to(self.device)
        left = torch.randint(0, width - p, (size, num_patches, 1, 1), generator=generator)[mine].to(self.device)

        images = images_u8.permute(0, 1, 4, 2, 3).float() / 255.0  # [B, 8, 3, H, W]
        if augment and self.config.colour_jitter:
            # CUDA: the two Triton kernels or their batched twin (the per-group loop's ~1,200 ops were host time of
            # every step, augmentation.py); the CPU keeps torchvision's per-group reference, so CPU runs are unchanged.
            if images.is_cuda:
                jitter_batch = colour_jitter_triton if self.config.fused_colour_jitter else apply_colour_jitter_batch
                images = jitter_batch(images, jitter)
            else:
                images = apply_colour_jitter_groups(images, jitter)

        rows = torch.arange(batch_size, device=self.device)[:, None]
        loss_present = present[rows, loss_cols]  # usable_groups guarantees one per group, for either split

        # Patches: a loss frame per patch (uniform over the present ones: the k-th present loss column for
        # k = floor(u * count)), a top-left corner per patch.
        count = loss_present.sum(dim=1, keepdim=True)  # [B, 1], >= 1
        k = (uniform * count).long().clamp_max(count - 1)  # [B, P]
        rank_among_present = loss_present.long().cumsum(dim=1) - 1  # [B, 4]
        hit = loss_present[:, None, :] & (rank_among_present[:, None, :] == k[:, :, None])  # [B, P, 4]
        slot = hit.long().argmax(dim=-1)  # [B, P]
        column = loss_cols.gather(1, slot)
        offsets = torch.arange(p, device=self.device)
        ys = (top + offsets[:, None]).expand(-1, -1, p, p)
        xs = (left + offsets[None, :]).expand(-1, -1, p, p)
        column_px = column[:, :, None, None].expand_as(ys)
        b_px = rows[:, :, None, None].expand_as(ys)
        targets = images[b_px, column_px, :, ys, xs]  # [B, P, p, p, 3]

        image_index = frames.gather(1, column)[:, :, None, None].expand_as(ys)
        ray_bundle = ray_generator(torch.stack([image_index, ys, xs], dim=-1).reshape(-1, 3))

        inputs = frames[:, 0]
        render_frames = frames.gather(1, render_cols)
        render_index = render_frames.clamp_min(0)
        batch = BTSBatch(
            rays=ray_bundle.reshape((batch_size, num_patches, p, p)),
            image=targets,
            input_image=images[:, 0],
            input_K=K_all[inputs],
            input_w2c=w2c_all[inputs],
            render_images=images[rows, render_cols],
            render_K=K_all[render_index],
            render_w2c=w2c_all[render_index],
            # A render frame that is the same image as a loss frame (indices clamped at a sequence's end) would
            # reconstruct it perfectly at any depth: it carries no signal, so it counts as missing.
            render_missing=(render_frames < 0)
            | (render_frames[:, :, None] == frames.gather(1, loss_cols)[:, None]).any(-1),
            group_ids=group_ids,
            patch_pixels=torch.stack([ys, xs], dim=-1),
        )
        return batch.rays, batch
