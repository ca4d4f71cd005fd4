"""DVR's pipeline: encodes each batch's input views into per-ray codes, and scores meshes as DVR does.

Training: ``datamanager.next_train`` -> :class:`~bts_studio.methods.dvr.batch.DVRBatch` -> ``model.encode``
(one code per image, repeated for its ``R`` rays into ``RayBundle.metadata["latent_code"]``) -> ``model(rays)``
-> losses. Unconditioned models (multi-view) skip the encoder.

Evaluation (``ns-eval``): per eval object, the input view 0 is encoded, a mesh is extracted with MISE
(``core/mise.py``; coarse 32^3 refined to 256^3 near the surface, threshold 0.5), marching cubes and DVR's 30
vertex-refinement steps (``core/mesh_refinement.py``), and scored against the
object's ``pointcloud.npz`` with DVR's protocol (``eval/meshes.py``: 100k points, Chamfer-L1 raw and x10,
accuracy, completeness, normal consistency, F-score at ``fscore_threshold``), and its eval views are rendered
for PSNR/SSIM (scikit-image definitions) and mask IoU. Times per rendered image and per mesh are reported.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Type, Union

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bts_studio.core.mesh_refinement import refine_mesh_vertices
from bts_studio.core.mise import mise_grid
from bts_studio.data.shapenet.dvr_reader import load_pointcloud
from bts_studio.eval import ns_render_paths
from bts_studio.eval.meshes import grid_to_mesh, mesh_metrics, write_mesh
from bts_studio.methods.common.training import BudgetedPipeline, BudgetedPipelineConfig
from bts_studio.methods.dvr.datamanager import SPLIT_CODES, DVRDataManager, DVRDataManagerConfig
from bts_studio.methods.dvr.model import UNIT_CUBE_HALF, DVRModel, DVRModelConfig

CHAMFER_NOTE = (
    "chamfer_l1 is in object units (unit cube); DVR's tables report chamfer_l1_x10 = 10 x chamfer_l1 "
    "(1/10 of the cube's edge)"
)


@dataclass
class MeshExtractionConfig:
    """MISE + marching cubes + vertex refinement settings (DVR ``generation`` defaults)."""

    resolution_0: int = 32
    """Cells per side of the coarse grid."""
    upsampling_steps: int = 3
    """Grid doublings near the surface (3: 256^3)."""
    threshold: float = 0.5
    """Iso-level as an occupancy probability."""
    padding: float = 0.0
    """The grid box is the unit cube times (1 + padding) (DVR: 0)."""
    batch_points: int = 1 << 18
    """Points per decoder call."""
    refinement_steps: int = 30
    """RMSprop steps on the marching-cubes vertices towards the surface (``core/mesh_refinement.py``; DVR's
    ``generation.refinement_step`` default 30); 0 turns refinement off."""
    refinement_lr: float = 1e-5
    """RMSprop learning rate of the refinement (DVR: 1e-5)."""
    refinement_normal_weight: float = 0.01
    """Weight of the face-normal term of the refinement loss (DVR: 0.01)."""
    refinement_faces_per_step: int = 10_000
    """Faces (one random point each) per refinement step (DVR's ``refine_max_faces``: 10,000)."""
    refinement_seed: int = 0
    """Seed of the refinement's face order and points (DVR draws from NumPy's unseeded global generator)."""


@dataclass
class DVRPipelineConfig(BudgetedPipelineConfig):
    """DVR training and DVR's mesh evaluation."""

    _target: Type = field(default_factory=lambda: DVRPipeline)
    """The pipeline class this config builds."""
    datamanager: DVRDataManagerConfig = field(default_factory=DVRDataManagerConfig)
    """Image x pixel batches with masks, depth and input views."""
    model: DVRModelConfig = field(default_factory=DVRModelConfig)
    """The DVR model."""
    mesh: MeshExtractionConfig = field(default_factory=MeshExtractionConfig)
    """Mesh extraction for evaluation and export-mesh."""
    eval_max_objects: Optional[int] = None
    """Evaluate at most this many eval objects (the first ones); None: all."""
    eval_views_per_object: int = 4
    """Eval views rendered per object for PSNR/SSIM (the first ones; 0: meshes only)."""
    eval_num_points: int = 100_000
    """Points sampled on each predicted mesh (DVR: 100k)."""
    fscore_threshold: float = 0.01
    """Distance threshold of the F-score, in object units (1% of the unit cube's edge)."""
    eval_mesh_dir: Optional[Path] = None
    """Also write each evaluated mesh here as ``<object>.ply`` (None: not written)."""


class DVRPipeline(BudgetedPipeline):
    """VanillaPipeline plus per-ray codes from encoded input views and DVR's mesh evaluation."""

    config: DVRPipelineConfig
    datamanager: DVRDataManager
    model: DVRModel

    def __init__(
        self,
        config: DVRPipelineConfig,
        device: Union[str, torch.device],
        test_mode="val",
        world_size=1,
        local_rank=0,
        grad_scaler=None,
    ):
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        # Only inside ns-render: paths that fit objects; the spiral's frames keep its start camera's object.
        ns_render_paths.install(self.scene_kind, carried_keys=("instance_idx", "dvr_split"))
        datamanager = self.datamanager
        if self.model.encoder is not None:
            self.model.input_source = lambda camera: datamanager.input_view(*datamanager.object_of_camera(camera))

    # ---------------------------------------------------------------------------------------------- training
    def _with_codes(self, ray_bundle, batch):
        dvr = batch["dvr"]
        if self.model.encoder is not None:
            assert dvr.input_images is not None, "a conditioned DVR model needs input views in the batch"
            codes = self.model.encode(dvr.input_images)
            ray_bundle.metadata["latent_code"] = codes.repeat_interleave(dvr.rays_per_image, dim=0)
        return ray_bundle

    def get_train_loss_dict(self, step: int):
        ray_bundle, batch = self.datamanager.next_train(step)
        outputs = self._model(self._with_codes(ray_bundle, batch))
        metrics_dict = self.model.get_metrics_dict(outputs, batch)
        loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        return outputs, loss_dict, metrics_dict

    def get_eval_loss_dict(self, step: int):
        self.eval()
        ray_bundle, batch = self.datamanager.next_eval(step)
        with torch.no_grad():
            outputs = self.model(self._with_codes(ray_bundle, batch))
            metrics_dict = self.model.get_metrics_dict(outputs, batch)
            loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        self.train()
        return outputs, loss_dict, metrics_dict

    # ------------------------------------------------------------------------------------------------ meshes
    @torch.no_grad()
    def extract_mesh(
        self,
        code: Optional[torch.Tensor],
        progress: Optional[Callable[[int, int], None]] = None,
        refinement_progress: Optional[Callable[[int], None]] = None,
    ):
        """``trimesh.Trimesh`` of the model's surface (nerfstudio world frame) with vertex colours from the RGB head.

        ``progress(level, count)`` is called after each MISE level, ``refinement_progress(step)`` after each vertex
        refinement step.
        """
        config = self.config.mesh
        model = self.model
        model.eval()
        latent = None if code is None else code.reshape(1, -1).to(self.device)

        def logits(points: torch.Tensor) -> torch.Tensor:
            codes = None if latent is None else latent.expand(len(points), -1)
            return model.occupancy(points[:, None].to(self.device), codes)[:, 0]

        level = float(np.log(config.threshold / (1 - config.threshold)))
        half = UNIT_CUBE_HALF * (1 + config.padding)
        grid = mise_grid(
            logits,
            half,
            config.resolution_0,
            config.upsampling_steps,
            level,
            config.batch_points,
            self.device,
            progress,
        )
        mesh = grid_to_mesh(grid, half, level)
        vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)).to(self.device)
        if config.refinement_steps > 0 and len(mesh.faces):
            # DVR's generator refines the vertices after marching cubes, before the colours (generation.py).
            vertices = refine_mesh_vertices(
                vertices,
                torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)).to(self.device),
                logits,
                steps=config.refinement_steps,
                lr=config.refinement_lr,
                threshold=config.threshold,
                normal_weight=config.refinement_normal_weight,
                faces_per_step=config.refinement_faces_per_step,
                generator=torch.Generator(device=self.device).manual_seed(config.refinement_seed),
                step_callback=refinement_progress,
            )
            mesh.vertices = vertices.cpu().numpy().astype(np.float64)
        if len(vertices):
            colours = []
            for start in range(0, len(vertices), config.batch_points):
                chunk = vertices[start : start + config.batch_points]
                codes = None if latent is None else latent.expand(len(chunk), -1)
                colours.append(model.decoder.colour(chunk[:, None], codes)[:, 0])
            rgb = (torch.cat(colours).clamp(0, 1) * 255).round().byte().cpu().numpy()
            mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
        return mesh

    def code_for(self, split: int, obj: int) -> Optional[torch.Tensor]:
        """Latent code of object ``obj`` of a split from its input view 0 (None for an unconditioned model)."""
        if self.model.encoder is None:
            return None
        with torch.no_grad():
            return self.model.encode(self.datamanager.input_view(split, obj, 0))

    # -------------------------------------------------------------------------------------------- evaluation
    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict:
        """DVR's mesh metrics and rendered-view PSNR/SSIM per eval object, averaged (see the module docstring)."""
        self.eval()
        dataset = self.datamanager.eval_dataset
        instance = dataset.cameras.metadata["instance_idx"].reshape(-1)
        num_objects = int(instance.max()) + 1
        if self.config.eval_max_objects is not None:
            num_objects = min(num_objects, self.config.eval_max_objects)
        pointclouds = dataset.metadata.get("pointcloud_filenames") or [None] * num_objects
        object_to_world = dataset.metadata.get("object_to_world")
        rows: List[Dict[str, float]] = []
        empty_meshes = 0
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("[green]DVR evaluation (meshes + views)", total=num_objects)
            for obj in range(num_objects):
                row: Dict[str, float] = {}
                code = self.code_for(SPLIT_CODES["test"], obj)
                start = time.perf_counter()
                mesh = self.extract_mesh(code)
                self._sync()
                row["seconds_per_mesh"] = time.perf_counter() - start
                empty_meshes += int(len(mesh.faces) == 0)
                if pointclouds[obj] is not None:
                    transform = None if object_to_world is None else object_to_world.numpy()
                    points, normals = load_pointcloud(Path(pointclouds[obj]), transform)
                    row.update(
                        mesh_metrics(mesh, points, normals, self.config.eval_num_points, self.config.fscore_threshold)
                    )
                if self.config.eval_mesh_dir is not None:
                    write_mesh(mesh, Path(self.config.eval_mesh_dir) / f"object_{obj:04d}.ply", overwrite=True)
                images = torch.nonzero(instance == obj)[:, 0].tolist()[: self.config.eval_views_per_object]
                view_rows = []
                for image_idx in images:
                    camera, batch = self.datamanager.eval_image(image_idx)
                    start = time.perf_counter()
                    outputs = self.model.get_outputs_for_camera(camera)
                    self._sync()
                    seconds = time.perf_counter() - start
                    metrics, _ = self.model.get_image_metrics_and_images(outputs, batch)
                    view_rows.append({**metrics, "seconds_per_image": seconds})
                for key in ("psnr", "ssim", "mask_iou", "seconds_per_image"):
                    if view_rows:
                        row[key] = float(np.mean([view[key] for view in view_rows]))
                rows.append(row)
                progress.advance(task)
        self.train()
        result: Dict = {}
        for key in sorted({key for row in rows for key in row}):
            values = np.array([row[key] for row in rows if key in row], dtype=np.float64)
            result[key] = float(values.mean())
            if get_std and key != "fscore_threshold":  # a setting, not a measurement
                result[f"{key}_std"] = float(values.std())
        result["num_objects"] = len(rows)
        result["num_empty_meshes"] = empty_meshes
        missing = [obj for obj in range(len(rows)) if pointclouds[obj] is None]
        result["num_objects_without_pointcloud"] = len(missing)
        if missing:
            names = dataset.metadata.get("instance_names") or [f"object {obj}" for obj in range(len(rows))]
            CONSOLE.print(
                f"[yellow]dvr evaluation: {len(missing)} of {len(rows)} objects have no pointcloud.npz (first: "
                f"{names[missing[0]]}); the mesh metrics (Chamfer-L1, accuracy, completeness, normal consistency, "
                "F-score) are computed without them" + ("" if len(missing) < len(rows) else ", i.e. not at all")
            )
        if empty_meshes:
            CONSOLE.print(
                f"[yellow]dvr evaluation: {empty_meshes} of {len(rows)} meshes are empty (no occupancy reaches "
                f"{self.config.mesh.threshold}); they score the worst values (Chamfer-L1 sqrt(3), F-score 0)"
            )
        result["chamfer_l1_note"] = CHAMFER_NOTE
        if step is not None:  # loggers take scalars only
            result = {k: v for k, v in result.items() if isinstance(v, (int, float))}
        return result

    def _sync(self) -> None:
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            torch.cuda.synchronize()
