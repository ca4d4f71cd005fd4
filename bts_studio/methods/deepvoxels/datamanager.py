"""DeepVoxels' data manager: training triplets (a lifted source view and two targets) from images cached as uint8.

``next_train_triplet`` follows ``NovelViewTriplets`` of the official ``dataio.py``: target 0 is a random training
view, the source is one of its ``num_neighbours`` (4) nearest training views by viewing direction (cosine of the
cameras' optical axes, itself excluded), and target 1 is a uniformly random training view. Evaluation images are
read one at a time (the test split of a DeepVoxels scene holds 1000 views at 512 px).
"""

from dataclasses import dataclass, field
from typing import Dict, Tuple, Type

import torch
from jaxtyping import Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import (
    AnnotatedDataParserUnion,
    VanillaDataManager,
    VanillaDataManagerConfig,
)
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from bts_studio.core.geometry import invert_pose
from bts_studio.data.deepvoxels.dataparser import DeepVoxelsDataParserConfig
from bts_studio.methods.common.cameras import cameras_to_opencv
from bts_studio.methods.common.image_store import load_images
from bts_studio.methods.deepvoxels.batch import DeepVoxelsTriplet


@dataclass
class DeepVoxelsDataManagerConfig(VanillaDataManagerConfig):
    """Source/target triplets of one DeepVoxels scene."""

    _target: Type = field(default_factory=lambda: DeepVoxelsDataManager)
    """The data manager class this config builds."""
    dataparser: AnnotatedDataParserUnion = field(default_factory=DeepVoxelsDataParserConfig)
    """Dataparser; it must put the grid placement into the metadata (deepvoxels-data)."""
    num_neighbours: int = 4
    """The source is drawn from this many nearest training views of target 0 (the code's ``randint(1, 5)``)."""
    num_targets: int = 2
    """Target views per step (DeepVoxels hard-codes 2: target 0 and a random one)."""
    images_on_gpu: bool = True
    """Keep the uint8 training images on the training device (a 512 px view takes 768 KiB)."""


def nearest_views(directions: Tensor, count: int) -> Int[Tensor, "N K"]:
    """Indices of the ``count`` views whose viewing directions have the highest cosine with each view's (self
    excluded), best first. ``directions``: ``[N, 3]``."""
    unit = directions / directions.norm(dim=-1, keepdim=True)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-torch.inf)
    count = max(1, min(count, directions.shape[0] - 1))
    return similarity.topk(count, dim=-1).indices


class DeepVoxelsDataManager(VanillaDataManager):
    """Caches the training images once and serves :class:`DeepVoxelsTriplet` batches."""

    config: DeepVoxelsDataManagerConfig

    def create_train_dataset(self) -> InputDataset:
        dataset = super().create_train_dataset()
        heights = dataset.cameras.height.reshape(-1).unique()
        widths = dataset.cameras.width.reshape(-1).unique()
        if heights.numel() != 1 or widths.numel() != 1 or int(heights[0]) != int(widths[0]):
            raise ValueError(
                f"deepvoxels needs square training images of one size; found heights {heights.tolist()} and widths "
                f"{widths.tolist()} in {dataset.metadata.get('split_dir')}"
            )
        dataset.metadata["image_side"] = int(heights[0])
        return dataset

    # ----------------------------------------------------------------------------------------------
    # training

    def setup_train(self) -> None:
        cache_device = self.device if self.config.images_on_gpu else "cpu"
        dataset = self.train_dataset
        if len(dataset) < 2:
            raise ValueError("deepvoxels needs at least two training views")
        self.image_cache = load_images(dataset, range(len(dataset)), cache_device, "Caching DeepVoxels training images")
        K, c2w = cameras_to_opencv(dataset.cameras)
        c2w = c2w[:, :3].float()
        self.train_K, self.train_c2w = K.float().to(self.device), c2w.to(self.device)
        # The optical axis is the third column of the OpenCV camera-to-world rotation (dataio.py uses pose[:3, 2]).
        self.neighbours = nearest_views(c2w[:, :3, 2], self.config.num_neighbours).to(self.device)
        CONSOLE.print(f"deepvoxels: {len(dataset)} training views of {dataset.metadata.get('scene_name')}")

    def next_train_triplet(self, step: int) -> DeepVoxelsTriplet:
        """A source view and ``num_targets`` target views, as ``NovelViewTriplets`` draws them."""
        self.train_count += 1
        count = self.image_cache.shape[0]
        first = int(torch.randint(0, count, ()))
        others = torch.randint(0, count, (self.config.num_targets - 1,))
        targets = torch.cat([torch.tensor([first]), others]).to(self.device)
        neighbours = self.neighbours[first]
        source = int(neighbours[int(torch.randint(0, neighbours.shape[0], ()))])
        images = self.image_cache[torch.cat([torch.tensor([source]), targets.cpu()]).to(self.image_cache.device)]
        images = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return DeepVoxelsTriplet(
            source_image=images[:1],
            source_K=self.train_K[source : source + 1],
            source_w2c=invert_pose(self.train_c2w[source : source + 1]),
            target_images=images[1:],
            target_K=self.train_K[targets],
            target_c2w=self.train_c2w[targets],
            source_index=source,
            target_indices=targets,
        )

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """The targets' cameras and ``{"triplet": DeepVoxelsTriplet}`` (the pipeline trains on the triplet)."""
        triplet = self.next_train_triplet(step)
        return self.train_dataset.cameras[triplet.target_indices.cpu()].to(self.device), {"triplet": triplet}

    def get_train_rays_per_batch(self) -> int:
        side = self.image_cache.shape[1]
        return self.config.num_targets * side * side

    # ----------------------------------------------------------------------------------------------
    # evaluation

    def setup_eval(self) -> None:
        # nerfstudio's default eval loader would decode every test image as float32 up front (1000 x 512^2 x 3).
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.world_size * 4
        )

    def eval_image(self, image_idx: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        """Camera and ``[H, W, 3]`` float image of one evaluation view."""
        camera = self.eval_dataset.cameras[image_idx : image_idx + 1].to(self.device)
        image = self.eval_dataset.get_image_float32(image_idx)[..., :3].to(self.device)
        return camera, {"image": image, "image_idx": torch.tensor(image_idx)}

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        self.eval_count += 1
        return self.eval_image(int(torch.randint(0, len(self.eval_dataset), ())))
