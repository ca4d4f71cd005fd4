"""DeepVoxels' pipeline: training steps on triplets, and an evaluation that renders from the stored grid only.

``get_train_loss_dict`` draws a :class:`DeepVoxelsTriplet`, integrates its source into the grid and renders the
targets; the loss dict holds the generator's L1 and adversarial terms and the discriminator's loss, which the
trainer sums into one backward (the model keeps each term's gradient on its own network; docs/deepvoxels.md).

``get_average_eval_image_metrics`` (ns-eval, and the periodic all-images evaluation) renders every evaluation camera
from the stored grid, crops ``eval_crop`` pixels per side and reports PSNR/SSIM (scikit-image definitions), the
nearest-training-view baseline on the same crops (the training image whose viewing direction is closest), and the
time per rendered frame.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Type

import numpy as np
import torch
from PIL import Image

from bts_studio.methods.common.cameras import cameras_to_opencv
from bts_studio.methods.common.training import BudgetedPipeline, BudgetedPipelineConfig
from bts_studio.methods.deepvoxels.datamanager import DeepVoxelsDataManager, DeepVoxelsDataManagerConfig
from bts_studio.methods.deepvoxels.model import DeepVoxelsModel, DeepVoxelsModelConfig


@dataclass
class DeepVoxelsPipelineConfig(BudgetedPipelineConfig):
    """DeepVoxels training on triplets; evaluation from the stored grid."""

    _target: Type = field(default_factory=lambda: DeepVoxelsPipeline)
    """The pipeline class this config builds."""
    datamanager: DeepVoxelsDataManagerConfig = field(default_factory=DeepVoxelsDataManagerConfig)
    """Triplets of one DeepVoxels scene."""
    model: DeepVoxelsModelConfig = field(default_factory=DeepVoxelsModelConfig)
    """The DeepVoxels model."""
    max_eval_images: int = 0
    """Evaluate at most this many evaluation views, evenly spaced (0: all)."""
    saved_renders: int = 8
    """Renders (prediction | target | depth) written to ns-eval's ``--render-output-path``, evenly spaced."""


class DeepVoxelsPipeline(BudgetedPipeline):
    """VanillaPipeline with DeepVoxels' triplet training step and grid-only evaluation."""

    config: DeepVoxelsPipelineConfig

    def __init__(self, config: DeepVoxelsPipelineConfig, device, test_mode="val", world_size: int = 1, **kwargs):
        if world_size > 1:
            raise ValueError(
                f"deepvoxels does not train on several GPUs (--machine.num-devices {world_size}): it fits one scene, "
                "a step is one source view integrated into the persistent voxel grid (the 'deepvoxels' buffer, "
                "replaced each step by the detached integration result), so there is no batch to shard, and DDP "
                "would keep one grid per GPU, each integrating different views (broadcasting rank 0's would discard "
                "the others' updates). "
                "Train with --machine.num-devices 1 (docs/multi_gpu.md)."
            )
        super().__init__(config, device, test_mode, world_size, **kwargs)

    @property
    def deepvoxels_model(self) -> DeepVoxelsModel:
        model = self.model
        assert isinstance(model, DeepVoxelsModel)
        return model

    @property
    def deepvoxels_datamanager(self) -> DeepVoxelsDataManager:
        datamanager = self.datamanager
        assert isinstance(datamanager, DeepVoxelsDataManager)
        return datamanager

    def get_train_loss_dict(self, step: int):
        triplet = self.deepvoxels_datamanager.next_train_triplet(step)
        model = self.deepvoxels_model
        outputs = model.training_outputs(triplet)
        loss_dict = model.training_losses(outputs, triplet)
        metrics_dict = model.get_metrics_dict(outputs, {"image": triplet.target_images})
        return outputs, loss_dict, metrics_dict

    @torch.no_grad()
    def get_eval_loss_dict(self, step: int):
        """L1 of a random evaluation view rendered from the stored grid (no integration)."""
        self.eval()
        try:
            camera, batch = self.deepvoxels_datamanager.next_eval_image(step)
            outputs = self.deepvoxels_model.get_outputs_for_camera(camera)
            image = batch["image"].to(outputs["rgb"])
            error = (outputs["rgb"] - image).abs().mean()
            metrics = {"psnr": -10.0 * torch.log10(((outputs["rgb"] - image) ** 2).mean().clamp_min(1e-10))}
            return outputs, {"l1_loss": self.deepvoxels_model.config.l1_weight * error}, metrics
        finally:
            self.train()

    @torch.no_grad()
    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict:
        """PSNR/SSIM of the grid's renders, the nearest-training-view baseline, and ms per rendered frame."""
        model, datamanager = self.deepvoxels_model, self.deepvoxels_datamanager
        dataset = datamanager.eval_dataset
        count = len(dataset)
        limit = self.config.max_eval_images
        indices = (
            np.linspace(0, count - 1, limit).round().astype(int).tolist() if 0 < limit < count else list(range(count))
        )
        saved = set(np.linspace(0, len(indices) - 1, min(self.config.saved_renders, len(indices))).round().astype(int))
        _, eval_c2w = cameras_to_opencv(dataset.cameras)
        train_axes = datamanager.train_c2w[:, :3, 2]
        train_axes = train_axes / train_axes.norm(dim=-1, keepdim=True)
        rows: Dict[str, List[float]] = {"psnr": [], "ssim": [], "nearest_view_psnr": [], "nearest_view_ssim": []}
        seconds: List[float] = []
        self.eval()
        try:
            for position, index in enumerate(indices):
                camera, batch = datamanager.eval_image(index)
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                start = time.perf_counter()
                outputs = model.get_outputs_for_camera(camera)
                if model.device.type == "cuda":
                    torch.cuda.synchronize(model.device)
                seconds.append(time.perf_counter() - start)
                target = batch["image"]
                for name, value in model.image_metrics(outputs["rgb"], target).items():
                    rows[name].append(value)
                axis = eval_c2w[index, :3, 2].to(train_axes)
                nearest = int((train_axes @ (axis / axis.norm())).argmax())
                nearest_image = datamanager.image_cache[nearest].to(target.device).float() / 255.0
                if nearest_image.shape == target.shape:
                    for name, value in model.image_metrics(nearest_image, target).items():
                        rows[f"nearest_view_{name}"].append(value)
                if output_path is not None and position in saved:
                    self._save_render(output_path, index, outputs, target)
        finally:
            self.train()
        results: Dict = {"num_images": len(indices)}
        for name, values in rows.items():
            if values:
                results[name] = float(np.mean(values))
                if get_std:
                    results[f"{name}_std"] = float(np.std(values))
        # The first render pays for cuDNN autotuning; the mean skips it when there are others.
        timed = seconds[1:] if len(seconds) > 1 else seconds
        results["ms_per_frame"] = 1000.0 * float(np.mean(timed))
        results["fps"] = 1.0 / max(float(np.mean(timed)), 1e-9)
        if step is None:
            results["protocol"] = (
                f"rendered from the stored grid only; {model.config.eval_crop}-px border cropped on each side before "
                "PSNR/SSIM (scikit-image definitions); nearest_view_*: the training image with the closest viewing "
                "direction, scored on the same crop"
            )
        return results

    @staticmethod
    def _save_render(output_path: Path, index: int, outputs: Dict[str, torch.Tensor], target: torch.Tensor) -> None:
        from nerfstudio.utils import colormaps

        output_path.mkdir(parents=True, exist_ok=True)
        depth = colormaps.apply_depth_colormap(outputs["depth"])
        row = torch.cat([outputs["rgb"], target.to(outputs["rgb"]), depth.to(outputs["rgb"])], dim=1)
        image = (row.clamp(0, 1) * 255).round().byte().cpu().numpy()
        Image.fromarray(image).save(output_path / f"test_{index:04d}.png")
